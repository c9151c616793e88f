import assert from "node:assert/strict";
import { execFile, execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test, type TestContext } from "node:test";
import { promisify } from "node:util";
import { findOnPath, freePorts, waitFor } from "@clawker/test-support";
import { pino } from "pino";
import { DecisionLog, parseDecisionLine, type ProxyDecision } from "./decision-log.js";
import { decisionRing } from "./haproxy-config.js";

const run = promisify(execFile);
// Same rule as test/harness/preconditions.ts (not importable from under src/): skip on a laptop,
// fail under CI.
const isCI = (process.env["CI"] ?? "") !== "" && process.env["CI"] !== "false";

function needs(t: TestContext, ...commands: string[]): boolean {
  const why =
    process.getuid?.() !== 0
      ? "needs root (uid 0)"
      : commands.filter((c) => findOnPath(c) === undefined).map((c) => `needs ${c} on PATH`)[0];
  if (why === undefined) return true;
  if (isCI) assert.fail(`precondition failed under CI: ${why}`);
  t.skip(why);
  return false;
}

const tlsLine = (token: string, over: Record<string, unknown> = {}): string =>
  JSON.stringify({
    k: token,
    layer: "tls",
    ts: 1_800_000_000,
    src: "10.9.0.3",
    sport: 40000,
    agent: "alpha",
    project: "-",
    name: "api.example.com",
    port: "443",
    verdict: "pass",
    reason: "-",
    rule: "r1",
    upstream: "93.184.216.34",
    server: "s1",
    duration_ms: 12,
    bytes_in: 100,
    bytes_out: 200,
    termination: "--",
    ...over,
  });

describe("parseDecisionLine", () => {
  test("an allowed connection; `-` (unset) fields become undefined", () => {
    const d = parseDecisionLine(tlsLine("t"));
    assert.ok(d !== undefined);
    assert.equal(d.verdict, "allow");
    assert.equal(d.reason, undefined);
    assert.equal(d.project, undefined);
    assert.equal(d.port, 443);
    assert.equal(d.upstream, "93.184.216.34");
  });

  test("a reason or a deny verdict makes a denial; no verdict at all is no_rule", () => {
    assert.equal(
      parseDecisionLine(tlsLine("t", { reason: "forbidden_destination" }))?.reason,
      "forbidden_destination",
    );
    assert.equal(
      parseDecisionLine(tlsLine("t", { verdict: "deny", reason: "rule_denies" }))?.verdict,
      "deny",
    );
    const none = parseDecisionLine(tlsLine("t", { verdict: "-" }));
    assert.equal(none?.verdict, "deny");
    assert.equal(none?.reason, "no_rule");
  });

  test("malformed lines are refused", () => {
    for (const line of ["", "{", "[]", JSON.stringify({ layer: "smtp" }), "null"]) {
      assert.equal(parseDecisionLine(line), undefined, line);
    }
  });
});

