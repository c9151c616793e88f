// Shared unary-call load shapes: sequential per-call latency and fixed-concurrency throughput.
import { performance } from "node:perf_hooks";

/** Per-call latencies (ms) of `calls` sequential invocations. */
export async function sequentialLatencies(calls: number, call: () => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < calls; i++) {
    const start = performance.now();
    await call();
    out.push(performance.now() - start);
  }
  return out;
}

/** Calls per second with `concurrency` callers sharing `calls` invocations. */
export async function concurrentThroughput(
  calls: number,
  concurrency: number,
  call: () => Promise<unknown>,
): Promise<number> {
  let next = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < calls) {
        next++;
        await call();
      }
    }),
  );
  return calls / ((performance.now() - start) / 1000);
}
