// The Session contract (API.md §3) against the real clawkerd process over real mTLS on
// 127.0.0.1: Hello first, pipelines, merged stderr, streaming from the first byte, timeout,
// stdin, signals, concurrency, duplicate and unknown ids, spawn failure, uid/gid, cleanup.
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { after, before, test } from "node:test";
import { clawkerd } from "@clawker/proto";
import { requires, root } from "../../../test/harness/preconditions.js";
import { waitFor } from "../../../test/harness/wait-for.js";
import { makeTestAgent, type TestAgent } from "./fixtures/bootstrap.js";
import { spawnClawkerd, type ClawkerdProcess } from "./fixtures/clawkerd-process.js";
import { outputOf, SessionClient, shell, stage, terminal } from "./fixtures/session-client.js";

const E = clawkerd.ErrorCode;
let agent: TestAgent;
let proc: ClawkerdProcess;
const clients: SessionClient[] = [];

before(async () => {
  agent = await makeTestAgent();
  proc = spawnClawkerd(agent);
  await proc.waitListening();
});

after(async () => {
  for (const c of clients) c.close();
  await proc?.kill();
  await agent?.close();
});

function open(): SessionClient {
  const c = new SessionClient(proc.address, {
    caPem: agent.trust.set.ca.certPem,
    certPem: agent.trust.set.controlPlaneClient.certPem,
    keyPem: agent.trust.set.controlPlaneClient.keyPem,
  });
  clients.push(c);
  return c;
}

async function session(): Promise<SessionClient> {
  const c = open();
  await c.hello();
  return c;
}

function cases(rs: clawkerd.Response[]): string[] {
  return rs.map((r) => r.payload?.$case ?? "none");
}

function errorOf(rs: clawkerd.Response[]): clawkerd.Error {
  const t = terminal(rs);
  assert.equal(t?.payload?.$case, "error", `expected an Error, got ${JSON.stringify(cases(rs))}`);
  return (t.payload as { value: clawkerd.Error }).value;
}

function doneOf(rs: clawkerd.Response[]): number {
  const t = terminal(rs);
  assert.equal(t?.payload?.$case, "done", `expected Done, got ${JSON.stringify(rs.map((r) => r.payload))}`);
  return (t.payload as { value: clawkerd.Done }).value.finalExitCode;
}

/** Process ids whose command line contains `marker` (other than this test process). */
function processesWith(marker: string): number[] {
  const found: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const cmdline = readFileSync(`/proc/${name}/cmdline`, "utf8").replaceAll("\0", " ");
      const stat = readFileSync(`/proc/${name}/stat`, "utf8");
      const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
      if (cmdline.includes(marker) && state !== "Z" && Number(name) !== process.pid) found.push(Number(name));
    } catch {
      // exited while we looked
    }
  }
  return found;
}

test("the first command must be Hello: anything else is refused and the stream ends", async () => {
  const c = open();
  c.send("x", { $case: "shell", value: shell([stage(["echo", "no"])]) });
  const rs = await c.until("x", (r) => r.length > 0);
  assert.equal(errorOf(rs).code, E.ERROR_CODE_INVALID_REQUEST);
  const end = await c.ended();
  assert.equal(end.code, 9, "FAILED_PRECONDITION");
  assert.equal(processesWith("echo no").length, 0);
});

test("Hello is answered by HelloAck; a second Hello is a repeated id", async () => {
  const c = open();
  const ack = await c.hello();
  assert.deepEqual(ack, { initialized: false, cmdRunning: false });
  c.send("hello", { $case: "hello", value: {} });
  const rs = await c.until("hello", (r) => r.length > 1);
  assert.equal((rs[1]!.payload as { value: clawkerd.Error }).value.code, E.ERROR_CODE_INVALID_REQUEST);
});

test("one-stage echo: Started, output, StageExit, Done in that order", async () => {
  const c = await session();
  const rs = await c.run("echo", shell([stage(["echo", "hello world"])]));
  assert.equal(outputOf(rs).toString(), "hello world\n");
  const kinds = cases(rs);
  assert.equal(kinds[0], "started");
  assert.equal(kinds.at(-1), "done");
  assert.deepEqual(
    rs.filter((r) => r.payload?.$case === "stageExit").map((r) => r.payload!.value),
    [{ stageIndex: 0, exitCode: 0, signo: 0 }],
  );
  assert.equal(doneOf(rs), 0);
  assert.equal(kinds.filter((k) => k === "done" || k === "error").length, 1);
});

