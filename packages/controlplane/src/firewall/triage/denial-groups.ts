// Denials grouped by (destination, port, agent), in memory and bounded: the least recently seen
// group is evicted when the cap is reached, and evictions are counted. Ids are a digest of the
// group's key, so the same destination, port and agent always get the same id.
import { createHash } from "node:crypto";
import { agentFullName, egress } from "@clawker/proto";
import { DEFAULT_PROTO, NAMED_PROTOCOLS } from "../rule.js";

/** One group of denials. Times are unix nanoseconds. */
export interface DenialGroup {
  readonly id: string;
  readonly agentName: string;
  readonly project: string;
  /** The agent's full name (`<project>.<agent>`), "" when the source was unknown. */
  readonly agent: string;
  readonly dstName: string;
  readonly dstAddr: string;
  readonly port: number;
  readonly protocol: string;
  count: number;
  readonly firstSeen: bigint;
  lastSeen: bigint;
  layer: egress.Layer;
  reason: string;
  /** The rule that would allow it: dst, proto, port (README.md, "Suggested rule"). */
  readonly suggested: { readonly dst: string; readonly proto: string; readonly port: string };
}

/** What the groups count (metrics read it). */
export interface DenialGroupStats {
  readonly groups: number;
  readonly recorded: number;
  readonly evicted: number;
}

/** The stable id of a group's key. */
export function groupId(agent: string, dst: string, port: number): string {
  return `d-${createHash("sha256").update(`${agent}\n${dst}\n${port}`).digest("hex").slice(0, 20)}`;
}

/**
 * The rule that would allow a denied attempt: its name (lowercased, a `:port` and the root dot
 * dropped; else its address); the protocol as a rule
 * names it (`tls` is https; a DNS denial is of a name, so https on its default port is suggested);
 * the attempted port, else the protocol's default.
 */
export function suggestedRule(
  event: Pick<egress.FirewallEvent, "dstName" | "dstAddr" | "protocol" | "port" | "layer">,
): {
  dst: string;
  proto: string;
  port: string;
} {
  // A Host header may carry a port (`name:8080`); the rule names the host alone.
  const dst =
    event.dstName !== ""
      ? event.dstName.toLowerCase().replace(/:\d+$/, "").replace(/\.$/, "")
      : event.dstAddr;
  let proto = event.protocol.toLowerCase();
  if (proto === "tls" || proto === "") proto = DEFAULT_PROTO;
  if (proto === "dns" || event.layer === egress.Layer.LAYER_DNS) {
    return { dst, proto: DEFAULT_PROTO, port: String(NAMED_PROTOCOLS[DEFAULT_PROTO]) };
  }
  const port = event.port > 0 ? event.port : NAMED_PROTOCOLS[proto];
  return { dst, proto, port: port === undefined ? "" : String(port) };
}

/** The bounded set of denial groups (see the file comment). */
export class DenialGroups {
  readonly #max: number;
  /** Insertion order is recency: a recorded group is moved to the end, the first is the oldest. */
  readonly #groups = new Map<string, DenialGroup>();
  #recorded = 0;
  #evicted = 0;

  constructor(maxGroups: number) {
    this.#max = maxGroups;
  }

  /** Adds a denied event to its group (created when new); returns the group. */
  record(event: egress.FirewallEvent): DenialGroup | undefined {
    const dst = event.dstName !== "" ? event.dstName : event.dstAddr;
    if (dst === "") return undefined;
    const agent = event.agentName === "" ? "" : agentFullName(event.project, event.agentName);
    const id = groupId(agent, dst, event.port);
    this.#recorded++;
    let group = this.#groups.get(id);
    if (group === undefined) {
      while (this.#groups.size >= this.#max) {
        this.#groups.delete(this.#groups.keys().next().value!);
        this.#evicted++;
      }
      group = {
        id,
        agentName: event.agentName,
        project: event.project,
        agent,
        dstName: event.dstName,
        dstAddr: event.dstAddr,
        port: event.port,
        protocol: event.protocol,
        count: 0,
        firstSeen: event.timeUnixNanos,
        lastSeen: event.timeUnixNanos,
        layer: event.layer,
        reason: event.reason,
        suggested: suggestedRule(event),
      };
    } else {
      this.#groups.delete(id);
    }
    group.count++;
    if (event.timeUnixNanos > group.lastSeen) group.lastSeen = event.timeUnixNanos;
    group.layer = event.layer;
    group.reason = event.reason;
    this.#groups.set(id, group);
    return group;
  }

  /** The group with this id, if it is kept. */
  get(id: string): DenialGroup | undefined {
    return this.#groups.get(id);
  }

  /** Forgets a group (approved or dismissed); true when it was kept. */
  delete(id: string): boolean {
    return this.#groups.delete(id);
  }

  /** Every kept group, newest first. */
  list(): DenialGroup[] {
    return [...this.#groups.values()].reverse();
  }

  /** Counts for metrics. */
  stats(): DenialGroupStats {
    return { groups: this.#groups.size, recorded: this.#recorded, evicted: this.#evicted };
  }
}
