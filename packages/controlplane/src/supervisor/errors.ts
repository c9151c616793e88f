// Typed supervisor failures: each has a stable `reason` that callers switch on (never the message).

/** Every reason a supervisor operation can fail with. */
export type SupervisorReason =
  | "executable_not_found"
  | "spawn_failed"
  | "duplicate_helper"
  | "unknown_helper"
  | "shutting_down"
  | "exited_before_healthy"
  | "health_timeout"
  | "health_aborted"
  | "not_ours"
  | "record_failed"
  | "already_started"
  | "leftover_survived"
  | "forced_kill";

/** Base class of every supervisor error; `reason` is stable, the message is for humans. */
export class SupervisorError extends Error {
  override readonly name: string = "SupervisorError";
  /** The stable machine-readable cause. */
  readonly reason: SupervisorReason;
  /** The helper the failure concerns. */
  readonly helper: string;

  constructor(reason: SupervisorReason, helper: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.reason = reason;
    this.helper = helper;
  }
}

/** The executable could not be spawned: not found (ENOENT), not executable (EACCES), bad cwd, ... */
export class SpawnError extends SupervisorError {
  override readonly name = "SpawnError";
  /** The errno code from spawn(2), e.g. "ENOENT" or "EACCES". */
  readonly code: string | undefined;

  constructor(helper: string, file: string, cause: NodeJS.ErrnoException) {
    super(
      cause.code === "ENOENT" ? "executable_not_found" : "spawn_failed",
      helper,
      `helper ${helper}: cannot spawn ${file}: ${cause.code ?? cause.message}`,
      { cause },
    );
    this.code = cause.code;
  }
}

/** The helper exited (or was killed) before its health endpoint answered 200. */
export class HelperExitedError extends SupervisorError {
  override readonly name = "HelperExitedError";
  /** Exit code, or null when a signal ended it. */
  readonly code: number | null;
  /** The terminating signal, or null. */
  readonly signal: NodeJS.Signals | null;

  constructor(helper: string, code: number | null, signal: NodeJS.Signals | null) {
    super(
      "exited_before_healthy",
      helper,
      `helper ${helper} exited before becoming healthy (code ${code}, signal ${signal})`,
    );
    this.code = code;
    this.signal = signal;
  }
}

/** The health budget ran out; `cause` is the last probe failure. */
export class HealthTimeoutError extends SupervisorError {
  override readonly name = "HealthTimeoutError";
  /** How many probes were sent. */
  readonly attempts: number;

  constructor(helper: string, timeoutMs: number, attempts: number, cause: unknown) {
    super(
      "health_timeout",
      helper,
      `helper ${helper} not healthy after ${timeoutMs} ms (${attempts} probes)`,
      cause === undefined ? undefined : { cause },
    );
    this.attempts = attempts;
  }
}

/** The caller's signal aborted the wait; `cause` is the signal's reason. */
export class HealthAbortedError extends SupervisorError {
  override readonly name = "HealthAbortedError";

  constructor(helper: string, cause: unknown) {
    super("health_aborted", helper, `waiting for helper ${helper} to become healthy was aborted`, { cause });
  }
}

/**
 * A 200 on the helper's health URL that lacks the instance nonce we started it with: some other
 * process (an orphan of a previous instance, anything else) holds the address.
 */
export class HelperNotOursError extends SupervisorError {
  override readonly name = "HelperNotOursError";
  /** The URL that answered. */
  readonly url: string;

  constructor(helper: string, url: string) {
    super(
      "not_ours",
      helper,
      `helper ${helper}: ${url} answered 200 but not with the instance nonce this control plane started it with: another process holds that address (a helper of an earlier instance?); stop it and start again`,
    );
    this.url = url;
  }
}

/** Helpers that were still running at the shutdown deadline and had to be SIGKILLed. */
export class ForcedStopError extends SupervisorError {
  override readonly name = "ForcedStopError";
  /** The helpers that needed SIGKILL, in the order they were stopped. */
  readonly helpers: readonly string[];

  constructor(helpers: readonly string[]) {
    super(
      "forced_kill",
      helpers.join(","),
      `helper${helpers.length === 1 ? "" : "s"} ${helpers.join(", ")} did not stop on SIGTERM before the deadline and ${helpers.length === 1 ? "was" : "were"} SIGKILLed`,
    );
    this.helpers = helpers;
  }
}