test("a 3-stage pipeline feeds each stage's stdout to the next; Done carries the last stage's code", async () => {
  const c = await session();
  const rs = await c.run(
    "pipe",
    shell([stage(["printf", "b\\na\\nc\\n"]), stage(["sort"]), stage(["sh", "-c", "tr a-z A-Z; exit 3"])]),
  );
  assert.equal(outputOf(rs).toString(), "A\nB\nC\n");
  const exits = rs
    .filter((r) => r.payload?.$case === "stageExit")
    .map((r) => r.payload!.value as clawkerd.StageExit);
  assert.deepEqual(exits.map((e) => e.stageIndex).sort(), [0, 1, 2]);
  assert.equal(exits.find((e) => e.stageIndex === 2)!.exitCode, 3);
  assert.equal(doneOf(rs), 3);
});

test("stderr of every stage is merged into the output", async () => {
  const c = await session();
  const rs = await c.run(
    "stderr",
    shell([
      stage(["sh", "-c", "echo first-err >&2; echo piped"]),
      stage(["sh", "-c", "cat; echo last-err >&2"]),
    ]),
  );
  const out = outputOf(rs).toString();
  for (const want of ["first-err\n", "piped\n", "last-err\n"])
    assert.ok(out.includes(want), `missing ${want} in ${out}`);
  assert.equal(doneOf(rs), 0);
});

test("output streams from the first byte: `a` arrives before the command ends", async () => {
  const c = await session();
  c.send("stream", { $case: "shell", value: shell([stage(["sh", "-c", "echo a; sleep 1; echo b"])]) });
  const early = await c.until("stream", (rs) => outputOf(rs).includes("a"));
  assert.equal(terminal(early), undefined, "Done arrived before the first output");
  assert.ok(!outputOf(early).includes("b"));
  const rs = await c.until("stream", (r) => terminal(r) !== undefined);
  assert.equal(outputOf(rs).toString(), "a\nb\n");
});

test("timeout kills every stage (and their children) and answers ERROR_CODE_TIMEOUT", async () => {
  const c = await session();
  const rs = await c.run(
    "slow",
    shell(
      [stage(["sh", "-c", "sleep 3117 & sleep 3116; echo never"]), stage(["sh", "-c", "cat; sleep 3115"])],
      {
        timeoutSeconds: 1,
      },
    ),
  );
  assert.equal(errorOf(rs).code, E.ERROR_CODE_TIMEOUT);
  assert.ok(!outputOf(rs).toString().includes("never"));
  assert.equal(cases(rs).filter((k) => k === "done" || k === "error").length, 1);
  await waitFor(
    () => ["sleep 3117", "sleep 3116", "sleep 3115"].every((m) => processesWith(m).length === 0),
    {
      what: "every stage process gone",
    },
  );
});

test("Stdin and CloseStdin feed stage 0 (`cat`), after initial_stdin", async () => {
  const c = await session();
  c.send("cat", { $case: "shell", value: shell([stage(["cat"])], { initialStdin: Buffer.from("first\n") }) });
  await c.until("cat", (rs) => outputOf(rs).toString() === "first\n");
  c.send("cat", { $case: "stdin", value: { data: Buffer.from("second\n") } });
  await c.until("cat", (rs) => outputOf(rs).toString() === "first\nsecond\n");
  c.send("cat", { $case: "closeStdin", value: {} });
  const rs = await c.until("cat", (r) => terminal(r) !== undefined);
  assert.equal(doneOf(rs), 0);
  assert.ok(!cases(rs).includes("error"));
});

