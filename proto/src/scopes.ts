// The OAuth2 scope each RPC requires (API.md §4), keyed by full method path.
//
// The per-service maps are checked against the generated service definitions with `satisfies`, so
// adding an RPC to admin.proto or agent.proto without giving it a scope fails to compile.
// ClawkerdService is deliberately absent: the control plane calls clawkerd over mTLS only, with no
// bearer token, so none of its methods has (or may be given) a scope.
import { AdminServiceService } from "./gen/clawker/admin/v1/admin.js";
import { AgentServiceService } from "./gen/clawker/agent/v1/agent.js";
import { AgentEgressServiceService, EgressServiceService } from "./gen/clawker/egress/v1/egress.js";
import { AgentUsageServiceService, JobServiceService } from "./gen/clawker/jobs/v1/jobs.js";

/** Marks a method callable without a bearer token (mTLS still applies). Not an OAuth2 scope. */
export const PUBLIC_SCOPE = "public";
/** The scope of every AdminService method except GetSystemTime. */
export const ADMIN_SCOPE = "admin";
/** The scope an agent needs to call AgentService.Register. */
export const AGENT_REGISTER_SCOPE = "agent:self:register";
/** The scope an agent needs to ask for a destination (AgentEgressService, our own). */
export const AGENT_REQUEST_SCOPE = "agent:self:request";

/** What a method requires: no token (PUBLIC_SCOPE) or a token carrying that OAuth2 scope. */
export type Scope =
  typeof PUBLIC_SCOPE | typeof ADMIN_SCOPE | typeof AGENT_REGISTER_SCOPE | typeof AGENT_REQUEST_SCOPE;

/** A complete scope map for one generated service definition: one entry per RPC, no more. */
export type ServiceScopes<Service> = Record<keyof Service, Scope>;

/** AdminService: `admin` everywhere (WatchSOS included) except the public GetSystemTime. */
export const ADMIN_SERVICE_SCOPES = {
  firewallInit: ADMIN_SCOPE,
  firewallRemove: ADMIN_SCOPE,
  firewallEnable: ADMIN_SCOPE,
  firewallDisable: ADMIN_SCOPE,
  firewallBypass: ADMIN_SCOPE,
  firewallAddRules: ADMIN_SCOPE,
  firewallRemoveRule: ADMIN_SCOPE,
  firewallListRules: ADMIN_SCOPE,
  firewallReload: ADMIN_SCOPE,
  firewallStatus: ADMIN_SCOPE,
  firewallRotateCa: ADMIN_SCOPE,
  firewallSyncRoutes: ADMIN_SCOPE,
  firewallResolveHostname: ADMIN_SCOPE,
  listAgents: ADMIN_SCOPE,
  // The CLI reads the control plane's clock before it can mint a token, so this one is open.
  getSystemTime: PUBLIC_SCOPE,
  watchSos: ADMIN_SCOPE,
  // Our extension beyond the Go contract (admin.proto): runs a command in an agent.
  execAgent: ADMIN_SCOPE,
} as const satisfies ServiceScopes<typeof AdminServiceService>;

/** AgentService: Register needs `agent:self:register`. */
export const AGENT_SERVICE_SCOPES = {
  register: AGENT_REGISTER_SCOPE,
} as const satisfies ServiceScopes<typeof AgentServiceService>;

/**
 * JobService (our own service, API.md §6) on the admin listener: `admin` everywhere. clawkerd
 * serves the same definition on its own listener, mTLS only, so it is not in METHOD_SCOPES twice.
 */
export const JOB_SERVICE_SCOPES = {
  startJob: ADMIN_SCOPE,
  stopJob: ADMIN_SCOPE,
  getJobStatus: ADMIN_SCOPE,
  listJobs: ADMIN_SCOPE,
  watchJobOutput: ADMIN_SCOPE,
} as const satisfies ServiceScopes<typeof JobServiceService>;

/** AgentUsageService (our own, API.md §6) on the admin listener: `admin`. */
export const AGENT_USAGE_SERVICE_SCOPES = {
  listAgentUsage: ADMIN_SCOPE,
} as const satisfies ServiceScopes<typeof AgentUsageServiceService>;

