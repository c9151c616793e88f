// Pure tests of the command line: command resolution, flag parsing, help texts, exit codes.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { AdminError, TokenError, TrustError } from "@clawker/adminclient";
import { formatSkew, skewVerdict } from "./admin-connection.js";
import { COMMANDS, resolveCommand, run } from "./cli.js";
import { helpText, parseAddress, parseDuration, parseFlags } from "./command-spec.js";
import { agentRows, agentTable } from "./commands/controlplane-agents.js";
import { exitCodeOf, messageOf } from "./error-report.js";
import { CliError, ExitCode } from "./exit-codes.js";
import type { Io } from "./io.js";
import { startProgress } from "./progress.js";

function bufferIo(): Io & { out: () => string; err: () => string } {
  let out = "";
  let err = "";
  return {
    stdout: { write: (s) => void (out += s) },
    stderr: { write: (s) => void (err += s) },
    env: {},
    out: () => out,
    err: () => err,
  };
}

describe("resolveCommand", () => {
  test("finds each command by its words and keeps the rest as flags", () => {
    for (const c of COMMANDS) {
      const r = resolveCommand([...c.spec.words, "--format", "json"]);
      assert.equal(r.kind, "command");
      if (r.kind === "command") {
        assert.equal(r.command, c);
        assert.deepEqual(r.args, ["--format", "json"]);
      }
    }
  });

  test("no arguments is usage help (exit 2), --help is help (exit 0)", () => {
    assert.deepEqual(
      [resolveCommand([]), resolveCommand(["--help"]), resolveCommand(["-h"])].map(
        (r) => r.kind === "help" && r.exitCode,
      ),
      [2, 0, 0],
    );
  });

  test("a group alone lists its commands", () => {
    const r = resolveCommand(["controlplane"]);
    assert.equal(r.kind, "help");
    if (r.kind === "help") {
      assert.equal(r.exitCode, ExitCode.usage);
      assert.match(r.text, /controlplane up/);
      assert.doesNotMatch(r.text, /auth init/);
    }
    const h = resolveCommand(["controlplane", "--help"]);
    assert.equal(h.kind === "help" && h.exitCode, ExitCode.ok);
  });

  test("unknown commands are usage errors", () => {
    for (const argv of [["nope"], ["controlplane", "sideways"], ["auth", "deinit"]]) {
      assert.throws(
        () => resolveCommand(argv),
        (e: unknown) => e instanceof CliError && e.exitCode === ExitCode.usage,
      );
    }
  });
});

describe("parseFlags", () => {
  const up = COMMANDS.find((c) => c.spec.words.join(" ") === "controlplane up")!.spec;
  const init = COMMANDS.find((c) => c.spec.words.join(" ") === "auth init")!.spec;

  test("parses strings, booleans and repeatable flags", () => {
    const v = parseFlags(init, [
      "--dir",
      "/x",
      "--force",
      "--san",
      "a",
      "--san",
      "10.0.0.1",
      "--format",
      "json",
    ]);
    assert.deepEqual(v, { dir: "/x", force: true, san: ["a", "10.0.0.1"], format: "json" });
    assert.deepEqual(parseFlags(up, ["--timeout=5s", "-h"]), { timeout: "5s", help: true });
  });

  test("unknown flags, stray arguments, missing values and bad formats are usage errors (exit 2)", () => {
    for (const args of [["--bogus"], ["extra"], ["--dir"], ["--format", "yaml"], ["--force=yes"]]) {
      assert.throws(
        () => parseFlags(init, args),
        (e: unknown) => e instanceof CliError && e.exitCode === ExitCode.usage,
        args.join(" "),
      );
    }
  });

  test("durations", () => {
    const ok: Array<[string, number]> = [
      ["30s", 30_000],
      ["500ms", 500],
      ["2m", 120_000],
      ["1.5s", 1500],
      ["7", 7000],
    ];
    for (const [text, ms] of ok) assert.equal(parseDuration("timeout", text), ms, text);
    for (const bad of ["", "0s", "-1s", "1h", "soon", "1 s x"]) {
      assert.throws(() => parseDuration("timeout", bad), { exitCode: ExitCode.usage }, bad);
    }
  });

  test("addresses", () => {
    assert.deepEqual(parseAddress("admin", "127.0.0.1:7443"), {
      host: "127.0.0.1",
      port: 7443,
      text: "127.0.0.1:7443",
    });
    assert.deepEqual(parseAddress("admin", "[::1]:7443").host, "::1");
    assert.equal(parseAddress("admin", "localhost:1").host, "localhost");
    for (const bad of ["127.0.0.1", ":80", "host:99999", "::1:80", "a:b"]) {
      assert.throws(() => parseAddress("admin", bad), { exitCode: ExitCode.usage }, bad);
    }
  });
});

