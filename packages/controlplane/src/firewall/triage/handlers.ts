// The triage RPCs of EgressService (ListFirewallDenials, ApproveEgress, DismissEgress) over an
// EgressTriage: wire messages in and out; errors through the firewall's one reason -> status table
// (firewall.clawker.dev), anything else INTERNAL without detail. Who acted comes from the
// AuthInterceptor's decision and the caller's certificate CN (`actorOf`), as for rule changes.
import type { egress } from "@clawker/proto";
import type { Logger } from "pino";
import type { TriageHandlers } from "../egress-service.js";
import { FirewallError } from "../errors.js";
import { actorOf, firewallUnary } from "../handlers.js";
import { ruleToWire } from "../rule.js";
import type { DenialGroup } from "./denial-groups.js";
import type { EgressTriage } from "./egress-triage.js";
import type { StoredRequest } from "./triage-store.js";

export type { TriageHandlers };

/** What the handlers call. */
export type TriageOperations = Pick<EgressTriage, "list" | "approve" | "dismiss">;

/** Builds EgressService's three triage handlers over an EgressTriage. */
export function triageHandlers(triage: TriageOperations, log: Logger): TriageHandlers {
  const unary = firewallUnary(log, "triage");

  return {
    listFirewallDenials: unary("ListFirewallDenials", (call) => {
      const r = call.request;
      if (r.sinceUnixNanos < 0n) {
        throw new FirewallError("invalid_request", "since_unix_nanos must not be negative");
      }
      const listed = triage.list({
        agentName: r.agentName,
        project: r.project,
        ...(r.sinceUnixNanos > 0n ? { sinceUnixNanos: r.sinceUnixNanos } : {}),
      });
      return {
        groups: listed.groups.map(({ group, requests }) => groupToWire(group, requests)),
        requests: listed.requests.map(requestToWire),
      };
    }),
    approveEgress: unary("ApproveEgress", async (call) => {
      const approval = await triage.approve(call.request, actorOf(call));
      return {
        rule: ruleToWire(approval.rule.rule, approval.rule.floor),
        expiresAtUnixNanos: BigInt(approval.expiresAtUnixMs) * 1_000_000n,
      };
    }),
    dismissEgress: unary("DismissEgress", (call) => {
      triage.dismiss(call.request, actorOf(call));
      return {};
    }),
  };
}

/** A denial group on the wire; the suggested rule is shown global (the approval picks the scope). */
export function groupToWire(group: DenialGroup, requests: readonly StoredRequest[]): egress.DenialGroup {
  return {
    id: group.id,
    agentName: group.agentName,
    project: group.project,
    dstName: group.dstName,
    dstAddr: group.dstAddr,
    port: group.port,
    protocol: group.protocol,
    count: BigInt(group.count),
    firstSeenUnixNanos: group.firstSeen,
    lastSeenUnixNanos: group.lastSeen,
    layer: group.layer,
    reason: group.reason,
    suggestedRule: {
      dst: group.suggested.dst,
      proto: group.suggested.proto,
      port: group.suggested.port,
      action: "allow",
      pathRules: [],
      pathDefault: "",
      insecureSkipTlsVerify: false,
      project: "",
      agentName: "",
      floor: false,
    },
    requests: requests.map(requestToWire),
  };
}

/** A pending request on the wire. */
export function requestToWire(r: StoredRequest): egress.EgressRequest {
  return {
    id: r.id,
    agentName: r.agentName,
    project: r.project,
    dst: r.dst,
    port: Number(r.port),
    proto: r.proto,
    reason: r.reason,
    requestedAtUnixNanos: BigInt(r.requestedAtUnixMs) * 1_000_000n,
  };
}
