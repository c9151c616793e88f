import assert from "node:assert/strict";
import { test } from "node:test";
import { RingBuffer } from "./ring-buffer.js";

interface Case {
  readonly name: string;
  readonly capacity: number;
  /** Numbers push; "s" shifts one; "c" clears. */
  readonly ops: readonly (number | "s" | "c")[];
  readonly shifted: readonly (number | undefined)[];
  readonly drops: number;
  readonly left: readonly number[];
}

const cases: readonly Case[] = [
  {
    name: "fifo under capacity",
    capacity: 4,
    ops: [1, 2, 3, "s", "s"],
    shifted: [1, 2],
    drops: 0,
    left: [3],
  },
  {
    name: "drop-oldest on overflow",
    capacity: 3,
    ops: [1, 2, 3, 4, 5],
    shifted: [],
    drops: 2,
    left: [3, 4, 5],
  },
  {
    name: "wraps around the end",
    capacity: 3,
    ops: [1, 2, "s", 3, 4, "s", 5, 6],
    shifted: [1, 2],
    drops: 1,
    left: [4, 5, 6],
  },
  {
    name: "shift on empty",
    capacity: 2,
    ops: ["s", 1, "s", "s"],
    shifted: [undefined, 1, undefined],
    drops: 0,
    left: [],
  },
  { name: "clear then reuse", capacity: 2, ops: [1, 2, 3, "c", 7], shifted: [], drops: 1, left: [7] },
  { name: "capacity one", capacity: 1, ops: [1, 2, 3], shifted: [], drops: 2, left: [3] },
];

for (const c of cases) {
  void test(`RingBuffer: ${c.name}`, () => {
    const rb = new RingBuffer<number>(c.capacity);
    const shifted: (number | undefined)[] = [];
    let drops = 0;
    for (const op of c.ops) {
      if (op === "s") shifted.push(rb.shift());
      else if (op === "c") rb.clear();
      else if (rb.push(op)) drops++;
    }
    assert.deepEqual(shifted, c.shifted);
    assert.equal(drops, c.drops);
    assert.equal(rb.length, c.left.length);
    const left: number[] = [];
    while (rb.length > 0) left.push(rb.shift()!);
    assert.deepEqual(left, c.left);
  });
}
