// Overseer event bus: events/s through one topic with 4 subscribers, and the cost of one
// publish (also while a subscriber is stalled, which must not make publishing slower).
import { performance } from "node:perf_hooks";
import { setImmediate as tick } from "node:timers/promises";
import { Topic } from "@clawker/overseer";
import { type Benchmark, type BenchContext, type Figure, repeat, summarise } from "./lib.js";

interface BenchEvent {
  readonly type: "bench.tick";
  readonly n: number;
  readonly time: number;
}

const SUBSCRIBERS = 4;
const EVENTS_PER_RUN = 300_000;
const LATENCY_CALLS = 100_000;
/** Publishes per macrotask turn; below the queue capacity so a keeping-up subscriber never drops. */
const BATCH = 1024;
const CAPACITY = 4096;

/** Publishes EVENTS_PER_RUN events to 4 subscribers and waits until every one has them all. */
async function throughputRun(handlers: "sync" | "async"): Promise<number> {
  const topic = new Topic<BenchEvent>({ name: "bench", capacity: CAPACITY });
  const sums = new Array<number>(SUBSCRIBERS).fill(0);
  for (let s = 0; s < SUBSCRIBERS; s++) {
    if (handlers === "sync") {
      topic.subscribe((e) => {
        sums[s]! += e.n;
      });
    } else {
      topic.subscribe(async (e) => {
        sums[s]! += e.n;
        await Promise.resolve();
      });
    }
  }
  const start = performance.now();
  for (let i = 0; i < EVENTS_PER_RUN;) {
    const end = Math.min(EVENTS_PER_RUN, i + BATCH);
    for (; i < end; i++) topic.publish({ type: "bench.tick", n: i, time: i });
    await tick(); // the publisher yields like a real event source; subscribers drain meanwhile
  }
  await topic.close(); // drains and waits for every handler
  const seconds = (performance.now() - start) / 1000;
  const st = topic.stats();
  const expectedSum = (EVENTS_PER_RUN * (EVENTS_PER_RUN - 1)) / 2;
  if (
    st.dropped !== 0 ||
    st.delivered !== SUBSCRIBERS * EVENTS_PER_RUN ||
    sums.some((x) => x !== expectedSum)
  ) {
    throw new Error(`throughput run lost events: ${JSON.stringify(st)}`);
  }
  return EVENTS_PER_RUN / seconds;
}

/** Per-call publish latencies (µs) with 4 subscribers; with `stalled`, one never finishes a handler. */
async function latencyRun(stalled: boolean): Promise<{ p50: number; p99: number; dropped: number }> {
  const topic = new Topic<BenchEvent>({ name: "bench", capacity: CAPACITY });
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  for (let s = 0; s < SUBSCRIBERS; s++) {
    if (stalled && s === 0) topic.subscribe(() => held);
    else topic.subscribe(() => {});
  }
  const samples = new Float64Array(LATENCY_CALLS);
  for (let i = 0; i < LATENCY_CALLS;) {
    const end = Math.min(LATENCY_CALLS, i + BATCH);
    for (; i < end; i++) {
      const event: BenchEvent = { type: "bench.tick", n: i, time: i };
      const t0 = process.hrtime.bigint();
      topic.publish(event);
      samples[i] = Number(process.hrtime.bigint() - t0) / 1000;
    }
    await tick();
  }
  release();
  await topic.close();
  samples.sort();
  const at = (q: number): number => samples[Math.min(samples.length - 1, Math.ceil(q * samples.length) - 1)]!;
  return { p50: at(0.5), p99: at(0.99), dropped: topic.stats().dropped };
}

const bench: Benchmark = {
  name: "overseer",
  async run(ctx: BenchContext): Promise<Figure[]> {
    const sync = await repeat(ctx, () => throughputRun("sync"));
    ctx.log(`sync handlers: ${sync.map((r) => Math.round(r)).join(", ")} events/s`);
    const asyncRates = await repeat(ctx, () => throughputRun("async"));
    ctx.log(`async handlers: ${asyncRates.map((r) => Math.round(r)).join(", ")} events/s`);
    const lat = await repeat(ctx, () => latencyRun(false));
    const stalled = await repeat(ctx, () => latencyRun(true));
    ctx.log(`stalled subscriber dropped ${stalled.map((r) => r.dropped).join(", ")} events per run`);
    return [
      summarise("events/s, 1 topic, 4 subscribers (sync handlers)", "events/s", sync, "higher", ">= 200k"),
      summarise(
        "events/s, 1 topic, 4 subscribers (async handlers)",
        "events/s",
        asyncRates,
        "higher",
        ">= 200k",
      ),
      summarise(
        "publish latency p50 (4 subscribers)",
        "µs",
        lat.map((r) => r.p50),
        "lower",
      ),
      summarise(
        "publish latency p99 (4 subscribers)",
        "µs",
        lat.map((r) => r.p99),
        "lower",
      ),
      summarise(
        "publish latency p50, one subscriber stalled",
        "µs",
        stalled.map((r) => r.p50),
        "lower",
      ),
      summarise(
        "publish latency p99, one subscriber stalled",
        "µs",
        stalled.map((r) => r.p99),
        "lower",
      ),
    ];
  },
};

export default bench;
