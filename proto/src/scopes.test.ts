// The scope map against the generated service definitions (API.md §4).
import assert from "node:assert/strict";
import { test } from "node:test";

import { AdminServiceService } from "./gen/clawker/admin/v1/admin.js";
import { AgentServiceService } from "./gen/clawker/agent/v1/agent.js";
import { ClawkerdServiceService } from "./gen/clawker/clawkerd/v1/clawkerd.js";
import { AgentEgressServiceService, EgressServiceService } from "./gen/clawker/egress/v1/egress.js";
import { AgentUsageServiceService, JobServiceService } from "./gen/clawker/jobs/v1/jobs.js";
import {
  ADMIN_SCOPE,
  AGENT_CLIENT,
  AGENT_REGISTER_SCOPE,
  CLI_CLIENT,
  METHOD_SCOPES,
  OAUTH2_CLIENTS,
  PUBLIC_SCOPE,
  requiredScope,
  type ServiceScopes,
} from "./scopes.js";

const adminPaths = Object.values(AdminServiceService).map((m) => m.path);
const agentPaths = Object.values(AgentServiceService).map((m) => m.path);
const jobPaths = [...Object.values(JobServiceService), ...Object.values(AgentUsageServiceService)].map(
  (m) => m.path,
);
const egressPaths = Object.values(EgressServiceService).map((m) => m.path);
const agentEgressPaths = Object.values(AgentEgressServiceService).map((m) => m.path);
const allPaths = [...adminPaths, ...agentPaths, ...jobPaths, ...egressPaths, ...agentEgressPaths];

void test("every AdminService, AgentService, JobService and egress RPC has a non-empty scope", () => {
  assert.ok(adminPaths.length >= 16, "the generated AdminService lost methods");
  for (const path of allPaths) {
    const scope = requiredScope(path);
    assert.equal(typeof scope, "string", `${path} has no scope`);
    assert.notEqual(scope, "", `${path} has an empty scope`);
  }
  // Nothing extra: the map holds exactly these services' methods.
  assert.deepEqual([...METHOD_SCOPES.keys()].sort(), [...allPaths].sort());
});

void test("GetSystemTime alone is public", () => {
  const open = [...METHOD_SCOPES].filter(([, scope]) => scope === PUBLIC_SCOPE).map(([path]) => path);
  assert.deepEqual(open, ["/clawker.admin.v1.AdminService/GetSystemTime"]);
});

void test("every other AdminService method, WatchSOS included, needs admin; Register needs agent:self:register", () => {
  for (const path of adminPaths) {
    if (path.endsWith("/GetSystemTime")) continue;
    assert.equal(requiredScope(path), ADMIN_SCOPE, path);
  }
  assert.equal(requiredScope("/clawker.admin.v1.AdminService/WatchSOS"), "admin");
  assert.equal(requiredScope("/clawker.admin.v1.AdminService/ListAgents"), "admin");
  // Our ExecAgent extension runs commands in agents: admin, never public.
  assert.equal(requiredScope("/clawker.admin.v1.AdminService/ExecAgent"), "admin");
  assert.equal(requiredScope("/clawker.agent.v1.AgentService/Register"), "agent:self:register");
  // Jobs run and stop work in agents, usage shows them: admin, every method (API.md §6).
  assert.equal(jobPaths.length, 6);
  for (const path of jobPaths) assert.equal(requiredScope(path), ADMIN_SCOPE, path);
  assert.equal(AGENT_REGISTER_SCOPE, "agent:self:register");
  // JobGateService is clawkerd's alone (the control plane's placement): never on the admin listener.
  assert.equal(requiredScope("/clawker.jobs.v1.JobGateService/OpenJobGate"), undefined);
  // Egress triage approves rules: admin. An agent may only ask, with its own scope.
  assert.equal(egressPaths.length, 4);
  for (const path of egressPaths) assert.equal(requiredScope(path), ADMIN_SCOPE, path);
  assert.equal(requiredScope("/clawker.egress.v1.AgentEgressService/RequestEgress"), "agent:self:request");
});

void test("unknown paths, ClawkerdService and near misses give undefined (deny)", () => {
  const unknown = [
    "",
    "/",
    "/clawker.admin.v1.AdminService/Nope",
    "/clawker.admin.v1.AdminService/listAgents",
    "/clawker.admin.v1.AdminService/ListAgents/",
    "clawker.admin.v1.AdminService/ListAgents",
    "/clawker.admin.v2.AdminService/ListAgents",
    "/clawker.agent.v1.AgentService/GetSystemTime",
    ...Object.values(ClawkerdServiceService).map((m) => m.path),
    "constructor",
    "__proto__",
    "toString",
    "hasOwnProperty",
  ];
  for (const path of unknown) assert.equal(requiredScope(path), undefined, JSON.stringify(path));
});

void test("the OAuth2 clients carry the scopes of API.md §4", () => {
  assert.equal(CLI_CLIENT.clientId, "clawker-cli");
  assert.equal(CLI_CLIENT.scope, "admin");
  assert.equal(AGENT_CLIENT.clientId, "clawker-agent");
  assert.equal(AGENT_CLIENT.scope, "agent:self:register agent:self:request");
  for (const client of Object.values(OAUTH2_CLIENTS)) assert.equal(client.scope, client.scopes.join(" "));
  assert.deepEqual(Object.keys(OAUTH2_CLIENTS).sort(), ["clawker-agent", "clawker-cli"]);
  for (const client of Object.values(OAUTH2_CLIENTS)) {
    assert.equal(client.grantType, "client_credentials");
    assert.equal(client.tokenEndpointAuthMethod, "private_key_jwt");
    assert.equal(client.assertionAlg, "ES256");
  }
});

// Compile-time guarantees, checked by `npx tsc -b proto` (not at run time): the build fails if any
// expected error below goes away, i.e. if a scope map could miss an RPC, name an unknown one, or
// hold an empty scope.
// @ts-expect-error Register has no scope
const _missing = {} satisfies ServiceScopes<typeof AgentServiceService>;
const _empty = {
  // @ts-expect-error an empty scope is not a Scope
  register: "",
} satisfies ServiceScopes<typeof AgentServiceService>;
const _extra = {
  register: AGENT_REGISTER_SCOPE,
  // @ts-expect-error no such RPC
  unregister: AGENT_REGISTER_SCOPE,
} satisfies ServiceScopes<typeof AgentServiceService>;
