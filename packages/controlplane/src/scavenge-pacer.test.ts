// ScavengePacer: one scavenge each time `everyBytes` more output has been accounted, V8's own
// young-generation collection by default, and a pacer without a gc function only warns. The
// streaming test with a real Session and clawkerd is in test/agents-flow-control.test.ts.
import assert from "node:assert/strict";
import { PerformanceObserver, constants as perfConstants, type PerformanceEntry } from "node:perf_hooks";
import { test } from "node:test";
import { setImmediate as nextTurn } from "node:timers/promises";
import { pino } from "pino";
import { SCAVENGE_EVERY_BYTES, ScavengePacer } from "./scavenge-pacer.js";

/** A logger whose lines land, parsed, in `lines`. */
function capture(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino(
    { level: "info" },
    { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) },
  );
  return { log, lines };
}

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
  const { log } = capture();
  let runs = 0;
  const pacer = new ScavengePacer({ log, everyBytes: 10, scavenge: () => runs++ });
  const after = (bytes: number): number => {
    pacer.account(bytes);
    return runs;
  };
  assert.deepEqual([after(4), after(4), after(4), after(9), after(1), after(25)], [0, 0, 1, 1, 2, 3]);
  assert.equal(pacer.scavenges, 3);
  assert.equal(SCAVENGE_EVERY_BYTES, 8 << 20);
});

void test("everyBytes must be a positive integer", () => {
  const { log } = capture();
  for (const everyBytes of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    assert.throws(() => new ScavengePacer({ log, everyBytes }), RangeError, String(everyBytes));
  }
});

void test("by default it runs V8's young-generation collection, never a full one", async () => {
  const { log } = capture();
  const pacer = new ScavengePacer({ log, everyBytes: 1 });
  const kinds: Array<number | undefined> = [];
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) kinds.push(forcedKind(e));
  });
  observer.observe({ entryTypes: ["gc"] });
  for (let i = 0; i < 3; i++) pacer.account(1);
  await nextTurn();
  for (const e of observer.takeRecords()) kinds.push(forcedKind(e));
  observer.disconnect();
  assert.equal(pacer.scavenges, 3);
  assert.equal(
    kinds.filter((k) => k === perfConstants.NODE_PERFORMANCE_GC_MINOR).length,
    3,
    `kinds ${kinds.join(",")}`,
  );
  assert.equal(kinds.filter((k) => k === perfConstants.NODE_PERFORMANCE_GC_MAJOR).length, 0);
  assert.equal((globalThis as { gc?: unknown }).gc, undefined, "no gc on the global");
});

void test("a scavenge that throws disables the pacer with one warning; accounting goes on quietly", () => {
  const { log, lines } = capture();
  let calls = 0;
  const pacer = new ScavengePacer({
    log,
    everyBytes: 1,
    scavenge: () => {
      calls++;
      throw new Error("no gc here");
    },
  });
  for (let i = 0; i < 5; i++) assert.doesNotThrow(() => pacer.account(1));
  assert.equal(calls, 1);
  assert.equal(pacer.scavenges, 0);
  const warned = lines.filter((l) => l["event"] === "scavenge_pacer_unavailable");
  assert.equal(warned.length, 1);
  assert.equal(warned[0]?.["level"], 40);
});
