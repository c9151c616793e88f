// Typed failures of the eBPF manager client: callers switch on `reason`, never on the message.

/**
 * Every reason a manager call can fail with. `invalid_argument` is raised before anything is sent;
 * `bad_request`, `not_found`, `too_large`, `unknown_op` and `internal` are the manager's own
 * reasons; the rest are transport failures.
 */
export type EbpfReason =
  | "invalid_argument"
  | "bad_request"
  | "not_found"
  | "too_large"
  | "unknown_op"
  | "internal"
  | "timeout"
  | "unavailable"
  | "protocol"
  | "closed";

const managerReasons: ReadonlySet<string> = new Set([
  "bad_request",
  "not_found",
  "too_large",
  "unknown_op",
  "internal",
]);

/** Maps a reason string from the manager to an EbpfReason (unknown ones become `internal`). */
export function managerReason(reason: unknown): EbpfReason {
  return typeof reason === "string" && managerReasons.has(reason) ? (reason as EbpfReason) : "internal";
}

/** A failed manager call; `reason` is stable, the message is for humans. */
export class EbpfError extends Error {
  override readonly name: string = "EbpfError";
  /** The stable machine-readable cause. */
  readonly reason: EbpfReason;
  /** The protocol op that failed, when known. */
  readonly op: string | undefined;

  constructor(reason: EbpfReason, message: string, op?: string, options?: ErrorOptions) {
    super(message, options);
    this.reason = reason;
    this.op = op;
  }
}

/** Why the enforcement could not start or act. */
export type EnforcementReason =
  | "cgroup2_missing"
  | "bpffs_missing"
  | "invalid_cgroup_parent"
  | "docker_unavailable"
  | "manager_unavailable"
  | "not_running"
  | "unknown_container";

/** A failure of the Enforcement (start-up or an operation); `reason` is stable. */
export class EnforcementError extends Error {
  override readonly name: string = "EnforcementError";
  /** The stable machine-readable cause. */
  readonly reason: EnforcementReason;

  constructor(reason: EnforcementReason, message: string, options?: ErrorOptions) {
    super(message, options);
    this.reason = reason;
  }
}
