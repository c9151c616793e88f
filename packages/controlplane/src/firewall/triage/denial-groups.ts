// Denials grouped by (destination, port, agent), in memory and bounded: the least recently seen
// group is evicted when the cap is reached, and evictions are counted. Ids are a digest of the
// group's key, so the same destination, port and agent always get the same id; it and the
// suggested rule are worked out when a group is first read, never per denial.
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

/** A group as kept: the key's fields from its first denial, counters updated per denial. */
class Group implements DenialGroup {
  readonly key: string;
  readonly agentName: string;
  readonly project: string;
  readonly agent: string;
  readonly dstName: string;
  readonly dstAddr: string;
  readonly port: number;
  readonly protocol: string;
  count = 0;
  readonly firstSeen: bigint;
  lastSeen: bigint;
  layer: egress.Layer;
  reason: string;
  /** The recording clock's value at its last denial (recency). */
  seen = 0;
  #id: string | undefined;
  #suggested: DenialGroup["suggested"] | undefined;

  constructor(key: string, agent: string, event: egress.FirewallEvent) {
    this.key = key;
    this.agentName = event.agentName;
    this.project = event.project;
    this.agent = agent;
    this.dstName = event.dstName;
    this.dstAddr = event.dstAddr;
    this.port = event.port;
    this.protocol = event.protocol;
    this.firstSeen = event.timeUnixNanos;
    this.lastSeen = event.timeUnixNanos;
    this.layer = event.layer;
    this.reason = event.reason;
  }

  // Digested and suggested when first read (a listing, an approval), not per denial.
  get id(): string {
    return (this.#id ??= groupId(this.agent, this.dstName !== "" ? this.dstName : this.dstAddr, this.port));
  }

  get suggested(): DenialGroup["suggested"] {
    return (this.#suggested ??= suggestedRule(this));
  }
}

/**
 * The key a denial is grouped by (agent full name, destination, port), or undefined when it has no
 * destination. Plain concatenation: it runs once per denial.
 */
export function groupKey(
  event: Pick<egress.FirewallEvent, "agentName" | "project" | "dstName" | "dstAddr" | "port">,
): string | undefined {
  const dst = event.dstName !== "" ? event.dstName : event.dstAddr;
  if (dst === "") return undefined;
  return `${agentFullName(event.project, event.agentName)}\n${dst}\n${event.port}`;
}

/**
 * The bounded set of denial groups (see the file comment). Recording is constant work: a map
 * lookup by the plain key and counters updated, recency a number (no reordering); ids are digested
 * and rules suggested only when a group is read. At the cap, the least recently seen tenth is
 * evicted at once, so a flood of new destinations sorts once per tenth, not once per denial.
 */
export class DenialGroups {
  readonly #max: number;
  readonly #groups = new Map<string, Group>();
  /** Ticks once per recorded denial: a group's `seen` orders it by recency. */
  #clock = 0;
  #recorded = 0;
  #evicted = 0;

  constructor(maxGroups: number) {
    this.#max = maxGroups;
  }

  /**
   * Adds a denied event to its group (created when new); returns the group. `key` is
   * groupKey(event), when the caller already has it.
   */
  record(event: egress.FirewallEvent, key = groupKey(event)): DenialGroup | undefined {
    if (key === undefined) return undefined;
    this.#recorded++;
    let group = this.#groups.get(key);
    if (group === undefined) {
      if (this.#groups.size >= this.#max) this.#evict();
      group = new Group(key, agentFullName(event.project, event.agentName), event);
      this.#groups.set(key, group);
    } else {
      if (event.timeUnixNanos > group.lastSeen) group.lastSeen = event.timeUnixNanos;
      group.layer = event.layer;
      group.reason = event.reason;
    }
    group.count++;
    group.seen = ++this.#clock;
    return group;
  }

  /** Drops the least recently seen tenth (at least one) of the groups. */
  #evict(): void {
    const n = Math.max(1, Math.ceil(this.#groups.size / 10));
    const oldest = [...this.#groups.values()].sort((x, y) => x.seen - y.seen).slice(0, n);
    for (const group of oldest) this.#groups.delete(group.key);
    this.#evicted += oldest.length;
  }

  /** The group with this id, if it is kept (a walk over at most maxGroups; ids are cached). */
  get(id: string): DenialGroup | undefined {
    for (const group of this.#groups.values()) if (group.id === id) return group;
    return undefined;
  }

  /** Forgets a group (approved or dismissed); true when it was kept. */
  delete(id: string): boolean {
    const group = this.get(id) as Group | undefined;
    return group !== undefined && this.#groups.delete(group.key);
  }

  /** Every kept group, newest first. */
  list(): DenialGroup[] {
    return [...this.#groups.values()].sort((x, y) => y.seen - x.seen);
  }

  /** Counts for metrics. */
  stats(): DenialGroupStats {
    return { groups: this.#groups.size, recorded: this.#recorded, evicted: this.#evicted };
  }
}