test("Signal reaches a running `sleep`: StageExit with the signal, Done -1", async () => {
  const c = await session();
  c.send("sleep", { $case: "shell", value: shell([stage(["sleep", "3118"])]) });
  await c.until("sleep", (rs) => rs.some((r) => r.payload?.$case === "started"));
  c.send("sleep", { $case: "signal", value: { signo: 15 } });
  const rs = await c.until("sleep", (r) => terminal(r) !== undefined);
  const exit = rs.find((r) => r.payload?.$case === "stageExit")!.payload!.value as clawkerd.StageExit;
  assert.deepEqual(exit, { stageIndex: 0, exitCode: -1, signo: 15 });
  assert.equal(doneOf(rs), -1);
  c.send("sleep", { $case: "signal", value: { signo: 0 } });
  c.send("sleep", { $case: "signal", value: { signo: 15 } });
  const after = await c.until("sleep", (r) => r.filter((x) => x.payload?.$case === "error").length >= 1);
  assert.equal(errorOf(after.slice(-1)).code, E.ERROR_CODE_INVALID_REQUEST);
  const later = await c.until("sleep", (r) => r.filter((x) => x.payload?.$case === "error").length >= 2);
  assert.equal(errorOf(later.slice(-1)).code, E.ERROR_CODE_UNKNOWN_COMMAND_ID);
});

test("commands run concurrently: a quick one finishes while another waits for input", async () => {
  const c = await session();
  c.send("waiting", { $case: "shell", value: shell([stage(["sh", "-c", "read x; echo got-$x"])]) });
  await c.until("waiting", (rs) => rs.some((r) => r.payload?.$case === "started"));
  const quick = await Promise.all([
    c.run("q1", shell([stage(["echo", "one"])])),
    c.run("q2", shell([stage(["echo", "two"])])),
  ]);
  assert.deepEqual(
    quick.map((rs) => outputOf(rs).toString()),
    ["one\n", "two\n"],
  );
  assert.equal(terminal(c.byId.get("waiting")!), undefined, "the waiting command is still running");
  c.send("waiting", { $case: "stdin", value: { data: Buffer.from("it\n") } });
  const rs = await c.until("waiting", (r) => terminal(r) !== undefined);
  assert.equal(outputOf(rs).toString(), "got-it\n");
});

test("a repeated command id is ERROR_CODE_INVALID_REQUEST, running or finished", async () => {
  const c = await session();
  c.send("dup", { $case: "shell", value: shell([stage(["sh", "-c", "read x"])]) });
  await c.until("dup", (rs) => rs.some((r) => r.payload?.$case === "started"));
  c.send("dup", { $case: "shell", value: shell([stage(["echo", "second"])]) });
  const rs = await c.until("dup", (r) => r.some((x) => x.payload?.$case === "error"));
  assert.equal(errorOf(rs).code, E.ERROR_CODE_INVALID_REQUEST);
  c.send("dup", { $case: "closeStdin", value: {} });
  const fin = await c.until("dup", (r) => r.some((x) => x.payload?.$case === "done"));
  assert.ok(!outputOf(fin).toString().includes("second"));
  c.send("dup", { $case: "shell", value: shell([stage(["echo", "third"])]) });
  const again = await c.until("dup", (r) => r.filter((x) => x.payload?.$case === "error").length === 2);
  assert.equal(errorOf(again.slice(-1)).code, E.ERROR_CODE_INVALID_REQUEST);
});

test("Stdin, CloseStdin and Signal to an unknown id answer ERROR_CODE_UNKNOWN_COMMAND_ID", async () => {
  const c = await session();
  c.send("nope-1", { $case: "stdin", value: { data: Buffer.from("x") } });
  c.send("nope-2", { $case: "closeStdin", value: {} });
  c.send("nope-3", { $case: "signal", value: { signo: 9 } });
  for (const id of ["nope-1", "nope-2", "nope-3"]) {
    const rs = await c.until(id, (r) => r.length > 0);
    assert.equal(errorOf(rs).code, E.ERROR_CODE_UNKNOWN_COMMAND_ID);
  }
});

