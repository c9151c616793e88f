// The daemon's log sink on a destination that refuses every write (/dev/full answers ENOSPC, like a
// full disk): logging degrades, counts what it lost, and never throws into the process. Recovery
// once the disk has room again is tested on a real full tmpfs in test/daemon-listeners.test.ts.
import assert from "node:assert/strict";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { createLogger, LogSink } from "./logging.js";

void test("ENOSPC on every write: no uncaught error, every lost line counted, later lines still tried", async (t) => {
  const fd = openSync("/dev/full", "w");
  t.after(() => closeSync(fd));
  const uncaught: unknown[] = [];
  const onUncaught = (err: unknown): void => void uncaught.push(err);
  process.on("uncaughtException", onUncaught);
  t.after(() => process.off("uncaughtException", onUncaught));

  const sink = new LogSink(fd, 16 * 1024);
  t.after(() => sink.destroy());
  const log = createLogger("info", sink);
  for (let i = 0; i < 2_000; i++) {
    log.info({ event: "filler", i, pad: "x".repeat(100) }, "a line the disk has no room for");
    // Let the sink try each round's batches before the next round: how many writes it tries then
    // does not depend on how soon the thread pool answers on a busy machine.
    if (i % 100 === 99) await new Promise<void>((resolve) => sink.flush(resolve));
  }
  await new Promise<void>((resolve) => sink.flush(resolve));
  assert.deepEqual(uncaught, [], "a refused write is not an uncaught error");
  assert.equal(sink.stats.lastError, "ENOSPC");
  assert.ok(sink.stats.writeErrors >= 20, `every batch is tried again (${sink.stats.writeErrors} refused)`);
  assert.equal(sink.stats.droppedLines, 2_000, "each line is lost exactly once, none is kept forever");
  const errors = sink.stats.writeErrors;
  log.info("one more");
  sink.flushSync();
  assert.ok(sink.stats.writeErrors > errors, "the exit-time synchronous flush fails quietly too");
});

void test("a working file gets every line in order, and flush waits for them", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "clawker-logsink-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "log");
  const fd = openSync(path, "w", 0o600);
  t.after(() => closeSync(fd));
  const sink = new LogSink(fd);
  t.after(() => sink.destroy());
  const log = createLogger("info", sink);
  for (let i = 0; i < 5_000; i++) log.info({ i }, "line");
  await new Promise<void>((resolve) => sink.flush(resolve));
  const lines = readFileSync(path, "utf8").trimEnd().split("\n");
  assert.equal(lines.length, 5_000);
  assert.deepEqual(
    lines.map((l) => (JSON.parse(l) as { i: number }).i),
    Array.from({ length: 5_000 }, (_, i) => i),
  );
  assert.deepEqual(sink.stats, { writeErrors: 0, droppedLines: 0, lastError: undefined });
});
