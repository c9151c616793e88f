// CreditWindow: spending never overdraws bytes or messages, credit wakes a waiting sender, close
// ends every wait.
import assert from "node:assert/strict";
import { test } from "node:test";
import { CreditWindow } from "./credit-window.js";

test("spend: a chunk takes what the byte credit allows and one message; nothing at zero", () => {
  const cases: Array<{ window: [number, number]; chunks: number[]; want: number[] }> = [
    { window: [100, 0], chunks: [40, 40, 40, 40], want: [40, 40, 20, 0] },
    { window: [100, 2], chunks: [10, 10, 10], want: [10, 10, 0] },
    { window: [5, 0], chunks: [32 << 10], want: [5] },
    { window: [5, 0], chunks: [0], want: [0] },
  ];
  for (const { window, chunks, want } of cases) {
    const w = new CreditWindow(window[0], window[1]);
    assert.deepEqual(
      chunks.map((c) => w.spend(c)),
      want,
      JSON.stringify(window),
    );
    assert.ok(w.bytes >= 0 && w.chunks >= 0);
  }
});

test("add wakes a waiter and adds both credits; close ends waits for good", async () => {
  const w = new CreditWindow(1, 1);
  assert.equal(w.spend(10), 1);
  assert.equal(w.spend(10), 0);
  assert.equal(w.exhausted, true);
  const waiting = w.wait();
  w.add(8, 2);
  await waiting;
  assert.deepEqual([w.bytes, w.chunks], [8, 2]);
  assert.equal(w.exhausted, false);
  assert.equal(w.spend(10), 8);
  const pending = w.wait();
  w.close();
  await pending;
  await w.wait();
  w.add(5, 5);
  assert.equal(w.spend(1), 0, "credit after close changes nothing");
});

test("the byte window must be positive", () => {
  assert.throws(() => new CreditWindow(0, 0), RangeError);
  assert.throws(() => new CreditWindow(1.5, 0), RangeError);
});