describe("help", () => {
  test("every command's help names all its flags, has examples and the exit codes", () => {
    for (const c of COMMANDS) {
      const text = helpText(c.spec);
      assert.match(text, new RegExp(`^usage: clawker ${c.spec.words.join(" ")} `));
      for (const flag of [...Object.keys(c.spec.flags), "help", "debug"])
        assert.match(text, new RegExp(`--${flag}\\b`));
      assert.ok(c.spec.examples.length > 0);
      for (const e of c.spec.examples) assert.ok(text.includes(e) && e.startsWith("clawker "));
      for (const code of [
        "0  ok",
        "2  usage",
        "3  control plane not running",
        "4  auth",
        "5  already exists",
        "141  the reader of its output went away",
      ]) {
        assert.ok(text.includes(code), `${c.spec.words.join(" ")}: ${code}`);
      }
    }
  });

  test("`<command> --help` prints to stdout and exits 0 without running the command", async () => {
    for (const c of COMMANDS) {
      const io = bufferIo();
      assert.equal(await run([...c.spec.words, "--help"], io), ExitCode.ok);
      assert.equal(io.out(), helpText(c.spec));
      assert.equal(io.err(), "");
    }
  });

  test("a usage error is one error line plus a pointer to --help, on stderr only", async () => {
    const io = bufferIo();
    assert.equal(await run(["controlplane", "down", "--timeout", "soon"], io), ExitCode.usage);
    assert.equal(io.out(), "");
    const lines = io.err().trimEnd().split("\n");
    assert.equal(lines.length, 2);
    assert.match(lines[0]!, /^clawker: error: --timeout must be a duration/);
    assert.doesNotMatch(io.err(), /\s+at /, "no stack trace without --debug");
  });

  test("--debug adds the stack", async () => {
    const io = bufferIo();
    await run(["controlplane", "down", "--timeout", "soon", "--debug"], io);
    assert.match(io.err(), /\s+at /);
  });
});

