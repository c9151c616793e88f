// Firewall failures: one stable reason per failure class and one exhaustive table from reason to
// gRPC status (API.md §5), in the ErrorInfo domain `firewall.clawker.dev` (API.md §6 keeps
// upstream's for them), so handlers and clients never decide on message text.
import { status, type StatusObject } from "@grpc/grpc-js";
import { ClawkerError, ErrorTable, FIREWALL_ERROR_DOMAIN } from "@clawker/proto";

export { FIREWALL_ERROR_DOMAIN };

/** Why a firewall operation failed; stable strings for logs, tests and ErrorInfo. */
export type FirewallReason =
  | "invalid_rule"
  | "invalid_selector"
  | "floor_rule"
  | "queue_closed"
  | "reconcile_failed"
  | "saved_not_applied"
  | "invalid_request"
  | "unknown_container"
  | "unknown_triage_item"
  | "too_many_requests"
  | "not_running"
  | "not_configured"
  | "not_enforced"
  | "stack_failed"
  | "resolve_failed"
  | "invalid_floor_file"
  | "store_schema"
  | "internal";

/** The single table from reason to gRPC code; exhaustive by construction. */
export const firewallReasonStatus = {
  invalid_rule: status.INVALID_ARGUMENT,
  invalid_selector: status.INVALID_ARGUMENT,
  // The request is well formed but collides with the operator's floor file.
  floor_rule: status.FAILED_PRECONDITION,
  // API.md §5: the queue is closed while the control plane drains.
  queue_closed: status.UNAVAILABLE,
  // The proxy or DNS gate could not take the rules; retrying the reload may work.
  reconcile_failed: status.UNAVAILABLE,
  saved_not_applied: status.UNAVAILABLE,
  // A malformed request that is not a rule (a container id, a bypass duration, a hostname).
  invalid_request: status.INVALID_ARGUMENT,
  unknown_container: status.NOT_FOUND,
  // ApproveEgress / DismissEgress: no denial group or pending request by that id (any more).
  unknown_triage_item: status.NOT_FOUND,
  // RequestEgress: the agent asked too often, or has too many requests pending.
  too_many_requests: status.RESOURCE_EXHAUSTED,
  // Enable, disable and bypass need the stack up (FirewallInit).
  not_running: status.FAILED_PRECONDITION,
  // Neither the config nor the agents' Docker network says where the proxy listens.
  not_configured: status.FAILED_PRECONDITION,
  // No eBPF enforcement steers agents to the proxy: the stack would enforce nothing.
  not_enforced: status.FAILED_PRECONDITION,
  // The proxy (or DNS gate) did not start: e.g. HAProxy missing or a port taken.
  stack_failed: status.FAILED_PRECONDITION,
  // The upstream resolvers did not answer.
  resolve_failed: status.UNAVAILABLE,
  // Start-up failures: never answered to a caller, INTERNAL if one ever leaks.
  invalid_floor_file: status.INTERNAL,
  store_schema: status.INTERNAL,
  internal: status.INTERNAL,
} as const satisfies Record<FirewallReason, status>;

/** The firewall's table: its reasons' codes, answered in `firewall.clawker.dev`. */
export const FIREWALL_ERRORS = new ErrorTable<FirewallReason>(FIREWALL_ERROR_DOMAIN, firewallReasonStatus);

/** A firewall failure with a stable `reason`; its message is written for the caller. */
export class FirewallError extends ClawkerError<FirewallReason> {
  override readonly name: string = "FirewallError";
}

/** One problem with one field of one rule: `rules[3].path_rules[0].methods[1]: ...`. */
export interface RuleProblem {
  /** The rule's index in the request (or the floor file), or undefined for a remove selector. */
  readonly index: number | undefined;
  /** The field, in wire (snake_case) names, e.g. `port` or `path_rules[0].path`. */
  readonly field: string;
  /** What is wrong, e.g. `range 80-70 is reversed`. */
  readonly message: string;
}

