// The auth server's start-up timeline: one `startup_step` record per step in its normal info log,
// the same shape as the daemon's (`step`, `startMs` since the process was exec'd, `ms`, `outcome`),
// so a supervisor's log shows where the auth server's boot, the daemon's critical path, goes.
// performance.now() counts from Node's time origin, the process start.
import { performance } from "node:perf_hooks";
import type { Logger } from "pino";

/** Logs start-up steps as `startup_step` records. */
export class StartupSteps {
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

  /** Logs a step measured elsewhere (module loading, before there is a logger). */
  record(name: string, startMs: number, endMs: number, outcome: "ok" | "failed" = "ok"): void {
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
