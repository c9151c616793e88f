// MemoryRelief: the decision as a table test, then the real thing in this process (real timers,
// real event-loop utilisation, a real V8 collection) and in a child process (the timer never
// keeps a process alive). The daemon-level proof is test/memory-relief.test.ts.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { Writable } from "node:stream";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { waitFor } from "@clawker/test-support";
import {
  INITIAL_RELIEF_STATE,
  MemoryRelief,
  QUIET_UTILIZATION,
  STARTUP_QUIET_MS,
  acquireGc,
  reliefStep,
  type ReliefState,
  type ReliefStep,
} from "./memory-relief.js";

const MiB = 1024 * 1024;
const limits = { idleMs: 1000, marginBytes: 10 * MiB };

/** A logger whose lines land in `lines`. */
function capture(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level: "info" }, sink), lines };
}

void test("reliefStep: activity arms it, a quiet stretch after it fires once, if worth the pause", () => {
  const armed: ReliefState = { sawActivity: true, quietSince: undefined, floorBytes: 100 * MiB };
  const cases: Array<{
    name: string;
    state: ReliefState;
    sample: { now: number; utilization: number; rssBytes: number };
    step: ReliefStep;
    next: Partial<ReliefState>;
  }> = [
    {
      name: "activity arms and ends a quiet stretch",
      state: { sawActivity: false, quietSince: 5, floorBytes: 100 * MiB },
      sample: { now: 10, utilization: 0.9, rssBytes: 300 * MiB },
      step: "active",
      next: { sawActivity: true, quietSince: undefined, floorBytes: 100 * MiB },
    },
    {
      name: "light activity just above the quiet line arms it too",
      state: { sawActivity: false, quietSince: 0, floorBytes: 100 * MiB },
      sample: { now: 2000, utilization: QUIET_UTILIZATION + 0.01, rssBytes: 300 * MiB },
      step: "active",
      next: { sawActivity: true, quietSince: undefined },
    },
    {
      name: "quiet, but not long enough yet; a pending load's RSS is no floor",
      state: armed,
      sample: { now: 50, utilization: QUIET_UTILIZATION, rssBytes: 80 * MiB },
      step: "quiet",
      next: { sawActivity: true, quietSince: 50, floorBytes: 100 * MiB },
    },
    {
      name: "quiet for idleMs after activity, RSS above floor + margin: relieve and disarm",
      state: { ...armed, quietSince: 0 },
      sample: { now: 1000, utilization: 0, rssBytes: 300 * MiB },
      step: "relieve",
      next: { sawActivity: false, quietSince: 0, floorBytes: 100 * MiB },
    },
    {
      name: "quiet for idleMs after activity, RSS within the margin: disarm without a pause",
      state: { ...armed, quietSince: 0 },
      sample: { now: 1000, utilization: 0, rssBytes: 105 * MiB },
      step: "quiet",
      next: { sawActivity: false },
    },
    {
      name: "quiet for long without activity: nothing to do",
      state: { sawActivity: false, quietSince: 0, floorBytes: 100 * MiB },
      sample: { now: 60_000, utilization: 0, rssBytes: 300 * MiB },
      step: "quiet",
      next: { sawActivity: false },
    },
    {
      name: "a quiet sample with nothing pending lowers the floor",
      state: { sawActivity: false, quietSince: 0, floorBytes: 100 * MiB },
      sample: { now: 10, utilization: 0, rssBytes: 90 * MiB },
      step: "quiet",
      next: { floorBytes: 90 * MiB },
    },
    {
      name: "after start no floor is known: the first quiet stretch fires whatever the RSS",
      state: { ...INITIAL_RELIEF_STATE, quietSince: 0 },
      sample: { now: 1000, utilization: 0, rssBytes: 99 * MiB },
      step: "relieve",
      next: { sawActivity: false, floorBytes: 0 },
    },
    {
      name: "the first quiet sample after that sets the floor",
      state: { sawActivity: false, quietSince: 0, floorBytes: 0 },
      sample: { now: 1250, utilization: 0, rssBytes: 99 * MiB },
      step: "quiet",
      next: { floorBytes: 99 * MiB },
    },
  ];
  for (const c of cases) {
    const { state, step } = reliefStep(c.state, c.sample, limits);
    assert.equal(step, c.step, c.name);
    for (const [key, value] of Object.entries(c.next)) {
      assert.equal(state[key as keyof ReliefState], value, `${c.name}: ${key}`);
    }
  }
});

void test("acquireGc gives a working gc without exposing one on the global or leaving the flag on", async () => {
  const gc = acquireGc();
  assert.equal((globalThis as { gc?: unknown }).gc, undefined);
  const { runInNewContext } = await import("node:vm");
  assert.equal(runInNewContext("typeof gc"), "undefined", "--expose-gc is off again");
  const holder: { garbage?: unknown[] } = {
    garbage: Array.from({ length: 200_000 }, (_, i) => ({ i, s: `x${i}` })),
  };
  const before = process.memoryUsage().heapUsed;
  delete holder.garbage;
  gc();
  assert.ok(process.memoryUsage().heapUsed < before - 5 * MiB, "the collection freed the dropped objects");
});