/** Where a problem is: `rules[3].port`, or just `port` for a remove selector. */
export function problemPath(problem: RuleProblem): string {
  return problem.index === undefined ? problem.field : `rules[${problem.index}].${problem.field}`;
}

/**
 * One or more rules are invalid. Every problem found is listed (the message shows the first few);
 * nothing was written.
 */
export class InvalidRuleError extends FirewallError {
  override readonly name = "InvalidRuleError";
  /** Every problem found, in rule order. */
  readonly problems: readonly RuleProblem[];

  constructor(problems: readonly RuleProblem[]) {
    super("invalid_rule", describeProblems("invalid rule", problems));
    this.problems = problems;
  }
}

/** A remove request that is malformed as a whole (e.g. `all` together with `dst`). */
export class InvalidSelectorError extends FirewallError {
  override readonly name = "InvalidSelectorError";
  constructor(message: string) {
    super("invalid_selector", message);
  }
}

/** The request would change or remove a rule of the floor file, which only the operator edits. */
export class FloorRuleError extends FirewallError {
  override readonly name = "FloorRuleError";
  /** The dedup key of the floor rule involved. */
  readonly key: string;
  constructor(key: string, message: string) {
    super("floor_rule", message);
    this.key = key;
  }
}

/** The action queue is closed (the control plane is draining). */
export class QueueClosedError extends FirewallError {
  override readonly name = "QueueClosedError";
  constructor() {
    super("queue_closed", "firewall is shutting down");
  }
}

/** Applying the stored rules to the proxy and DNS gate failed; `cause` has the detail for logs. */
export class ReconcileError extends FirewallError {
  override readonly name = "ReconcileError";
  constructor(options?: ErrorOptions) {
    super("reconcile_failed", "firewall rules could not be applied", options);
  }
}

/** The text a caller sees when its change is durable but was not applied (yet). */
export const SAVED_NOT_APPLIED_MESSAGE = "rules saved; they will apply on the next reload";

/**
 * The change was written durably but applying it failed: what a handler answers instead of
 * success when it wants an error status for that case. `cause` has the apply failure.
 */
export class SavedNotAppliedError extends FirewallError {
  override readonly name = "SavedNotAppliedError";
  constructor(options?: ErrorOptions) {
    super("saved_not_applied", SAVED_NOT_APPLIED_MESSAGE, options);
  }
}

/** The floor file is unreadable or invalid; every problem is listed with its position. */
export class FloorFileError extends FirewallError {
  override readonly name = "FloorFileError";
  /** Each problem as `<position>: <what>`. */
  readonly problems: readonly string[];
  constructor(path: string, problems: readonly string[], options?: ErrorOptions) {
    super("invalid_floor_file", `floor file ${path}:\n  ${problems.join("\n  ")}`, options);
    this.problems = problems;
  }
}

/**
 * A caller's value quoted for a message: JSON quoting, so quotes and control characters in the
 * input cannot forge message text, and cut at 80 characters.
 */
export function quote(value: string): string {
  return JSON.stringify(value.length > 80 ? `${value.slice(0, 80)}...` : value);
}

const MESSAGE_PROBLEMS = 5;

function describeProblems(what: string, problems: readonly RuleProblem[]): string {
  const shown = problems.slice(0, MESSAGE_PROBLEMS).map((p) => `${problemPath(p)}: ${p.message}`);
  const more = problems.length - shown.length;
  return `${what}: ${shown.join("; ")}${more > 0 ? ` (and ${more} more)` : ""}`;
}

/**
 * The wire status for a firewall failure: the table's code, the error's own message (its text is
 * written for callers) and its ErrorInfo (reason, `firewall.clawker.dev`, metadata) for a
 * FirewallError; anything else is INTERNAL `internal` without its text.
 */
export function firewallStatus(err: unknown): StatusObject {
  if (err instanceof FirewallError) return FIREWALL_ERRORS.statusOf(err);
  return FIREWALL_ERRORS.status("internal", "internal error");
}
