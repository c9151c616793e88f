// @clawker/proto: the generated code of the three wire-contract services and the scope maps.

/** clawker.admin.v1: AdminService (CLI -> control plane), its messages and enums. */
export * as admin from "./gen/clawker/admin/v1/admin.js";
/** clawker.agent.v1: AgentService (agent -> control plane). */
export * as agent from "./gen/clawker/agent/v1/agent.js";
/** clawker.clawkerd.v1: ClawkerdService (control plane -> clawkerd), mTLS only. */
export * as clawkerd from "./gen/clawker/clawkerd/v1/clawkerd.js";
/** clawker.jobs.v1: JobService (CLI -> control plane -> clawkerd), our own service (API.md §6). */
export * as jobs from "./gen/clawker/jobs/v1/jobs.js";
export * from "./scopes.js";
export * from "./agent-bootstrap.js";
export * from "./error-info.js";
