// Where the time of a job's start goes (issue 13's first-byte figure): milestones in ms since
// StartJob reached clawkerd, logged once per job at debug level as `job_timeline` (when the first
// output chunk went to a watcher, or when the job ended without one), so a slow start can be
// taken apart without a profiler.
import { performance } from "node:perf_hooks";

/**
 * A point in a job's start, in the order they happen; `watchAttached` (the first watcher's call
 * arrived) is on the watcher's own chain and may come before or after the job's output.
 */
export type JobMilestone =
  "spawned" | "gateOpened" | "firstByte" | "logWritten" | "watchAttached" | "firstChunkSent";

/** The milestones of one job's start. */
export class JobTimeline {
  readonly #t0 = performance.now();
  readonly #marks: Partial<Record<JobMilestone, number>> = {};
  #logged = false;

  /** Records `m` now (the first time only). */
  mark(m: JobMilestone): void {
    // Rounded to µs: the log line stays short and sub-µs digits are noise.
    this.#marks[m] ??= Math.round((performance.now() - this.#t0) * 1000) / 1000;
  }

  /** The milestones so far (ms since StartJob arrived). */
  get marks(): Readonly<Partial<Record<JobMilestone, number>>> {
    return this.#marks;
  }

  /**
   * When StartJob arrived, in ms since the Unix epoch (µs precision): lines of other processes
   * (the control plane's, a bench's) can be put on the same clock.
   */
  get t0UnixMs(): number {
    return Math.round((performance.timeOrigin + this.#t0) * 1000) / 1000;
  }

  /** True the first time it is called: the line is due. */
  takeLog(): boolean {
    if (this.#logged) return false;
    this.#logged = true;
    return true;
  }
}