test("spawn failure answers ERROR_CODE_SPAWN_FAILED without Started, and kills stages already spawned", async () => {
  const c = await session();
  const rs = await c.run("nx", shell([stage(["/nonexistent/program"])]));
  assert.equal(errorOf(rs).code, E.ERROR_CODE_SPAWN_FAILED);
  assert.deepEqual(cases(rs), ["error"]);
  const rs2 = await c.run("nx2", shell([stage(["sleep", "3119"]), stage(["/nonexistent/program"])]));
  assert.equal(errorOf(rs2).code, E.ERROR_CODE_SPAWN_FAILED);
  await waitFor(() => processesWith("sleep 3119").length === 0, { what: "stage 0 killed" });
  const rs3 = await c.run("badcwd", shell([stage(["true"], { cwd: "/nonexistent/dir" })]));
  assert.equal(errorOf(rs3).code, E.ERROR_CODE_SPAWN_FAILED);
  const rs4 = await c.run("empty", shell([stage([])]));
  assert.equal(errorOf(rs4).code, E.ERROR_CODE_INVALID_REQUEST);
  const rs5 = await c.run("none", shell([]));
  assert.equal(errorOf(rs5).code, E.ERROR_CODE_INVALID_REQUEST);
});

test("cwd and env apply per stage", async () => {
  const c = await session();
  const rs = await c.run(
    "env",
    shell([
      stage(["sh", "-c", 'pwd; echo "$FOO"'], { cwd: "/tmp", env: { FOO: "bar" } }),
      stage(["sh", "-c", 'cat; echo "${FOO:-unset}"']),
    ]),
  );
  assert.equal(outputOf(rs).toString(), "/tmp\nbar\nunset\n");
});

test("large output arrives complete, in chunks of at most 32 KiB", async () => {
  const c = await session();
  const size = 8 * 1024 * 1024;
  const rs = await c.run(
    "big",
    shell([stage(["head", "-c", String(size), "/dev/zero"]), stage(["cat"])]),
    60_000,
  );
  const chunks = rs
    .filter((r) => r.payload?.$case === "output")
    .map((r) => (r.payload!.value as clawkerd.OutputChunk).data);
  assert.equal(
    chunks.reduce((n, d) => n + d.length, 0),
    size,
  );
  assert.ok(chunks.every((d) => d.length > 0 && d.length <= 32 * 1024));
  assert.equal(doneOf(rs), 0);
});

test("ending the Session kills the commands it started", async () => {
  const c = await session();
  c.send("orphan", { $case: "shell", value: shell([stage(["sh", "-c", "sleep 3120 & sleep 3121"])]) });
  await c.until("orphan", (rs) => rs.some((r) => r.payload?.$case === "started"));
  await waitFor(() => processesWith("sleep 3121").length >= 1, { what: "the command running" });
  c.close();
  await waitFor(() => processesWith("sleep 3120").length + processesWith("sleep 3121").length === 0, {
    what: "the session's processes gone",
  });
});

test("stages run with the requested uid/gid", async (t) => {
  if (!requires(t, root)) return;
  const c = await session();
  const rs = await c.run(
    "ids",
    shell([stage(["sh", "-c", "id -u; id -g; id -G"], { uid: 4321, gid: 5432, cwd: "/" })]),
  );
  assert.equal(outputOf(rs).toString(), "4321\n5432\n5432\n");
  const mixed = await c.run(
    "mixed",
    shell([stage(["id", "-u"]), stage(["sh", "-c", "cat; id -u"], { uid: 4321, gid: 5432, cwd: "/" })]),
  );
  assert.equal(outputOf(mixed).toString(), "0\n4321\n");
});

test("AgentInitialized is recorded and reported by later HelloAcks", async () => {
  const c = await session();
  c.send("init", { $case: "agentInitialized", value: {} });
  await waitFor(() => existsSync(`${agent.stateDir}/clawkerd-state.json`), { what: "the state file" });
  const next = open();
  const ack = await next.hello();
  assert.equal(ack.initialized, true);
  assert.equal((c.byId.get("init") ?? []).length, 0, "AgentInitialized answers only on failure");
});

test("print_output also echoes the output on clawkerd's stderr (stdout stays JSON)", async () => {
  const c = await session();
  const rs = await c.run("print", shell([stage(["echo", "echoed-on-console-3141"])], { printOutput: true }));
  assert.equal(doneOf(rs), 0);
  await waitFor(() => proc.stderr.includes("echoed-on-console-3141\n"), { what: "the echo on stderr" });
  assert.ok(!proc.stdout.includes("echoed-on-console-3141"));
  const quiet = await c.run("quiet", shell([stage(["echo", "not-echoed-2718"])]));
  assert.equal(doneOf(quiet), 0);
  assert.ok(!proc.stderr.includes("not-echoed-2718"));
});
