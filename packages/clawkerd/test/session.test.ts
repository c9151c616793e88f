// The Session contract (API.md §3) against the real clawkerd process over real mTLS on
// 127.0.0.1: Hello first, pipelines, merged stderr, streaming from the first byte, timeout,
// stdin, signals, concurrency, duplicate and unknown ids, spawn failure, uid/gid, cleanup; and our
// per-command flow-control extension (output credit, stdin credit, the stdin bound).
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { clawkerd } from "@clawker/proto";
import { requires, root } from "../../../test/harness/preconditions.js";
import { waitFor } from "../../../test/harness/wait-for.js";
import { wireError } from "../../../test/harness/wire-error.js";
import { DEFAULT_MAX_CHUNK_BYTES } from "../src/output-buffer.js";
import { STDIN_WINDOW_BYTES } from "../src/session.js";
import { makeTestAgent, type TestAgent } from "./fixtures/bootstrap.js";
import { spawnClawkerd, type ClawkerdProcess } from "./fixtures/clawkerd-process.js";
import {
  processesWith,
  seqOutput,
  waitBlockedOnInput,
  waitBlockedOnOutput,
  waitSteady,
} from "./fixtures/processes.js";
import {
  controlPlaneIdentity,
  outputOf,
  SessionClient,
  shell,
  stage,
  terminal,
} from "./fixtures/session-client.js";

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

function open(outputWindow?: { bytes: number; chunks: number }): SessionClient {
  const c = new SessionClient(
    proc.address,
    controlPlaneIdentity(agent.trust),
    outputWindow === undefined ? {} : { outputWindow },
  );
  clients.push(c);
  return c;
}