/** EgressService (our own, API.md §6) on the admin listener: `admin` everywhere. */
export const EGRESS_SERVICE_SCOPES = {
  watchFirewallEvents: ADMIN_SCOPE,
  listFirewallDenials: ADMIN_SCOPE,
  approveEgress: ADMIN_SCOPE,
  dismissEgress: ADMIN_SCOPE,
} as const satisfies ServiceScopes<typeof EgressServiceService>;

/** AgentEgressService (our own) on the agent listener: `agent:self:request`. */
export const AGENT_EGRESS_SERVICE_SCOPES = {
  requestEgress: AGENT_REQUEST_SCOPE,
} as const satisfies ServiceScopes<typeof AgentEgressServiceService>;

/** Pairs every method of a service definition with its scope, keyed by the method's full path. */
function byPath<Method extends string>(
  service: Record<Method, { readonly path: string }>,
  scopes: Record<Method, Scope>,
): Array<[string, Scope]> {
  return (Object.keys(service) as Method[]).map((method) => [service[method].path, scopes[method]]);
}

/**
 * Every token-checked method's full path (`/clawker.admin.v1.AdminService/ListAgents`) mapped to
 * its scope. A Map, not an object, so paths such as `constructor` cannot hit prototype keys.
 */
export const METHOD_SCOPES: ReadonlyMap<string, Scope> = new Map([
  ...byPath(AdminServiceService, ADMIN_SERVICE_SCOPES),
  ...byPath(AgentServiceService, AGENT_SERVICE_SCOPES),
  ...byPath(JobServiceService, JOB_SERVICE_SCOPES),
  ...byPath(AgentUsageServiceService, AGENT_USAGE_SERVICE_SCOPES),
  ...byPath(EgressServiceService, EGRESS_SERVICE_SCOPES),
  ...byPath(AgentEgressServiceService, AGENT_EGRESS_SERVICE_SCOPES),
]);

/**
 * The scope a call to `path` (a full gRPC method path) requires. `undefined` means the method is
 * not in the map: the caller MUST deny the call (UNAUTHENTICATED, API.md §5), never let it pass.
 */
export function requiredScope(path: string): Scope | undefined {
  return METHOD_SCOPES.get(path);
}

/** An OAuth2 scope a client can be granted (every Scope but the no-token marker). */
export type GrantableScope = Exclude<Scope, typeof PUBLIC_SCOPE>;

/**
 * An OAuth2 client the control plane registers: grant, client authentication and its scopes
 * (`scope` is the RFC 6749 space-separated list of `scopes`, as registered).
 */
export interface OAuth2Client {
  readonly clientId: string;
  readonly scopes: readonly GrantableScope[];
  readonly scope: string;
  readonly grantType: "client_credentials";
  readonly tokenEndpointAuthMethod: "private_key_jwt";
  readonly assertionAlg: "ES256";
}

/** The clawker CLI's client: calls AdminService with the `admin` scope. */
export const CLI_CLIENT = {
  clientId: "clawker-cli",
  scopes: [ADMIN_SCOPE],
  scope: ADMIN_SCOPE,
  grantType: "client_credentials",
  tokenEndpointAuthMethod: "private_key_jwt",
  assertionAlg: "ES256",
} as const satisfies OAuth2Client;

/**
 * The agents' client: calls AgentService.Register with `agent:self:register` and
 * AgentEgressService.RequestEgress with `agent:self:request` (issue 11: asking grants nothing).
 */
export const AGENT_CLIENT = {
  clientId: "clawker-agent",
  scopes: [AGENT_REGISTER_SCOPE, AGENT_REQUEST_SCOPE],
  scope: `${AGENT_REGISTER_SCOPE} ${AGENT_REQUEST_SCOPE}`,
  grantType: "client_credentials",
  tokenEndpointAuthMethod: "private_key_jwt",
  assertionAlg: "ES256",
} as const satisfies OAuth2Client;

/** Both OAuth2 clients, keyed by client id. */
export const OAUTH2_CLIENTS = {
  [CLI_CLIENT.clientId]: CLI_CLIENT,
  [AGENT_CLIENT.clientId]: AGENT_CLIENT,
} as const satisfies Record<string, OAuth2Client>;
