// OutputFlow and StdinFlow: credits are granted a quarter window at a time for what the reader
// took, an overdraw is reported, and the stdin window holds a writer until credit or the end.
import assert from "node:assert/strict";
import { test } from "node:test";
import { OutputFlow, StdinFlow } from "./command-flow.js";

test("OutputFlow grants what was taken, a quarter window at a time (bytes or messages)", () => {
  const cases: Array<{ window: { bytes: number; chunks: number }; taken: number[]; grants: string[] }> = [
    // 32 KiB chunks into a 128 KiB window: every chunk is a quarter of the bytes.
    { window: { bytes: 128 << 10, chunks: 64 }, taken: [32 << 10, 32 << 10], grants: ["32768/1", "32768/1"] },
    // Small chunks: the message quarter (2 of 8) comes first.
    { window: { bytes: 1 << 20, chunks: 8 }, taken: [10, 10, 10, 10], grants: ["-", "20/2", "-", "20/2"] },
    { window: { bytes: 100, chunks: 100 }, taken: [10, 10, 5], grants: ["-", "-", "25/3"] },
  ];
  for (const { window, taken, grants } of cases) {
    const flow = new OutputFlow(window);
    const got = taken.map((n) => {
      assert.equal(flow.received(n), true);
      const g = flow.taken(n);
      return g === undefined ? "-" : `${g.bytes}/${g.chunks}`;
    });
    assert.deepEqual(got, grants, JSON.stringify(window));
  }
});

test("OutputFlow reports a peer that sends past its credit, in bytes or in messages", () => {
  const bytes = new OutputFlow({ bytes: 100, chunks: 10 });
  assert.equal(bytes.received(60), true);
  assert.equal(bytes.received(40), true);
  assert.equal(bytes.received(1), false);
  const messages = new OutputFlow({ bytes: 100, chunks: 2 });
  assert.equal(messages.received(1), true);
  assert.equal(messages.received(1), true);
  assert.equal(messages.received(1), false);
  // What the reader took and was granted back may be sent again.
  const refill = new OutputFlow({ bytes: 100, chunks: 4 });
  assert.equal(refill.received(100), true);
  assert.ok(refill.taken(100));
  assert.equal(refill.received(100), true);
  assert.throws(() => new OutputFlow({ bytes: 0, chunks: 1 }), RangeError);
  assert.throws(() => new OutputFlow({ bytes: 1, chunks: 0 }), RangeError);
});

test("StdinFlow: room within the window, a writer waits for credit or the end", async () => {
  const flow = new StdinFlow(100);
  flow.sent(130); // initial_stdin may exceed the window
  assert.equal(flow.room(), 0);
  const waiting = flow.wait();
  flow.credited(50);
  await waiting;
  assert.equal(flow.room(), 20);
  flow.credited(1000);
  assert.equal(flow.inFlight, 0, "never below zero");
  const pending = flow.wait();
  flow.end();
  await pending;
  assert.equal(flow.ended, true);
  await flow.wait();
  assert.throws(() => new StdinFlow(0), RangeError);
});
