// Errors thrown by the overseer. Only construction and subscription with bad options throw;
// publishing never does.

/** Stable reasons an OverseerError can carry. */
export type OverseerErrorReason = "invalid_option";

/** An overseer error with a stable `reason` for callers to branch on. */
export class OverseerError extends Error {
  override readonly name = "OverseerError";
  readonly reason: OverseerErrorReason;

  constructor(reason: OverseerErrorReason, message: string, options?: ErrorOptions) {
    super(message, options);
    this.reason = reason;
  }
}

/** Checks a queue capacity: a positive safe integer, or throws `invalid_option`. */
export function checkCapacity(what: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new OverseerError("invalid_option", `${what} must be a positive integer, got ${String(value)}`);
  }
  return value;
}
