// The stable reasons each service boundary answers with, and their gRPC codes (API.md §5, §6): one
// exhaustive table per boundary, all in the `clawker.dev` domain. The firewall's reasons have a
// table of their own in `firewall.clawker.dev` (controlplane/src/firewall/errors.ts).
import { status } from "@grpc/grpc-js";
import { ErrorTable } from "./errors.js";
import { CLAWKER_ERROR_DOMAIN } from "./status-details.js";

/**
 * What both daemon listeners (admin and agent) answer before or around any handler: the call guard,
 * the AuthInterceptor (one reason per API.md §5 class, never which check failed) and recovery.
 */
export type ListenerReason =
  | "unmapped_method"
  | "missing_or_malformed_token"
  | "token_inactive"
  | "token_unverified"
  | "permission_denied"
  | "undecodable_request"
  | "request_timeout"
  | "internal";

/** The listener reasons' codes; the admin and agent tables both start from it. */
export const LISTENER_ERROR_CODES = {
  unmapped_method: status.UNAUTHENTICATED,
  missing_or_malformed_token: status.UNAUTHENTICATED,
  token_inactive: status.UNAUTHENTICATED,
  token_unverified: status.UNAUTHENTICATED,
  // A missing scope and a wrong client id are one class with one text (API.md §5).
  permission_denied: status.PERMISSION_DENIED,
  undecodable_request: status.INVALID_ARGUMENT,
  request_timeout: status.DEADLINE_EXCEEDED,
  internal: status.INTERNAL,
} as const satisfies Record<ListenerReason, status>;

/** The listener reasons as a table: what the call guard, auth and recovery answer with. */
export const LISTENER_ERRORS = new ErrorTable<ListenerReason>(CLAWKER_ERROR_DOMAIN, LISTENER_ERROR_CODES);

/** The reasons of the admin listener (AdminService, clawker.dev; the firewall's are its own). */
export type AdminReason =
  | ListenerReason
  | "starting_up"
  | "unimplemented"
  | "invalid_argument"
  | "agent_not_found"
  | "agent_ambiguous"
  | "agent_starting"
  | "no_session"
  | "session_closed";

/** The admin listener's table. */
export const ADMIN_ERRORS = new ErrorTable<AdminReason>(CLAWKER_ERROR_DOMAIN, {
  ...LISTENER_ERROR_CODES,
  // The ready gate: the control plane itself is still starting (API.md §5).
  starting_up: status.FAILED_PRECONDITION,
  unimplemented: status.UNIMPLEMENTED,
  // ExecAgent: a malformed request, no registered agent by that name, several, one whose Session
  // is still registering or running its plans, none open, or the Session ended mid-command.
  invalid_argument: status.INVALID_ARGUMENT,
  agent_not_found: status.NOT_FOUND,
  agent_ambiguous: status.FAILED_PRECONDITION,
  agent_starting: status.FAILED_PRECONDITION,
  no_session: status.FAILED_PRECONDITION,
  session_closed: status.UNAVAILABLE,
} satisfies Record<AdminReason, status>);

/** The reasons of the agent listener (AgentService). */
export type AgentReason = ListenerReason | "identity_denied" | "invalid_argument";

/** The agent listener's table. */
export const AGENT_ERRORS = new ErrorTable<AgentReason>(CLAWKER_ERROR_DOMAIN, {
  ...LISTENER_ERROR_CODES,
  // Every identity gate refusal is one reason and one text (API.md §5); the log says which check.
  identity_denied: status.PERMISSION_DENIED,
  invalid_argument: status.INVALID_ARGUMENT,
} satisfies Record<AgentReason, status>);

/** The reasons of clawkerd's server (ClawkerdService). */
export type ClawkerdServerReason =
  "no_client_certificate" | "not_control_plane" | "hello_required" | "internal";

/** clawkerd's table. */
export const CLAWKERD_ERRORS = new ErrorTable<ClawkerdServerReason>(CLAWKER_ERROR_DOMAIN, {
  no_client_certificate: status.UNAUTHENTICATED,
  // Another agent's leaf (wrong CN) or a leaf without client-auth usage: one reason, one text.
  not_control_plane: status.PERMISSION_DENIED,
  hello_required: status.FAILED_PRECONDITION,
  internal: status.INTERNAL,
} satisfies Record<ClawkerdServerReason, status>);

/**
 * The reasons of JobService (clawker.jobs.v1), one table for both servers: clawkerd answers the
 * job's own refusals and the control plane relays them, adding its routing ones. The listeners in
 * front of each (auth, the call guard, the peer pin) answer with their own tables.
 */
export type JobReason =
  | "invalid_argument"
  | "not_found"
  | "agent_not_found"
  | "agent_unavailable"
  | "watcher_too_slow"
  | "internal";

/** JobService's table. */
export const JOB_ERRORS = new ErrorTable<JobReason>(CLAWKER_ERROR_DOMAIN, {
  // A malformed job name, an empty argv, a request naming another agent, limits above the agent's.
  invalid_argument: status.INVALID_ARGUMENT,
  // No job by that name in the agent.
  not_found: status.NOT_FOUND,
  // The control plane: no registered agent by that name, or none with a ready Session / answering.
  agent_not_found: status.NOT_FOUND,
  agent_unavailable: status.UNAVAILABLE,
  // A watcher whose stream stayed full past the stall bound; it may watch again.
  watcher_too_slow: status.RESOURCE_EXHAUSTED,
  internal: status.INTERNAL,
} satisfies Record<JobReason, status>);

/** The reasons of clawkerd's FirewallTrustService (clawker.trust.v1). */
export type TrustReason = "invalid_argument" | "internal";

/** FirewallTrustService's table. */
export const TRUST_ERRORS = new ErrorTable<TrustReason>(CLAWKER_ERROR_DOMAIN, {
  // Not PEM CA certificates only: key material, a leaf, too many or too large. Nothing changed.
  invalid_argument: status.INVALID_ARGUMENT,
  // The file could not be written; the one held before stays.
  internal: status.INTERNAL,
} satisfies Record<TrustReason, status>);
