// The three sources' decisions as one FirewallEvent each, with the origin the hub resolves the
// agent from (the source's own agent fields are not used: the hub asks the daemon's registry).
// Reasons are stable strings, listed in README.md.
import { egress } from "@clawker/proto";
import type { DecisionEvent } from "../../ebpf/protocol.js";
import type { DnsDecision } from "../dns/decision.js";
import type { ProxyDecision } from "../proxy/decision-log.js";
import type { EventOrigin, FirewallEventInput } from "./event-hub.js";

/** An event and where it came from, ready for `hub.publish(event, origin)`. */
export interface SourcedEvent {
  readonly event: FirewallEventInput;
  readonly origin: EventOrigin;
}

const BLANK: FirewallEventInput = (() => {
  const { seq: _seq, schemaVersion: _v, ...rest } = egress.FirewallEvent.create();
  return Object.freeze(rest);
})();

const MS = 1_000_000n;

/** A DNS gate decision: the name asked, the addresses answered, port 53. */
export function dnsEvent(d: DnsDecision): SourcedEvent {
  const rule = d.rule;
  let ref: egress.RuleRef | undefined;
  if (rule !== undefined) {
    const dot = rule.scope.kind === "agent" ? rule.scope.name.indexOf(".") : -1;
    ref = {
      key: rule.pattern,
      project:
        rule.scope.kind === "project"
          ? rule.scope.name
          : rule.scope.kind === "agent" && dot > 0
            ? rule.scope.name.slice(0, dot)
            : "",
      agentName: rule.scope.kind === "agent" ? rule.scope.name.slice(dot + 1) : "",
      action: rule.action,
    };
  }
  return {
    event: {
      ...BLANK,
      timeUnixNanos: BigInt(Math.trunc(d.time)) * MS,
      dstName: d.name,
      dstAddr: d.addresses[0] ?? "",
      port: 53,
      protocol: "dns",
      verdict: d.verdict === "allowed" ? egress.Verdict.VERDICT_ALLOWED : egress.Verdict.VERDICT_DENIED,
      layer: egress.Layer.LAYER_DNS,
      rule: ref,
      // An allowed name the upstream failed to answer is still allowed; the error says why it failed.
      reason: d.error ?? d.reason,
    },
    origin: { address: d.client },
  };
}

const PROXY_PROTOCOL: Record<ProxyDecision["layer"], string> = {
  tls: "https",
  mitm: "https",
  http: "http",
  tcp: "tcp",
  udp: "udp", // the UDP relay (../udp-relay.ts): one session opened, or one datagram refused
};

/** A proxy decision: one connection (tls, tcp), one request (mitm, http) or one UDP session (udp). */
export function proxyEvent(d: ProxyDecision): SourcedEvent {
  const allowed = d.verdict === "allow";
  // Every field written out (no spread of BLANK): this runs once per proxy line.
  return {
    event: {
      timeUnixNanos: BigInt(Math.round(d.time * 1000)) * MS,
      agentName: "",
      project: "",
      containerId: "",
      dstName: d.name ?? "",
      dstAddr: d.upstream ?? "",
      port: d.port ?? 0,
      protocol: PROXY_PROTOCOL[d.layer],
      verdict: allowed ? egress.Verdict.VERDICT_ALLOWED : egress.Verdict.VERDICT_DENIED,
      layer: egress.Layer.LAYER_PROXY,
      rule:
        d.rule === undefined
          ? undefined
          : { key: d.rule, project: "", agentName: "", action: allowed ? "allow" : "deny" },
      reason: allowed ? "rule_allow" : (d.reason ?? "no_rule"),
      method: d.method ?? "",
      path: d.path ?? "",
      httpStatus: d.status ?? 0,
      bytesIn: d.bytesIn > 0 ? BigInt(Math.trunc(d.bytesIn)) : 0n,
      bytesOut: d.bytesOut > 0 ? BigInt(Math.trunc(d.bytesOut)) : 0n,
      durationMicros: d.durationMs > 0 ? BigInt(Math.round(d.durationMs * 1000)) : 0n,
      gapCount: 0n,
    },
    origin: { address: d.source },
  };
}

const BPF_REASON: Record<DecisionEvent["verdict"], string> = {
  deny: "kernel_deny",
  bypass: "bypassed",
  pass: "kernel_pass",
  allow: "kernel_pass",
  dns: "steered_dns",
  route: "steered_route",
  catchall: "steered_catchall",
  unknown: "unknown",
};

/**
 * An eBPF decision. The kernel's timestamp is CLOCK_BOOTTIME, not wall time, so the hub stamps
 * the time it arrived. Steered sockets count as allowed here: the proxy or the gate decides next.
 */
export function bpfEvent(d: DecisionEvent): SourcedEvent {
  return {
    event: {
      ...BLANK,
      dstAddr: d.address,
      port: d.port,
      protocol: d.protocol,
      verdict:
        d.verdict === "deny" || d.verdict === "unknown"
          ? egress.Verdict.VERDICT_DENIED
          : d.verdict === "bypass"
            ? egress.Verdict.VERDICT_BYPASSED
            : egress.Verdict.VERDICT_ALLOWED,
      layer: egress.Layer.LAYER_BPF,
      reason: BPF_REASON[d.verdict],
    },
    origin: { cgroupId: d.cgroupId },
  };
}
