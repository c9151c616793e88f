// scavengePacer: a scavenge each time `everyBytes` more output has been read, V8's own
// young-generation collection by default, taken without putting a gc on the global.
import assert from "node:assert/strict";
import { PerformanceObserver, constants as perfConstants, type PerformanceEntry } from "node:perf_hooks";
import { test } from "node:test";
import { setImmediate as nextTurn } from "node:timers/promises";
import { SCAVENGE_EVERY_BYTES, scavengePacer } from "./scavenge-pacer.js";

/**
 * The kind of a "gc" performance entry (perf_hooks NODE_PERFORMANCE_GC_*) when a gc function
 * forced it, else undefined: V8 may run its own collections in the same turn, and those say
 * nothing about the pacer.
 */
function forcedKind(e: PerformanceEntry): number | undefined {
  const { kind, flags } = (e as PerformanceEntry & { detail: { kind: number; flags: number } }).detail;
  return flags & perfConstants.NODE_PERFORMANCE_GC_FLAGS_FORCED ? kind : undefined;
}

void test("a scavenge each time everyBytes more have come; the remainder does not carry over", () => {
  let runs = 0;
  const account = scavengePacer(10, () => runs++);
  const after = (bytes: number): number => {
    account(bytes);
    return runs;
  };
  assert.deepEqual([after(4), after(4), after(4), after(9), after(1), after(25)], [0, 0, 1, 1, 2, 3]);
  assert.equal(SCAVENGE_EVERY_BYTES, 8 << 20);
});

void test("everyBytes must be a positive integer", () => {
  for (const everyBytes of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    assert.throws(() => scavengePacer(everyBytes), RangeError, String(everyBytes));
  }
});

void test("by default it runs V8's young-generation collection, never a full one, with no gc on the global", async () => {
  const account = scavengePacer(1);
  const kinds: Array<number | undefined> = [];
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) kinds.push(forcedKind(e));
  });
  observer.observe({ entryTypes: ["gc"] });
  for (let i = 0; i < 3; i++) account(1);
  await nextTurn();
  for (const e of observer.takeRecords()) kinds.push(forcedKind(e));
  observer.disconnect();
  assert.equal(
    kinds.filter((k) => k === perfConstants.NODE_PERFORMANCE_GC_MINOR).length,
    3,
    `kinds ${kinds.join(",")}`,
  );
  assert.equal(kinds.filter((k) => k === perfConstants.NODE_PERFORMANCE_GC_MAJOR).length, 0);
  assert.equal((globalThis as { gc?: unknown }).gc, undefined);
  const { runInNewContext } = await import("node:vm");
  assert.equal(runInNewContext("typeof gc"), "undefined", "--expose-gc is off again");
});