/** A Session after Hello; with `outputWindow`, its shells use per-command flow control. */
async function session(outputWindow?: { bytes: number; chunks: number }): Promise<SessionClient> {
  const c = open(outputWindow);
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

test("the first command must be Hello: anything else is refused and the stream ends", async () => {
  const c = open();
  c.send("x", { $case: "shell", value: shell([stage(["echo", "no"])]) });
  const rs = await c.until("x", (r) => r.length > 0);
  assert.equal(errorOf(rs).code, E.ERROR_CODE_INVALID_REQUEST);
  const end = await c.ended();
  assert.equal(end.code, 9, "FAILED_PRECONDITION");
  const info = wireError(end);
  assert.deepEqual([info.reason, info.domain], ["hello_required", "clawker.dev"]);
  assert.equal(processesWith("echo no").length, 0);
});

test("Hello is answered by HelloAck; a second Hello is a repeated id", async () => {
  const c = open();
  const ack = await c.hello();
  assert.deepEqual(ack, {
    initialized: false,
    cmdRunning: false,
    flowControl: { stdinWindowBytes: STDIN_WINDOW_BYTES },
  });
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

test("large output arrives complete, in chunks of at most 64 KiB", async () => {
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
  assert.ok(chunks.every((d) => d.length > 0 && d.length <= DEFAULT_MAX_CHUNK_BYTES));
  assert.equal(DEFAULT_MAX_CHUNK_BYTES, 64 << 10);
  // A pipe read is up to 64 KiB and goes out whole: 8 MiB of `cat` fills some reads.
  assert.ok(
    chunks.some((d) => d.length > 32 << 10),
    `largest ${Math.max(...chunks.map((d) => d.length))}`,
  );
  assert.equal(doneOf(rs), 0);
});

test("two commands' random output arrives byte for byte, interleaved on one Session", async () => {
  // OutputChunks are encoded into one reused buffer (response-codec.ts): any message that left
  // clawkerd after the next one was encoded would carry the wrong bytes here.
  const c = await session();
  const files = ["a", "b"].map((name) => join(agent.dir, `random-${name}.bin`));
  const contents = files.map(() => randomBytes(3 * 1024 * 1024 + 4321));
  for (const [i, f] of files.entries()) await writeFile(f, contents[i]!);
  const runs = await Promise.all(
    files.map((f, i) => c.run(`random${i}`, shell([stage(["cat", f])]), 60_000)),
  );
  for (const [i, rs] of runs.entries()) {
    assert.equal(doneOf(rs), 0);
    assert.ok(outputOf(rs).equals(contents[i]!), `command ${i}: output differs from the file`);
  }
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

/** The `job_finished` log line of command `id` (job ids are `<session>/<command id>`). */
async function jobFinished(id: string): Promise<Record<string, unknown>> {
  return waitFor(
    () => proc.lines.find((l) => l["event"] === "job_finished" && String(l["job"]).endsWith(`/${id}`)),
    { what: `job_finished of ${id}` },
  );
}

/** `n` bytes in which every 4-byte word is its own index: a lost or reordered byte shows. */
function counted(n: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i + 4 <= n; i += 4) b.writeUInt32LE(i / 4, i);
  return b;
}

test("flow control: a shell never sends more output than its credit; its process blocks; credit releases the rest in order", async () => {
  const window = 64 << 10;
  const c = await session({ bytes: window, chunks: 0 });
  c.hold("seq");
  c.send("seq", { $case: "shell", value: shell([stage(["seq", "1", "300001"])]) });
  const sent = await waitSteady(() => outputOf(c.byId.get("seq") ?? []).length, { what: "output held" });
  assert.equal(sent, window, "exactly the window arrives, then nothing");
  await waitBlockedOnOutput("seq 1 300001");
  assert.equal(terminal(c.byId.get("seq")!), undefined);
  // Every credit lets exactly that much more through, never a byte beyond it.
  let credited = window;
  for (;;) {
    c.credit("seq", 256 << 10, 0);
    credited += 256 << 10;
    const rs = await c.until("seq", (r) => outputOf(r).length >= credited || terminal(r) !== undefined);
    assert.ok(outputOf(rs).length <= credited, `${outputOf(rs).length} bytes for ${credited} of credit`);
    if (terminal(rs) !== undefined) break;
  }
  const rs = c.byId.get("seq")!;
  assert.equal(doneOf(rs), 0);
  assert.equal(outputOf(rs).toString(), seqOutput(300001));
});

test("flow control: the message window bounds small chunks too", async () => {
  const c = await session({ bytes: 1 << 20, chunks: 3 });
  c.hold("lines");
  c.send("lines", { $case: "shell", value: shell([stage(["cat", "-u", "-"])]) });
  const outputs = (): number =>
    (c.byId.get("lines") ?? []).filter((r) => r.payload?.$case === "output").length;
  // One line at a time, each echoed by cat as its own small chunk: three fit the message window.
  for (const line of ["1", "2", "3"]) {
    c.send("lines", { $case: "stdin", value: { data: Buffer.from(`${line}\n`) } });
    await c.until("lines", (r) => outputOf(r).toString().endsWith(`${line}\n`));
  }
  c.send("lines", { $case: "stdin", value: { data: Buffer.from("4\n") } });
  c.send("lines", { $case: "stdin", value: { data: Buffer.from("5\n") } });
  assert.equal(await waitSteady(outputs, { what: "the message window used up" }), 3);
  await waitBlockedOnInput("cat -u -"); // both lines read and echoed into the held output
  assert.equal(outputOf(c.byId.get("lines")!).toString(), "1\n2\n3\n");
  // One more message: what waited meanwhile, in one chunk.
  c.credit("lines", 0, 1);
  const rs = await c.until("lines", (r) => outputOf(r).toString() === "1\n2\n3\n4\n5\n");
  assert.equal(outputs(), 4);
  c.send("lines", { $case: "closeStdin", value: {} });
  assert.equal(doneOf(await c.until("lines", (r) => terminal(r) !== undefined)), 0);
  assert.equal(rs.filter((r) => r.payload?.$case === "output").length, 4);
});

test("flow control: a held command does not hold back another command of the same Session", async () => {
  const c = await session({ bytes: 256 << 10, chunks: 64 });
  c.hold("slow");
  c.send("slow", { $case: "shell", value: shell([stage(["seq", "1", "300002"])]) });
  await waitBlockedOnOutput("seq 1 300002");
  const size = 32 << 20;
  const fast = await c.run("fast", shell([stage(["head", "-c", String(size), "/dev/zero"])]), 60_000);
  assert.equal(outputOf(fast).length, size);
  assert.equal(doneOf(fast), 0);
  assert.equal(terminal(c.byId.get("slow")!), undefined, "the held command is still held");
  assert.ok(outputOf(c.byId.get("slow")!).length <= 256 << 10);
  c.credit("slow", 1 << 30, 1 << 20);
  const slow = await c.until("slow", (r) => terminal(r) !== undefined);
  assert.equal(outputOf(slow).toString(), seqOutput(300002));
});

test("flow control: output_window_bytes 0 is ERROR_CODE_INVALID_REQUEST", async () => {
  const c = await session();
  const rs = await c.run(
    "zero",
    shell([stage(["echo", "never-run-5150"])], {
      flowControl: { outputWindowBytes: 0, outputWindowChunks: 0 },
    }),
  );
  assert.equal(errorOf(rs).code, E.ERROR_CODE_INVALID_REQUEST);
  assert.equal(processesWith("never-run-5150").length, 0);
});

test("flow control: stdin is credited as stage 0 reads it; a sender within the window is held, clawkerd holds no more", async () => {
  const c = await session({ bytes: 1 << 20, chunks: 256 });
  const input = counted(8 << 20);
  const initial = input.subarray(0, 100_000);
  c.send("in", {
    $case: "shell",
    value: shell([stage(["sh", "-c", "sleep 1; exec cat"])], { initialStdin: initial }),
  });
  let sent = initial.length;
  const credited = (): number => c.stdinCredited.get("in") ?? 0;
  const writer = (async () => {
    while (sent < input.length) {
      const room = STDIN_WINDOW_BYTES - (sent - credited());
      if (room <= 0) {
        await c.until("in", () => STDIN_WINDOW_BYTES - (sent - credited()) > 0, 30_000);
        continue;
      }
      const piece = input.subarray(sent, sent + Math.min(room, 64 << 10));
      c.send("in", { $case: "stdin", value: { data: piece } });
      sent += piece.length;
    }
    c.send("in", { $case: "closeStdin", value: {} });
  })();
  // While stage 0 sleeps, the sender sits at exactly the window beyond what stage 0's stdin socket
  // took (libuv's stdio is a socketpair with a send buffer of its own).
  const held = await waitSteady(() => sent, { quietMs: 300, what: "the sender held" });
  assert.equal(held - credited(), STDIN_WINDOW_BYTES);
  assert.ok(held < input.length / 2, `the sender got ${held} bytes out while nothing read`);
  await writer;
  const rs = await c.until("in", (r) => terminal(r) !== undefined, 60_000);
  assert.equal(doneOf(rs), 0);
  assert.ok(outputOf(rs).equals(input), "every stdin byte came back, in order");
  assert.equal(credited(), input.length, "every byte credited back, initial_stdin included");
  const finished = await jobFinished("in");
  assert.ok(
    Number(finished["stdinPeak"]) <= STDIN_WINDOW_BYTES,
    `stdin peak ${String(finished["stdinPeak"])}`,
  );
});

test("a sender that ignores the stdin window (no flow control) is held by the Session: clawkerd's stdin stays bounded", async () => {
  const c = await session();
  c.send("flood", { $case: "shell", value: shell([stage(["sh", "-c", "sleep 1; exec cat"])]) });
  const input = counted(16 << 20);
  const piece = 64 << 10;
  // All at once: without a bound clawkerd would queue nearly all of it during the sleep.
  for (let at = 0; at < input.length; at += piece) {
    c.send("flood", { $case: "stdin", value: { data: input.subarray(at, at + piece) } });
  }
  c.send("flood", { $case: "closeStdin", value: {} });
  const rs = await c.until("flood", (r) => terminal(r) !== undefined, 60_000);
  assert.equal(doneOf(rs), 0);
  assert.ok(outputOf(rs).equals(input), "every stdin byte came back, in order");
  assert.equal(c.stdinCredited.size, 0, "no StdinCredit for a shell without flow_control");
  const finished = await jobFinished("flood");
  const peak = Number(finished["stdinPeak"]);
  assert.ok(peak <= STDIN_WINDOW_BYTES + piece, `stdin peak ${peak}`);
});
