// @clawker/proto: the generated code of the three wire-contract services and our own, the scope maps and the
// error shape (ClawkerError, the per-boundary reason tables, the ErrorInfo status detail).

/** clawker.admin.v1: AdminService (CLI -> control plane), its messages and enums. */
export * as admin from "./gen/clawker/admin/v1/admin.js";
/** clawker.agent.v1: AgentService (agent -> control plane). */
export * as agent from "./gen/clawker/agent/v1/agent.js";
/** clawker.clawkerd.v1: ClawkerdService (control plane -> clawkerd), mTLS only. */
export * as clawkerd from "./gen/clawker/clawkerd/v1/clawkerd.js";
/** clawker.jobs.v1: JobService (CLI -> control plane -> clawkerd), our own service (API.md §6). */
export * as jobs from "./gen/clawker/jobs/v1/jobs.js";
/** clawker.egress.v1: EgressService (admin) and AgentEgressService (agents), our own (API.md §6). */
export * as egress from "./gen/clawker/egress/v1/egress.js";
/** clawker.trust.v1: FirewallTrustService (control plane -> clawkerd), our own (API.md §6). */
export * as trust from "./gen/clawker/trust/v1/trust.js";
export * from "./scopes.js";
export * from "./agent-bootstrap.js";
export * from "./status-details.js";
export * from "./errors.js";
export * from "./error-reasons.js";
/** google.rpc.Status (Google's status.proto), the message in `grpc-status-details-bin`. */
export { Status as RpcStatus } from "./gen/google/rpc/status.js";
/** google.rpc.ErrorInfo (Google's error_details.proto), the detail every error status carries. */
export { ErrorInfo } from "./gen/google/rpc/error_details.js";
