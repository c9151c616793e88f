// The start-up timeline: one `startup_step` record per start-up step in the daemon's normal info
// log, with when it began and how long it took, both in ms since the process was exec'd
// (performance.now() counts from Node's time origin, the process start). Steps that run side by
// side overlap in it; the critical path is the chain of steps the `ready` record waited for.
import { performance } from "node:perf_hooks";
import type { Logger } from "pino";

/** How a step ended: it returned, or it threw (start-up then fails). */
export type StartupStepOutcome = "ok" | "failed";

/** Logs start-up steps as `startup_step` records (`step`, `startMs` since exec, `ms`, `outcome`). */
export class StartupTimeline {
  readonly #log: Logger;

  constructor(log: Logger) {
    this.#log = log;
  }

  /** Milliseconds since the process was exec'd. */
  static sinceExecMs(): number {
    return performance.now();
  }

  /** Runs `fn` as the step `name` and logs it when it settles; a throw is logged `failed` and rethrown. */
  async step<T>(name: string, fn: () => T | Promise<T>): Promise<T> {
    const startMs = performance.now();
    try {
      const value = await fn();
      this.record(name, startMs, performance.now());
      return value;
    } catch (err) {
      this.record(name, startMs, performance.now(), "failed");
      throw err;
    }
  }

  /** Runs the synchronous `fn` as the step `name` (no await, so nothing else runs in between). */
  stepSync<T>(name: string, fn: () => T): T {
    const startMs = performance.now();
    try {
      const value = fn();
      this.record(name, startMs, performance.now());
      return value;
    } catch (err) {
      this.record(name, startMs, performance.now(), "failed");
      throw err;
    }
  }

  /** Logs a step measured elsewhere (module loading, which happens before there is a logger). */
  record(name: string, startMs: number, endMs: number, outcome: StartupStepOutcome = "ok"): void {
    this.#log.info(
      {
        event: "startup_step",
        step: name,
        startMs: Math.round(startMs),
        ms: Math.round(endMs - startMs),
        outcome,
      },
      "start-up step",
    );
  }
}
