// `clawker exec` argument handling (pure): resolution, flags and positionals, the request it
// builds, usage errors, help. Runs against a control plane in controlplane/test/exec-agent.test.ts.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { resolveCommand, run } from "../cli.js";
import { helpText, parseFlags, type FlagValues } from "../command-spec.js";
import { CliError, ExitCode } from "../exit-codes.js";
import type { Io } from "../io.js";
import { EXEC, execRequest, exitCodeOfCommand, parseUser } from "./exec.js";

/** What `clawker <argv>` parses to, through the real command table. */
function parsed(argv: string[]): FlagValues {
  const r = resolveCommand(argv);
  assert.equal(r.kind, "command");
  assert.ok(r.kind === "command");
  assert.equal(r.command.spec, EXEC);
  return (r.command.parse ?? parseFlags)(r.command.spec, r.args);
}

const isUsage = (e: unknown): boolean => e instanceof CliError && e.exitCode === ExitCode.usage;

describe("clawker exec arguments", () => {
  test("-- CMD [ARGS...] is one stage with that argv verbatim, flags included", () => {
    const req = execRequest(
      parsed(["exec", "--agent", "dev", "--project", "web", "--", "ls", "-la", "--help", "a b"]),
    );
    assert.equal(req.agentName, "dev");
    assert.equal(req.project, "web");
    assert.equal(req.containerId, "");
    assert.deepEqual(
      req.command?.stages.map((s) => s.argv),
      [["ls", "-la", "--help", "a b"]],
    );
    assert.equal(req.command?.timeoutSeconds, 0);
    assert.equal(req.command?.exitOnNonZero, false, "exec never asks clawkerd to exit");
  });

  test("--sh runs /bin/sh -c LINE; --container, --timeout, --user, --workdir and --env fill the stage", () => {
    const req = execRequest(
      parsed([
        "exec",
        "--container",
        "3f2a9c",
        "--sh",
        "ps aux | grep node",
        "--timeout",
        "1500ms",
        "--user",
        "1000:100",
        "-w",
        "/work",
        "-e",
        "A=1",
        "--env",
        "B=x=y",
      ]),
    );
    assert.equal(req.containerId, "3f2a9c");
    assert.equal(req.agentName, "");
    assert.deepEqual(req.command?.stages, [
      {
        argv: ["/bin/sh", "-c", "ps aux | grep node"],
        uid: 1000,
        gid: 100,
        cwd: "/work",
        env: { A: "1", B: "x=y" },
      },
    ]);
    assert.equal(req.command?.timeoutSeconds, 2, "a part second rounds up");
  });

  const refused: Array<[string, string[]]> = [
    ["no agent", ["exec", "--", "true"]],
    ["both --agent and --container", ["exec", "--agent", "dev", "--container", "ab", "--", "true"]],
    ["--project without --agent", ["exec", "--container", "ab", "--project", "p", "--", "true"]],
    ["a non-hex container", ["exec", "--container", "my-box", "--", "true"]],
    ["no command", ["exec", "--agent", "dev"]],
    ["both -- and --sh", ["exec", "--agent", "dev", "--sh", "true", "--", "true"]],
    ["an empty --sh", ["exec", "--agent", "dev", "--sh", ""]],
    ["an empty program", ["exec", "--agent", "dev", "--", ""]],
    ["--env without =", ["exec", "--agent", "dev", "-e", "A", "--", "true"]],
    ["a named --user", ["exec", "--agent", "dev", "--user", "root", "--", "true"]],
    ["a bad --timeout", ["exec", "--agent", "dev", "--timeout", "soon", "--", "true"]],
  ];
  for (const [name, argv] of refused) {
    test(`usage error (exit 2): ${name}`, () => {
      assert.throws(() => execRequest(parsed(argv)), isUsage);
    });
  }

  test("a command's own dash flags need -- in front of them", () => {
    assert.throws(() => parsed(["exec", "--agent", "dev", "ls", "-la"]), isUsage);
  });

  test("--user UID alone means group UID too; out of range is refused", () => {
    assert.deepEqual(parseUser("1000"), { uid: 1000, gid: 1000 });
    assert.deepEqual(parseUser("0:0"), { uid: 0, gid: 0 });
    assert.throws(() => parseUser("4294967296"), isUsage);
    assert.throws(() => parseUser("1:-1"), isUsage);
  });

  test("the command's exit code passes through; codes outside 0..255 become 1", () => {
    assert.deepEqual([0, 3, 255, 256, -1, 137].map(exitCodeOfCommand), [0, 3, 255, 1, 1, 137]);
  });

  test("help shows the positionals and the examples; a usage error exits 2 before dialing", async () => {
    assert.match(helpText(EXEC), /usage: clawker exec \[flags\] -- CMD \[ARGS\.\.\.\]/);
    assert.match(helpText(EXEC), /--sh LINE/);
    let err = "";
    const io: Io = { stdout: { write: () => undefined }, stderr: { write: (s) => void (err += s) }, env: {} };
    assert.equal(await run(["exec", "--agent", "dev"], io), ExitCode.usage);
    assert.match(err, /no command/);
  });
});
