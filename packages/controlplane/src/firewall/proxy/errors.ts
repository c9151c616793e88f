// Typed failures of the egress proxy driver: callers switch on `reason`, never on the message.

/**
 * Every reason a proxy operation can fail with. `invalid_policy` and `invalid_config` are raised
 * before anything is written or sent; `unavailable`, `timeout` and `refused` come from the runtime
 * API (nothing answered, nothing answered in time, HAProxy answered something other than success);
 * `count_mismatch` means a pushed map version did not hold every entry, so it was not committed;
 * `revoke_failed` means sessions of a retired rule version could not be destroyed.
 */
export type ProxyErrorReason =
  | "invalid_policy"
  | "invalid_config"
  | "invalid_argument"
  | "not_started"
  | "closed"
  | "start_failed"
  | "unavailable"
  | "timeout"
  | "refused"
  | "count_mismatch"
  | "apply_failed"
  | "revoke_failed";

/** A failed proxy operation; `reason` is stable, the message is for humans (never holds key material). */
export class ProxyError extends Error {
  override readonly name = "ProxyError";
  /** The stable machine-readable cause. */
  readonly reason: ProxyErrorReason;

  constructor(reason: ProxyErrorReason, message: string, options?: ErrorOptions) {
    super(message, options);
    this.reason = reason;
  }
}