void test("after load and a quiet stretch it collects once and logs memory_relief", async (t) => {
  const { log, lines } = capture();
  const relief = new MemoryRelief({ log, idleMs: 300, marginMiB: 0 });
  t.after(() => relief.close());
  relief.start();
  // The first quiet stretch after start fires (start-up counts as load); wait for it to be logged.
  await waitFor(() => lines.find((l) => l["event"] === "memory_relief"), {
    timeoutMs: 40_000,
    what: "the start-up relief",
  });
  // Load: a busy loop that also leaves garbage behind, for longer than idleMs.
  const garbage: unknown[] = [];
  const loadEnd = performance.now() + 1000;
  while (performance.now() < loadEnd) {
    garbage.push({ s: "y".repeat(100) + String(garbage.length) });
    if (garbage.length > 200_000) garbage.length = 0;
    if (garbage.length % 10_000 === 0) await new Promise((r) => setImmediate(r));
  }
  garbage.length = 0;
  const during = lines.filter((l) => l["event"] === "memory_relief").length;
  assert.equal(during, 1, "no collection while the loop was busy");
  const line = await waitFor(() => lines.filter((l) => l["event"] === "memory_relief")[1], {
    timeoutMs: 40_000,
    what: "the relief after load",
  });
  assert.equal(typeof line["gcMs"], "number");
  assert.ok((line["quietMs"] as number) >= 300, `quiet ${String(line["quietMs"])} ms before it`);
  assert.ok((line["heapAfterMiB"] as number) <= (line["heapBeforeMiB"] as number));
  assert.ok((line["rssAfterMiB"] as number) <= (line["rssBeforeMiB"] as number), "RSS did not grow");
  assert.equal(lines.filter((l) => l["event"] === "memory_relief").length, 2, "once per load");
});

void test("collectStartup collects the start-up's garbage in the first quiet interval, and quiet stretches after it pass without a pause", async (t) => {
  const { log, lines } = capture();
  const relief = new MemoryRelief({ log, idleMs: 200, marginMiB: 256 });
  t.after(() => relief.close());
  relief.start();
  relief.collectStartup();
  const line = await waitFor(() => lines.find((l) => l["event"] === "memory_relief"), {
    timeoutMs: 40_000,
    what: "the start-up collection",
  });
  assert.equal(line["trigger"], "startup");
  assert.equal(line["quietMs"], STARTUP_QUIET_MS, "one short quiet interval awaited, not idleMs");
  // What it gave back is the daemon's figure (test/daemon.test.ts): here the first collection also
  // builds the vm context the gc is taken from, in a heap with little garbage.
  assert.equal(typeof line["gcMs"], "number");
  // Without it, the sampler's first quiet stretch (start-up counts as load) would collect: now
  // nothing is above what the start-up collection left, so several stretches pass without one.
  await sleep(1500);
  assert.equal(lines.filter((l) => l["event"] === "memory_relief").length, 1);
  const closed = new MemoryRelief({ log, idleMs: 200 });
  closed.close();
  closed.collectStartup();
  new MemoryRelief({ log, idleMs: 200, enabled: false }).collectStartup();
  await sleep(100);
  assert.equal(lines.filter((l) => l["event"] === "memory_relief").length, 1, "closed or disabled: none");
});

void test("close() stops it: no collection after close, start() after close does nothing", async () => {
  const { log, lines } = capture();
  const relief = new MemoryRelief({ log, idleMs: 100, marginMiB: 0 });
  relief.start();
  relief.close();
  relief.close();
  relief.start();
  const disabled = new MemoryRelief({ log, idleMs: 100, enabled: false });
  disabled.start();
  const aborted = new MemoryRelief({ log, idleMs: 100 });
  aborted.start(AbortSignal.abort());
  // Each would have fired its start-up collection after 100 ms of quiet.
  await sleep(1500);
  assert.deepEqual(lines, []);
});

void test("its timer never keeps a process alive", async () => {
  const script = `
    import { pino } from "pino";
    import { MemoryRelief } from ${JSON.stringify(new URL("./memory-relief.ts", import.meta.url).href)};
    new MemoryRelief({ log: pino({ level: "silent" }), idleMs: 100 }).start();
  `;
  const child = spawn(
    process.execPath,
    ["--import", import.meta.resolve("tsx"), "--input-type=module", "-e", script],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.once("exit", (c, s) => resolve([c, s])),
  );
  clearTimeout(timer);
  assert.equal(signal, null, "the process exited by itself, not by our SIGKILL");
  assert.equal(code, 0, stderr);
});

void test("a gc that throws is logged once as memory_relief_unavailable and relief stops; nothing throws", async (t) => {
  const g = globalThis as { gc?: unknown };
  g.gc = () => {
    throw new Error("no collection today");
  };
  t.after(() => delete g.gc);
  const { log, lines } = capture();
  const relief = new MemoryRelief({ log, idleMs: 100 });
  t.after(() => relief.close());
  relief.start();
  await waitFor(() => lines.find((l) => l["event"] === "memory_relief_unavailable"), {
    timeoutMs: 10_000,
    what: "the warning",
  });
  await sleep(500);
  assert.deepEqual(
    lines.map((l) => l["event"]),
    ["memory_relief_unavailable"],
  );
});
