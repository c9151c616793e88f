// The 13 firewall RPCs of AdminService (API.md §1): wire messages in, Firewall operations, wire
// messages out. Errors go through the firewall's one reason -> status table (errors.ts); anything
// else is INTERNAL without detail. Who acted (rule_changes, and the audit log's action records for
// every state-changing RPC) comes from the AuthInterceptor's decision and the caller's certificate CN.
import { status, type handleUnaryCall, type ServerUnaryCall } from "@grpc/grpc-js";
import { admin } from "@clawker/proto";
import type { Logger } from "pino";
import { authContextOf } from "../auth/auth-interceptor.js";
import { FirewallError, firewallStatus } from "./errors.js";
import type { Firewall } from "./firewall.js";
import { ruleToWire } from "./rule.js";
import type { Actor, AddStatus, RemoveStatus } from "./rule-store.js";

/** The AdminService methods this module serves. */
export type FirewallMethod =
  | "firewallInit"
  | "firewallRemove"
  | "firewallEnable"
  | "firewallDisable"
  | "firewallBypass"
  | "firewallAddRules"
  | "firewallRemoveRule"
  | "firewallListRules"
  | "firewallReload"
  | "firewallStatus"
  | "firewallRotateCa"
  | "firewallSyncRoutes"
  | "firewallResolveHostname";

/** The firewall part of AdminService's implementation. */
export type FirewallHandlers = Pick<admin.AdminServiceServer, FirewallMethod>;

/** What the handlers call (the Firewall subsystem). */
export type FirewallOperations = Pick<
  Firewall,
  | "init"
  | "remove"
  | "enable"
  | "disable"
  | "bypass"
  | "addRules"
  | "removeRule"
  | "listRules"
  | "reload"
  | "status"
  | "rotateCa"
  | "syncRoutes"
  | "resolveHostname"
>;

const ADD_STATUS = {
  added: admin.AddRuleStatus.ADD_RULE_STATUS_ADDED,
  modified: admin.AddRuleStatus.ADD_RULE_STATUS_MODIFIED,
  unchanged: admin.AddRuleStatus.ADD_RULE_STATUS_UNCHANGED,
} as const satisfies Record<AddStatus, admin.AddRuleStatus>;

const REMOVE_STATUS = {
  removed: admin.RemoveRuleStatus.REMOVE_RULE_STATUS_REMOVED,
  path_removed: admin.RemoveRuleStatus.REMOVE_RULE_STATUS_PATH_REMOVED,
  not_found: admin.RemoveRuleStatus.REMOVE_RULE_STATUS_NOT_FOUND,
} as const satisfies Record<RemoveStatus, admin.RemoveRuleStatus>;

/**
 * The caller as `rule_changes` records it: the token's client id (from the AuthInterceptor's
 * decision) and the CN of the client certificate. A call no AuthInterceptor passed has no known
 * caller and changes nothing.
 */
export function actorOf(call: Pick<ServerUnaryCall<unknown, unknown>, "metadata" | "getAuthContext">): Actor {
  const decision = authContextOf(call.metadata);
  if (decision === undefined || decision.isPublic || decision.clientId === "") {
    throw new FirewallError("internal", "caller identity unknown");
  }
  const cn = call.getAuthContext()?.sslPeerCertificate?.subject?.CN;
  return { clientId: decision.clientId, certCn: (Array.isArray(cn) ? cn[0] : cn) ?? "" };
}

/**
 * One unary handler maker for the firewall's RPCs (AdminService's and EgressService's triage):
 * runs `answer` and maps a failure through the firewall's status table; refusals are logged at
 * info, anything INTERNAL at error, as `<kind>_rpc_refused` / `<kind>_rpc_failed`.
 */
