// Runs the daemon's drain: named steps in one fixed order under one deadline for the whole drain
// (not a grace per step that adds up). Every step runs even when an earlier one failed; each logs
// one `drain_step` record, and the failed ones are returned so that the exit code can say so.
import type { Logger } from "pino";

/** What a step may ask about the time it has: the drain's deadline is shared by all steps. */
export interface DrainBudget {
  /** Milliseconds until the drain's deadline; 0 once it has passed. */
  remainingMs(): number;
}

/** One drain step: a stable name for the logs and what it does. */
export interface DrainStep {
  readonly name: string;
  readonly run: (budget: DrainBudget) => unknown;
}

/** How a step ended: it finished, it threw/rejected, or it was still running at the hard deadline. */
export type DrainStepOutcome = "ok" | "failed" | "timed_out";

/** The drain's result: the names of the steps that did not end `ok`, in order. */
export interface DrainResult {
  readonly failed: readonly string[];
  readonly ms: number;
}

/** Options of runDrain. */
export interface DrainOptions {
  /** The whole drain's budget: steps' graces end here (SIGKILL time for helpers). */
  readonly deadlineMs: number;
  /**
   * Past the deadline, how long the runner still waits for a step (the kernel reaping what was
   * SIGKILLed at the deadline) before it records `timed_out` and moves on.
   */
  readonly overrunMs?: number;
  readonly log: Logger;
}

/** Default wait past the deadline; with the 8 s default drain, 9 s stays under Docker's 10 s stop grace. */
export const DEFAULT_OVERRUN_MS = 1_000;

/** Runs `steps` in order under one deadline; never rejects. */
export async function runDrain(steps: readonly DrainStep[], options: DrainOptions): Promise<DrainResult> {
  const began = Date.now();
  const deadline = began + options.deadlineMs;
  const hardDeadline = deadline + (options.overrunMs ?? DEFAULT_OVERRUN_MS);
  const budget: DrainBudget = { remainingMs: () => Math.max(0, deadline - Date.now()) };
  const failed: string[] = [];
  for (const step of steps) {
    const started = Date.now();
    const { outcome, err } = await settle(step, budget, Math.max(0, hardDeadline - started), options.log);
    const ms = Date.now() - started;
    if (outcome === "ok") {
      options.log.info({ event: "drain_step", step: step.name, outcome, ms }, "drain step done");
    } else {
      failed.push(step.name);
      options.log.error({ event: "drain_step", step: step.name, outcome, ms, err }, "drain step failed");
    }
  }
  return { failed, ms: Date.now() - began };
}

async function settle(
  step: DrainStep,
  budget: DrainBudget,
  boundMs: number,
  log: Logger,
): Promise<{ outcome: DrainStepOutcome; err?: unknown }> {
  // then() turns a synchronous throw into a rejection, and lets a synchronous step finish before
  // a zero bound's timer fires.
  const running = Promise.resolve()
    .then(() => step.run(budget))
    .then(() => "ok" as const);
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<"timed_out">(
    (resolve) => (timer = setTimeout(() => resolve("timed_out"), boundMs)),
  );
  try {
    const first = await Promise.race([running, timedOut]);
    if (first === "ok") return { outcome: "ok" };
    // Still running: a failure it reports later is logged, never lost.
    running.catch((err: unknown) =>
      log.error(
        { event: "drain_step_late_failure", step: step.name, err },
        "drain step failed after its time",
      ),
    );
    return { outcome: "timed_out", err: new Error(`drain step ${step.name} still running at the deadline`) };
  } catch (err) {
    return { outcome: "failed", err };
  } finally {
    clearTimeout(timer);
  }
}
