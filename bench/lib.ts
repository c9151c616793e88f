// The benchmark kit: every `bench/*.bench.ts` default-exports a `Benchmark`; `bench/run.ts` runs
// them, repeats each measurement (warm-up + runs) and writes JSON and a markdown table.
import { performance } from "node:perf_hooks";

/** One reported figure. `better` tells readers which direction is good. */
export interface Figure {
  readonly name: string;
  readonly unit: string;
  readonly median: number;
  readonly p99: number;
  readonly min: number;
  readonly max: number;
  readonly runs: number;
  readonly better: "lower" | "higher";
  /** The target the issue names, e.g. "<= 3 ms"; shown beside the figure. */
  readonly target?: string;
}

/** A benchmark file's default export. `run` returns its figures; it owns its own setup/teardown. */
export interface Benchmark {
  readonly name: string;
  /** Why this benchmark is skipped here (missing root, Docker, ...), or undefined to run it. */
  readonly skip?: () => string | undefined;
  run(ctx: BenchContext): Promise<Figure[]>;
}

/** Passed to each benchmark: how many runs to do and a log line sink. */
export interface BenchContext {
  readonly warmup: number;
  readonly runs: number;
  log(message: string): void;
}

/** Summarises samples into a Figure (median and nearest-rank p99). */
export function summarise(
  name: string,
  unit: string,
  samples: readonly number[],
  better: Figure["better"],
  target?: string,
): Figure {
  if (samples.length === 0) throw new Error(`benchmark ${name}: no samples`);
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
  const mid = sorted.length / 2;
  const median = sorted.length % 2 === 1 ? sorted[Math.floor(mid)]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  return {
    name,
    unit,
    median,
    p99: at(0.99),
    min: sorted[0]!,
    max: sorted[sorted.length - 1]!,
    runs: samples.length,
    better,
    ...(target === undefined ? {} : { target }),
  };
}

/** Runs `fn` warm-up times, then `runs` times, returning each run's result. */
export async function repeat<T>(ctx: BenchContext, fn: () => Promise<T>): Promise<T[]> {
  for (let i = 0; i < ctx.warmup; i++) await fn();
  const out: T[] = [];
  for (let i = 0; i < ctx.runs; i++) out.push(await fn());
  return out;
}

/** Milliseconds taken by `fn`. */
export async function timeMs(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return performance.now() - start;
}

/** This process's user + system CPU time, in ms. */
export function ownCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}
