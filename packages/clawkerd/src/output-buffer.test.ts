// The output fan-out: backfill from the first byte, many watchers, the memory bound with
// gap accounting for lossy watchers, and producer pausing for a blocking watcher.
import assert from "node:assert/strict";
import { test } from "node:test";
import { OutputBuffer, type OutputEvent, type Watcher } from "./output-buffer.js";

function text(events: OutputEvent[]): string {
  return events.map((e) => (e.type === "data" ? e.data.toString() : `<gap ${e.missed}>`)).join("");
}

test("a watcher gets the backfill, then live bytes, then ends at close", async () => {
  const b = new OutputBuffer();
  b.write(Buffer.from("ab"));
  b.write(Buffer.from("cd"));
  const w = b.watch();
  const first = await w.next();
  assert.deepEqual(first.value, { type: "data", data: Buffer.from("abcd") }, "buffered chunks are coalesced");
  const live = w.next();
  b.write(Buffer.from("ef"));
  assert.equal(((await live).value as { data: Buffer }).data.toString(), "ef");
  b.close();
  assert.equal((await w.next()).done, true);
});

test("atEnd only once the buffer is closed and read to its end; changed() wakes at a write and at close", async () => {
  const b = new OutputBuffer();
  const w = b.watch();
  const wrote = w.changed();
  b.write(Buffer.from("ab"));
  await wrote;
  const closing = w.changed();
  b.close();
  await closing;
  assert.equal(w.atEnd, false, "closed, but two bytes are still unread");
  await w.next();
  assert.equal(w.atEnd, true);
});

test("many watchers, joining at different times, all see the same bytes from the first", async () => {
  const b = new OutputBuffer();
  const collect = async (w: Watcher): Promise<string> => {
    let s = "";
    for await (const e of w) s += e.type === "data" ? e.data.toString() : `<gap ${e.missed}>`;
    return s;
  };
  const expected = Array.from({ length: 100 }, (_, i) => `${i},`).join("");
  const results = [collect(b.watch())];
  for (let i = 0; i < 100; i++) {
    b.write(Buffer.from(`${i},`));
    if (i === 50) results.push(collect(b.watch()));
  }
  b.close();
  results.push(collect(b.watch()));
  assert.deepEqual(await Promise.all(results), [expected, expected, expected]);
});

test("over capacity the oldest bytes are dropped and a lagging watcher is told how many it missed", async () => {
  const b = new OutputBuffer({ capacityBytes: 10, maxChunkBytes: 100 });
  const lagging = b.watch();
  for (const s of ["0000", "1111", "2222", "3333", "4444"]) b.write(Buffer.from(s));
  assert.ok(b.retained <= 10, `retained ${b.retained}`);
  assert.equal(b.written, 20);
  b.close();
  const events: OutputEvent[] = [];
  for await (const e of lagging) events.push(e);
  assert.deepEqual(events[0], { type: "gap", missed: 12 });
  assert.equal(text(events.slice(1)), "33334444");
  const newcomer: OutputEvent[] = [];
  for await (const e of b.watch()) newcomer.push(e);
  assert.equal(text(newcomer), "<gap 12>33334444", "a new watcher learns that the start is gone");
});

test("a blocking watcher is never skipped: the producer is paused at high water and resumed", async () => {
  const b = new OutputBuffer({ capacityBytes: 8, highWaterBytes: 8, maxChunkBytes: 4 });
  const calls: string[] = [];
  b.setFlowControl({ pause: () => calls.push("pause"), resume: () => calls.push("resume") });
  const primary = b.watch({ blocking: true });
  const lossy = b.watch();
  const oks = ["aaaa", "bbbb", "cccc", "dddd"].map((s) => b.write(Buffer.from(s)));
  assert.deepEqual(oks, [true, true, false, false]);
  assert.deepEqual(calls, ["pause"]);
  assert.equal(b.retained, 16, "nothing the blocking watcher has not read is dropped");
  let got = "";
  for (let i = 0; i < 3; i++) got += ((await primary.next()).value as { data: Buffer }).data.toString();
  assert.equal(got, "aaaabbbbcccc");
  assert.deepEqual(calls, ["pause", "resume"], "resumed once the lag fell to half the high water");
  assert.ok(b.retained <= 8);
  b.close();
  const rest: OutputEvent[] = [];
  for await (const e of primary) rest.push(e);
  assert.equal(text(rest), "dddd");
  const lossyEvents: OutputEvent[] = [];
  for await (const e of lossy) lossyEvents.push(e);
  assert.equal(lossyEvents[0]?.type, "gap", "the lossy watcher fell behind and was told");
  assert.equal(text(lossyEvents).endsWith("dddd"), true);
});

test("data events never exceed maxChunkBytes", async () => {
  const b = new OutputBuffer({ maxChunkBytes: 32 });
  b.write(Buffer.alloc(100, 1));
  b.close();
  const sizes: number[] = [];
  for await (const e of b.watch()) if (e.type === "data") sizes.push(e.data.length);
  assert.deepEqual(sizes, [32, 32, 32, 4]);
});

test("return() ends a pending next() and detaches a blocking watcher (the producer resumes)", async () => {
  const b = new OutputBuffer({ highWaterBytes: 2 });
  let resumed = 0;
  b.setFlowControl({ pause: () => undefined, resume: () => resumed++ });
  const w = b.watch({ blocking: true });
  assert.equal(b.write(Buffer.from("xyz")), false);
  const idle = b.watch();
  assert.equal(((await idle.next()).value as { data: Buffer }).data.toString(), "xyz");
  const waiting = idle.next();
  await idle.return();
  assert.equal((await waiting).done, true, "a pending next() ends on return()");
  await w.return();
  assert.equal(resumed, 1);
  assert.equal(b.write(Buffer.from("more")), true);
  const pending = b.watch().next();
  assert.equal(((await pending).value as { data: Buffer }).data.toString(), "xyzmore");
});

test("bounds must be positive", () => {
  assert.throws(() => new OutputBuffer({ capacityBytes: 0 }), RangeError);
});
