// DNS gate failures: one stable reason per failure class, so the daemon (over the control channel)
// and tests decide on `reason`, never on message text.

/** Why a DNS gate operation failed. */
export type DnsGateReason =
  | "invalid_policy"
  | "invalid_config"
  | "bind_failed"
  | "closed"
  | "upstream_timeout"
  | "upstream_failed"
  | "cache_write_failed"
  | "bad_request";

/** A DNS gate failure with a stable `reason`. */
export class DnsGateError extends Error {
  override readonly name: string = "DnsGateError";
  /** The stable machine-readable cause. */
  readonly reason: DnsGateReason;

  constructor(reason: DnsGateReason, message: string, options?: ErrorOptions) {
    super(message, options);
    this.reason = reason;
  }
}

/** One problem with one field of a policy or config: `rules[3].pattern: ...`. */
export interface FieldProblem {
  readonly path: string;
  readonly message: string;
}

const MESSAGE_PROBLEMS = 5;

/** Joins problems for a message: the first few, then how many more. */
export function describeProblems(what: string, problems: readonly FieldProblem[]): string {
  const shown = problems
    .slice(0, MESSAGE_PROBLEMS)
    .map((p) => (p.path === "" ? p.message : `${p.path}: ${p.message}`));
  const more = problems.length - shown.length;
  return `${what}: ${shown.join("; ")}${more > 0 ? ` (and ${more} more)` : ""}`;
}

/** A policy was refused; every problem is listed, and the policy in force did not change. */
export class InvalidPolicyError extends DnsGateError {
  override readonly name = "InvalidPolicyError";
  /** Every problem found. */
  readonly problems: readonly FieldProblem[];

  constructor(problems: readonly FieldProblem[]) {
    super("invalid_policy", describeProblems("invalid DNS policy", problems));
    this.problems = problems;
  }
}

/** The process config was refused; every problem is listed, and nothing was bound. */
export class InvalidConfigError extends DnsGateError {
  override readonly name = "InvalidConfigError";
  /** Every problem found. */
  readonly problems: readonly FieldProblem[];

  constructor(problems: readonly FieldProblem[]) {
    super("invalid_config", describeProblems("invalid DNS gate config", problems));
    this.problems = problems;
  }
}

/** A caller's value quoted for a message: JSON quoting (no forged text), cut at 80 characters. */
export function quote(value: string): string {
  return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}...` : value);
}