describe("exit codes of library errors", () => {
  test("table", () => {
    const m = "/clawker.admin.v1.AdminService/ListAgents";
    const table: Array<[unknown, number]> = [
      [new AdminError("unavailable", 14, m, "x"), ExitCode.notRunning],
      [new AdminError("starting_up", 9, m, "x", { domain: "clawker.dev" }), ExitCode.notRunning],
      [new AdminError("unauthenticated", 16, m, "x"), ExitCode.auth],
      [new AdminError("permission_denied", 7, m, "x"), ExitCode.auth],
      [new AdminError("internal", 13, m, "x"), ExitCode.error],
      [new TokenError("token_request_failed", "x", { status: 401 }), ExitCode.auth],
      [new TokenError("unreachable", "x"), ExitCode.notRunning],
      [new TrustError("exists", "x"), ExitCode.exists],
      [new TrustError("missing", "x"), ExitCode.error],
      [new CliError(ExitCode.usage, "x"), ExitCode.usage],
      [new Error("x"), ExitCode.error],
    ];
    for (const [err, code] of table) assert.equal(exitCodeOf(err), code, String(err));
  });

  test("the ErrorInfo reason decides, not the code or the text", () => {
    const m = "/clawker.admin.v1.AdminService/ExecAgent";
    const ours = { domain: "clawker.dev" };
    // The same FAILED_PRECONDITION code: the control plane starting is "not running", an agent starting is not.
    assert.equal(exitCodeOf(new AdminError("starting_up", 9, m, "any text", ours)), ExitCode.notRunning);
    assert.equal(
      exitCodeOf(new AdminError("agent_starting", 9, m, "control plane is starting up", ours)),
      ExitCode.error,
    );
    // A peer without ErrorInfo: the code's reason; a FAILED_PRECONDITION is no longer read as starting up.
    assert.equal(
      exitCodeOf(new AdminError("failed_precondition", 9, m, "control plane is starting up")),
      ExitCode.error,
    );
    // The same text in another domain is not ours: its code decides.
    assert.equal(
      exitCodeOf(new AdminError("starting_up", 9, m, "x", { domain: "example.com" })),
      ExitCode.error,
    );
    // A reason this CLI does not know yet (a newer control plane, the firewall's domain): its code decides.
    assert.equal(exitCodeOf(new AdminError("token_revoked", 16, m, "x", ours)), ExitCode.auth);
    assert.equal(
      exitCodeOf(new AdminError("invalid_rule", 3, m, "x", { domain: "firewall.clawker.dev" })),
      ExitCode.error,
    );
    assert.match(
      messageOf(new AdminError("starting_up", 9, m, "control plane is starting up", ours)),
      /wait for it to become healthy/,
    );
    assert.doesNotMatch(
      messageOf(new AdminError("failed_precondition", 9, m, "control plane is starting up")),
      /wait for it/,
    );
  });
});

describe("agents table", () => {
  test("short ids, ISO times, aligned columns", () => {
    const rows = agentRows([
      {
        agentName: "dev",
        project: "demo",
        containerId: "0123456789abcdef".repeat(4),
        certThumbprint: "fedcba9876543210".repeat(4),
        registeredAtUnix: 1_700_000_000n,
        lastSeenUnix: 0n,
      },
    ]);
    assert.equal(rows[0]!.registeredAt, "2023-11-14T22:13:20Z");
    assert.equal(rows[0]!.lastSeen, "");
    const lines = agentTable(rows).trimEnd().split("\n");
    assert.match(lines[0]!, /^NAME\s+PROJECT\s+CONTAINER\s+THUMBPRINT\s+REGISTERED\s+LAST SEEN$/);
    assert.match(lines[1]!, /^dev\s+demo\s+0123456789ab\s+fedcba987654\s+2023-11-14T22:13:20Z$/);
    assert.equal(lines[0]!.indexOf("CONTAINER"), lines[1]!.indexOf("0123456789ab"));
  });
});

describe("clock skew policy", () => {
  test("warn above 1 s, fail above 30 s, either direction", () => {
    const table: Array<[number, string]> = [
      [0, "ok"],
      [999, "ok"],
      [-1000, "ok"],
      [1001, "warn"],
      [-5000, "warn"],
      [30_000, "warn"],
      [30_001, "fail"],
      [-86_400_000, "fail"],
    ];
    for (const [ms, verdict] of table) assert.equal(skewVerdict(ms), verdict, String(ms));
    assert.equal(formatSkew(-1234.5), "-1.234s");
    assert.equal(formatSkew(20), "+0.020s");
  });
});

describe("progress", () => {
  test("not a TTY: one plain line per change, nothing on stop", () => {
    let out = "";
    const p = startProgress({ write: (s) => void (out += s), isTTY: false }, "waiting");
    p.update("waiting: 503 not_ready");
    p.update("waiting: 503 not_ready");
    p.update("waiting: 200 healthy");
    p.stop();
    assert.equal(out, "waiting\nwaiting: 503 not_ready\nwaiting: 200 healthy\n");
  });

  test("a TTY: a redrawn spinner line, cleared on stop", () => {
    let out = "";
    const p = startProgress({ write: (s) => void (out += s), isTTY: true }, "waiting for health");
    p.stop();
    const clear = "\r\x1b[K";
    assert.ok(out.startsWith(clear) && out.endsWith(clear), JSON.stringify(out));
    assert.match(out.slice(clear.length, -clear.length), /^. waiting for health \(0\.\ds\)$/);
  });
});
