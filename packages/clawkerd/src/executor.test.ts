// Executor.watch with real processes: a second and a late watcher get the whole output with
// backfill from the first byte; ids are unique; finished jobs are retained only up to the bound.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Executor } from "./executor.js";
import type { ShellSpec } from "./job.js";
import { createLogger } from "./log.js";

const log = createLogger("silent");

function sh(script: string): ShellSpec {
  return {
    stages: [{ argv: ["sh", "-c", script], uid: 0, gid: 0, cwd: "", env: {} }],
    timeoutSeconds: 0,
    initialStdin: Buffer.alloc(0),
    printOutput: false,
  };
}

async function read(it: AsyncIterable<{ type: string; data?: Buffer }>): Promise<string> {
  let s = "";
  for await (const e of it) s += e.type === "data" ? e.data!.toString() : "<gap>";
  return s;
}

test("watch(): concurrent and late watchers get the whole output from the first byte", async (t) => {
  const ex = new Executor({ log });
  t.after(() => ex.close());
  const job = ex.start("j1", sh("echo one; read x; echo two-$x"));
  const first = read(ex.watch("j1"));
  await new Promise<void>((resolve) => {
    const w = job.output.watch();
    void w.next().then(() => resolve());
  });
  // Joins after "one" was produced: must still get it (backfill).
  const second = read(ex.watch("j1"));
  job.writeStdin(Buffer.from("x\n"));
  const result = await job.finished;
  assert.deepEqual(result, { kind: "done", exitCode: 0 });
  const late = read(ex.watch("j1"));
  assert.deepEqual(await Promise.all([first, second, late]), [
    "one\ntwo-x\n",
    "one\ntwo-x\n",
    "one\ntwo-x\n",
  ]);
  assert.equal(job.state, "completed");
  assert.throws(() => ex.start("j1", sh("true")), { reason: "duplicate_command_id" });
  assert.throws(() => ex.watch("nope"), { reason: "unknown_command_id" });
});

test("finished jobs are retained up to the bound, then forgotten", async (t) => {
  const ex = new Executor({ log, retainFinished: 2 });
  t.after(() => ex.close());
  for (const id of ["a", "b", "c"]) await ex.start(id, sh(`echo ${id}`)).finished;
  await new Promise((r) => setImmediate(r));
  assert.equal(ex.get("a"), undefined);
  assert.equal(await read(ex.watch("c")), "c\n");
  assert.equal(await read(ex.watch("b")), "b\n");
});

test("close() kills running jobs: they end stopped", async () => {
  const ex = new Executor({ log });
  const job = ex.start("long", sh("sleep 3131"));
  await ex.close();
  const result = await job.finished;
  assert.equal(result.kind, "done");
  assert.equal(job.state, "stopped");
  assert.throws(() => ex.start("after", sh("true")), { reason: "invalid_request" });
});

test("stdin accounting: every byte is reported once, written or dropped; the peak is what was queued", async (t) => {
  const ex = new Executor({ log });
  t.after(() => ex.close());
  // Reads 10 bytes, then exits: the rest is queued, then dropped when stage 0's stdin goes.
  const job = ex.start("stdin", { ...sh("head -c 10 >/dev/null; sleep 0.2"), initialStdin: Buffer.alloc(5) });
  let reported = 0;
  job.on("stdinWritten", (n) => (reported += n));
  const pushed = 5 + 40 * (64 << 10);
  for (let i = 0; i < 40; i++) job.writeStdin(Buffer.alloc(64 << 10));
  assert.ok(job.stdinQueued > 0);
  await job.finished;
  job.writeStdin(Buffer.alloc(7)); // after the end: dropped at once, still reported
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(reported, pushed + 7);
  assert.equal(job.stdinQueued, 0);
  assert.ok(job.stdinPeak >= 40 * (64 << 10) - (1 << 20) && job.stdinPeak <= pushed, `peak ${job.stdinPeak}`);
});
