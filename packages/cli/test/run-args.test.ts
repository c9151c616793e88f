// `clawker run` / `clawker rm` without Docker: argument splitting at IMAGE, --entrypoint forms,
// help, usage errors, and the name rule checked against the control plane's own identity gate.
import assert from "node:assert/strict";
import { test } from "node:test";
import { AgentBootstrapError, checkAgentNames } from "@clawker/adminclient";
import { ExitCode, run, type Io } from "../src/index.js";
import { RUN, parseEntrypoint, parseRunArgs } from "../src/commands/run.js";
import { checkRegisterFields } from "../../controlplane/src/agents/identity-gate.js";

function io(env: NodeJS.ProcessEnv = {}): Io & { out(): string; err(): string } {
  let out = "";
  let err = "";
  return {
    stdout: { write: (s) => void (out += s) },
    stderr: { write: (s) => void (err += s) },
    // A socket that does not exist: reaching Docker would be a different error than expected.
    env: { DOCKER_HOST: "unix:///nonexistent/clawker-cli-test.sock", ...env },
    out: () => out,
    err: () => err,
  };
}

void test("run arguments split at IMAGE; CMD is verbatim, flags included", () => {
  const cases: Array<[string[], Record<string, unknown>]> = [
    [["--agent", "dev", "img"], { agent: "dev", _image: "img", _cmd: [] }],
    [
      ["--agent=dev", "-e", "A=1", "-eB=2", "--no-start", "img", "sh", "-c", "x", "--agent", "y"],
      {
        agent: "dev",
        env: ["A=1", "B=2"],
        "no-start": true,
        _image: "img",
        _cmd: ["sh", "-c", "x", "--agent", "y"],
      },
    ],
    [["--agent", "dev", "--", "-img-", "--help"], { agent: "dev", _image: "-img-", _cmd: ["--help"] }],
    [
      ["--project", "p", "--agent", "dev", "--entrypoint", '["a"]', "img", "--"],
      { project: "p", agent: "dev", entrypoint: '["a"]', _image: "img", _cmd: ["--"] },
    ],
    [["--agent", "dev"], { agent: "dev", _cmd: [] }],
  ];
  for (const [args, want] of cases) {
    assert.deepEqual({ ...parseRunArgs(RUN, args) }, want, args.join(" "));
  }
  assert.throws(() => parseRunArgs(RUN, ["--nope", "img"]), /Unknown option '--nope'/);
});

void test("--entrypoint: a program or a JSON array of strings", () => {
  assert.deepEqual(parseEntrypoint("/bin/clawkerd"), ["/bin/clawkerd"]);
  assert.deepEqual(parseEntrypoint('["node", "/opt/clawker/clawkerd.mjs"]'), [
    "node",
    "/opt/clawker/clawkerd.mjs",
  ]);
  for (const bad of ["", "[]", "[1]", "["]) assert.throws(() => parseEntrypoint(bad), bad);
});

void test("agent and project names: the CLI accepts exactly what the identity gate accepts", () => {
  const names = [
    "dev",
    "a",
    "0",
    "Dev_1-x",
    "a".repeat(64),
    "a".repeat(65),
    "",
    "-dev",
    "_dev",
    "de.v",
    "dev x",
    "dev/x",
    "dév",
    "dev\n",
    " ",
    "x:y",
    "x@y",
  ];
  const seen = new Set<boolean>();
  for (const agent of names) {
    for (const project of ["", "proj", "-p", "p.q", "p".repeat(64), "p".repeat(65)]) {
      const verdict = (f: () => void): boolean => {
        try {
          f();
          return true;
        } catch {
          return false;
        }
      };
      const gate = verdict(() => checkRegisterFields({ agentName: agent, project }));
      const cli = verdict(() => checkAgentNames(agent, project));
      assert.equal(cli, gate, JSON.stringify({ agent, project }));
      seen.add(gate);
    }
  }
  assert.equal(seen.size, 2, "the table has both accepted and refused names");
  assert.throws(() => checkAgentNames("a.b", ""), AgentBootstrapError);
});

void test("help lists run and rm, with examples and the IMAGE [CMD...] form", async () => {
  const top = io();
  assert.equal(await run(["--help"], top), ExitCode.ok);
  assert.match(top.out(), /^ {2}run +Create and start an agent container/m);
  assert.match(top.out(), /^ {2}rm +Stop and remove an agent container/m);
  const help = io();
  assert.equal(await run(["run", "--help"], help), ExitCode.ok);
  assert.match(help.out(), /usage: clawker run --agent NAME \[flags\] IMAGE \[CMD\.\.\.\]/);
  for (const flag of [
    "--agent",
    "--project",
    "--network",
    "--cgroup-parent",
    "--cp-addr",
    "--token-endpoint",
    "--server-name",
    "--trust-dir",
    "--entrypoint",
    "--format",
  ]) {
    assert.ok(help.out().includes(flag), flag);
  }
  assert.match(help.out(), /examples:\n {2}clawker run --agent dev/);
  const rmHelp = io();
  assert.equal(await run(["rm", "-h"], rmHelp), ExitCode.ok);
  assert.match(rmHelp.out(), /--force/);
});

void test("usage errors exit 2 before anything is touched", async () => {
  const cases: string[][] = [
    ["run", "img"],
    ["run", "--agent", "dev"],
    ["run", "--agent", "dev", "--format", "xml", "img"],
    ["run", "--agent", "dev", "--entrypoint", "[", "img"],
    ["rm"],
    ["rm", "--agent", "dev", "--timeout", "soon"],
    ["rm", "--agent", "dev", "extra"],
  ];
  for (const argv of cases) {
    const c = io();
    assert.equal(await run(argv, c), ExitCode.usage, `${argv.join(" ")}: ${c.err()}`);
  }
  // A bad name is refused before Docker is asked (the socket does not exist).
  const badName = io();
  assert.equal(await run(["rm", "--agent", "a.b"], badName), ExitCode.usage);
  assert.match(badName.err(), /invalid_argument: agent name "a\.b"/);
  // With good arguments the absent socket is reported as Docker being unreachable, exit 1.
  const noDocker = io();
  assert.equal(await run(["rm", "--agent", "dev"], noDocker), ExitCode.error);
  assert.match(noDocker.err(), /docker_unavailable: .*\(is Docker running\?/);
  const badHost = io({ DOCKER_HOST: "tcp://127.0.0.1:2375" });
  assert.equal(await run(["rm", "--agent", "dev"], badHost), ExitCode.usage);
  assert.match(badHost.err(), /DOCKER_HOST must be unix:\/\//);
});