export function firewallUnary(
  log: Logger,
  kind: "firewall" | "triage",
): <Req, Res>(
  rpc: string,
  answer: (call: ServerUnaryCall<Req, Res>) => Promise<Res> | Res,
) => handleUnaryCall<Req, Res> {
  return (rpc, answer) => (call, callback) => {
    Promise.resolve()
      .then(() => answer(call))
      .then(
        (result) => callback(null, result),
        (err: unknown) => {
          if (!(err instanceof FirewallError) || firewallStatus(err).code === status.INTERNAL) {
            log.error({ err, rpc, event: `${kind}_rpc_failed` }, `${kind} RPC failed`);
          } else {
            log.info({ rpc, reason: err.reason, event: `${kind}_rpc_refused` }, err.message);
          }
          callback(firewallStatus(err));
        },
      );
  };
}

/** Builds the 13 firewall handlers over a Firewall. */
export function firewallHandlers(firewall: FirewallOperations, log: Logger): FirewallHandlers {
  const unary = firewallUnary(log, "firewall");

  return {
    firewallInit: unary("FirewallInit", async (call) => {
      const a = await firewall.init(actorOf(call));
      return { envoyIp: a.proxyAddress, corednsIp: a.dnsAddress, networkId: a.networkId };
    }),
    firewallRemove: unary("FirewallRemove", async (call) => {
      await firewall.remove(actorOf(call));
      return {};
    }),
    firewallEnable: unary("FirewallEnable", async (call) => {
      await firewall.enable(call.request.containerId, actorOf(call));
      return {};
    }),
    firewallDisable: unary("FirewallDisable", async (call) => {
      await firewall.disable(call.request.containerId, actorOf(call));
      return {};
    }),
    firewallBypass: unary("FirewallBypass", async (call) => {
      await firewall.bypass(call.request.containerId, call.request.timeoutSeconds, actorOf(call));
      return {};
    }),
    firewallAddRules: unary("FirewallAddRules", async (call) => {
      const statuses = await firewall.addRules(call.request.rules, actorOf(call));
      // We never restart a stack: rules go live through the proxy's runtime API.
      return { statuses: statuses.map((s) => ADD_STATUS[s]), stackRestarted: false };
    }),
    firewallRemoveRule: unary("FirewallRemoveRule", async (call) => {
      const result = await firewall.removeRule(call.request, actorOf(call));
      return { stackRestarted: false, status: REMOVE_STATUS[result.status] };
    }),
    firewallListRules: unary("FirewallListRules", () => ({
      rules: firewall.listRules().map(({ rule, floor }) => ruleToWire(rule, floor)),
    })),
    firewallReload: unary("FirewallReload", async () => {
      await firewall.reload();
      return { stackRestarted: false };
    }),
    firewallStatus: unary("FirewallStatus", async () => {
      const s = await firewall.status();
      return {
        running: s.running,
        envoyHealth: s.proxyHealthy,
        corednsHealth: s.dnsHealthy,
        ruleCount: s.ruleCount,
        envoyIp: s.proxyAddress,
        corednsIp: s.dnsAddress,
        networkId: s.networkId,
        cidr: s.cidr,
        // The decision stream fills this (events/status-sources.ts) when the daemon runs one.
        eventSources: [],
        containers: s.containers.map((c) => ({
          containerId: c.containerId,
          mode: c.mode,
          bypassSecondsLeft: c.secondsLeft,
          enforced: c.enforced,
        })),
        interceptionCaPem: s.interceptionCaPem,
      };
    }),
    firewallRotateCa: unary("FirewallRotateCA", async (call) => {
      await firewall.rotateCa(actorOf(call));
      return { stackRestarted: false };
    }),
    // API.md §1: the request's routes are accepted and ignored; the store is the only source.
    firewallSyncRoutes: unary("FirewallSyncRoutes", async () => ({ applied: await firewall.syncRoutes() })),
    firewallResolveHostname: unary("FirewallResolveHostname", async (call) => ({
      addresses: await firewall.resolveHostname(call.request.hostname),
    })),
  };
}