/** A DecisionLog listening in a fresh 0700 directory; closed after the test. */
async function listening(
  t: TestContext,
  over: { onDecision?: (d: ProxyDecision) => void; onDropped?: (n: number) => void } = {},
): Promise<{ log: DecisionLog; path: string; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), "decisions-"));
  const path = join(dir, "decisions.sock");
  const log = new DecisionLog({
    socketPath: path,
    onDecision: over.onDecision ?? (() => undefined),
    ...(over.onDropped ? { onDropped: over.onDropped } : {}),
    log: pino({ level: "silent" }),
  });
  await log.start();
  t.after(async () => {
    await log.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { log, path, dir };
}

/** Writes each piece as its own write, waiting for each to be flushed. */
async function writeAll(path: string, pieces: readonly string[]): Promise<void> {
  const conn = createConnection(path);
  await new Promise<void>((resolve, reject) => conn.once("connect", resolve).once("error", reject));
  for (const p of pieces)
    await new Promise<void>((resolve, reject) => conn.write(p, (e) => (e ? reject(e) : resolve())));
  await new Promise<void>((resolve) => conn.end(resolve));
}

describe("DecisionLog", () => {
  test("only lines that start with this run's token reach onDecision, whole even when split across reads", async (t) => {
    const got: ProxyDecision[] = [];
    const { log, path } = await listening(t, { onDecision: (d) => got.push(d) });
    const real = tlsLine(log.token);
    const cut = real.length >> 1;
    await writeAll(path, [
      `${tlsLine("0".repeat(32), { name: "forged.example.com" })}\n`,
      "Server be_pass/s1 is UP\n",
      real.slice(0, cut),
      `${real.slice(cut)}\n${tlsLine(log.token, { name: "second.example.com" })}\n`,
    ]);
    await waitFor(() => got.length >= 2, { timeoutMs: 5_000, what: "two decisions" });
    assert.deepEqual(
      got.map((d) => d.name),
      ["api.example.com", "second.example.com"],
    );
    assert.equal(log.dropped, 0, "HAProxy's notices are not drops");
    await log.close();
    await log.close();
  });

  test("a drop notice counts; a connection that sends 64 KiB without a newline is cut, others still count", async (t) => {
    const got: ProxyDecision[] = [];
    const drops: number[] = [];
    const { log, path } = await listening(t, {
      onDecision: (d) => got.push(d),
      onDropped: (n) => drops.push(n),
    });
    await writeAll(path, ["1 event dropped\n", "41 events dropped\n", "41 events dropped and more\n"]);
    await waitFor(() => drops.length === 2, { timeoutMs: 5_000, what: "the drop notices" });
    assert.deepEqual(drops, [1, 41]);
    assert.equal(log.dropped, 42);
    const hog = createConnection(path);
    const cut = new Promise<void>((resolve) => hog.once("close", () => resolve()));
    hog.on("error", () => undefined);
    hog.write("x".repeat(70 * 1024));
    await cut;
    await writeAll(path, [`${tlsLine(log.token)}\n`]);
    await waitFor(() => got.length === 1, { timeoutMs: 5_000, what: "the line after the cut" });
  });

  test("a flood is read one read per turn of the event loop, so other work on the loop keeps its turn", async (t) => {
    let delivered = 0;
    const { log, path } = await listening(t, { onDecision: () => delivered++ });
    const line = `${tlsLine(log.token)}\n`;
    const LINES = 40_000;
    // A child keeps the socket full (~14 MB, far more than the socket buffers hold).
    const writer = spawn(
      process.execPath,
      [
        "-e",
        `const c = require("node:net").createConnection(${JSON.stringify(path)});
         c.on("connect", () => c.end(${JSON.stringify(line)}.repeat(${LINES})));`,
      ],
      { stdio: "inherit" },
    );
    const exited = new Promise((resolve) => writer.once("exit", resolve));
    t.after(async () => {
      writer.kill();
      await exited;
    });
    // The most lines handled between two turns of the loop (setImmediate runs once per turn).
    let most = 0;
    let last = 0;
    await new Promise<void>((resolve) => {
      const turn = (): void => {
        most = Math.max(most, delivered - last);
        last = delivered;
        if (delivered < LINES) setImmediate(turn);
        else resolve();
      };
      setImmediate(turn);
    });
    // Node reads at most 64 KiB at a time.
    const perRead = Math.ceil((64 * 1024) / line.length) + 1;
    assert.ok(most <= perRead, `${most} lines in one turn of the loop (one read holds at most ${perRead})`);
  });

  test("the socket is 0600 and another local user cannot connect", async (t) => {
    if (!needs(t, "runuser")) return;
    const { path } = await listening(t);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    const { stdout } = await run(
      "runuser",
      [
        "-u",
        "nobody",
        "--",
        process.execPath,
        "-e",
        "const s=require('net').createConnection(process.argv[1]);" +
          "s.on('connect',()=>{console.log('CONNECTED');process.exit(0)});" +
          "s.on('error',e=>{console.log(e.code);process.exit(0)})",
        path,
      ],
      { timeout: 10_000 },
    );
    assert.equal(stdout.trim(), "EACCES");
  });
});

describe("HAProxy's ring", () => {
  test("lines HAProxy could not hold while the daemon did not read are counted: every line is received or counted", async (t) => {
    if (!needs(t, "haproxy")) return;
    let received = 0;
    let reported = 0;
    const { log, path, dir } = await listening(t, {
      onDecision: () => received++,
      onDropped: (n) => (reported += n),
    });
    const [port] = await freePorts(1);
    // The product's ring with the smallest size HAProxy takes, so a few dozen unread lines fill
    // it; every connection to the frontend is refused and logged with this run's token.
    const config = join(dir, "haproxy.cfg");
    writeFileSync(
      config,
      [
        "global",
        "  log ring@decisions len 16384 format raw local0 info",
        ...decisionRing(path, 16384),
        "defaults",
        "  log global",
        "  mode tcp",
        "  timeout client 2s",
        "  timeout server 2s",
        "  timeout connect 2s",
        "frontend f",
        `  bind 127.0.0.1:${port}`,
        `  log-format '{"k":"${log.token}","layer":"tcp","ts":%Ts,"src":"%ci","sport":%cp,"verdict":"deny","reason":"no_rule","duration_ms":%Tt,"bytes_in":%U,"bytes_out":%B,"termination":"%ts"}'`,
        "  tcp-request content reject",
        "",
      ].join("\n"),
    );
    const haproxy = spawn("haproxy", ["-db", "-f", config], { stdio: ["ignore", "ignore", "inherit"] });
    const exited = new Promise((resolve) => haproxy.once("exit", resolve));
    t.after(async () => {
      haproxy.kill();
      await exited;
    });
    // Prints how many connections HAProxy accepted (connected): only those are logged, so only
    // those are lines sent. A connection that failed before it was accepted is no line.
    const connectScript = (n: number): string => `
      const net = require("node:net");
      let left = ${n};
      let connected = 0;
      const next = () => {
        if (left-- === 0) return void process.stdout.write(String(connected));
        const s = net.createConnection(${port}, "127.0.0.1");
        s.on("connect", () => connected++);
        s.on("error", () => undefined);
        s.on("close", next);
      };
      next();`;
    const connect = async (n: number): Promise<number> =>
      Number((await run(process.execPath, ["-e", connectScript(n)])).stdout);
    // The first line shows HAProxy's forwarder is connected.
    let sent = 0;
    await waitFor(
      async () => {
        sent += await connect(1);
        return received > 0;
      },
      { timeoutMs: 20_000, what: "HAProxy's forwarder to deliver a line" },
    );
    // A child connects while this process is blocked in execFileSync: nothing reads the stream,
    // so once the socket's buffer and the ring are full HAProxy must drop (no timing involved).
    const FLOOD = 5000;
    const flooded = Number(
      execFileSync(process.execPath, ["-e", connectScript(FLOOD)], { stdio: ["ignore", "pipe", "inherit"] }),
    );
    sent += flooded;
    // HAProxy reports drops with its next line: one more connection at a time until all is seen.
    await waitFor(
      async () => {
        if (received + reported >= sent) return true;
        sent += await connect(1);
        return false;
      },
      { timeoutMs: 30_000, what: "every line received or counted" },
    ).catch((err: unknown) => {
      // Once seen in a loaded CI run and not since: the counts say which side fell short.
      throw new Error(
        `received ${received} + reported ${reported} of ${sent} sent (flood: ${flooded} of ${FLOOD} connected)`,
        {
          cause: err,
        },
      );
    });
    assert.ok(reported > 0, `HAProxy dropped nothing (received ${received} of ${sent})`);
    assert.ok(received > 0, "nothing was received");
    assert.equal(received + reported, sent);
    assert.equal(log.dropped, reported);
  });
});
