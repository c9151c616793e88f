// The firewall's one decision stream (issue 11 §1): every layer's decision becomes one
// egress.FirewallEvent with a sequence number, its agent resolved by the daemon (never taken from
// the source), kept in a bounded ring for backfill and handed synchronously to every listener
// (the audit log, triage, watchers, the overseer topic). Each source has an explicit rate limit;
// what it refuses, and what a source reports it lost before reaching the hub, is counted per
// source, so `published = delivered + dropped` always holds.
import { egress } from "@clawker/proto";
import type { FirewallDenied } from "@clawker/overseer";
import type { Logger } from "../../logging.js";
import { TokenBucket } from "./token-bucket.js";

/** The schema version every event carries (egress.proto: FirewallEvent is schema_version 1). */
export const FIREWALL_EVENT_SCHEMA_VERSION = 1;

/** Where an event came from: the layer that decided (one rate limit and one drop count each). */
export type EventSourceName = "dns" | "bpf" | "proxy" | "other";

/** Every source name, in the order stats list them. */
export const EVENT_SOURCES: readonly EventSourceName[] = ["dns", "bpf", "proxy", "other"];

/** What a source knows about who made the attempt; the hub resolves the agent from it. */
export interface EventOrigin {
  /** The agent container's source address (DNS gate, proxy). */
  readonly address?: string;
  /** The cgroup id (decimal) the eBPF programs saw. */
  readonly cgroupId?: string;
  /** The container id, when the source already knows it. */
  readonly containerId?: string;
}

/** Who an origin is: empty strings when the daemon does not know (never guessed). */
export interface ResolvedAgent {
  readonly agentName: string;
  readonly project: string;
  readonly containerId: string;
}

/** Resolves an origin to an agent through the registry and the address index (agent-resolver.ts). */
export interface AgentResolver {
  resolve(origin: EventOrigin): ResolvedAgent;
}

/** An event as a source hands it in: the hub sets seq and schema version. */
export type FirewallEventInput = Omit<egress.FirewallEvent, "seq" | "schemaVersion">;

/** Per-source counters. */
export interface SourceStats {
  /** Events handed to publish(). */
  readonly published: number;
  /** Events that passed the rate limit (kept in the ring, given to every listener). */
  readonly delivered: number;
  /** Events refused by this source's rate limit. */
  readonly droppedRateLimited: number;
  /** Events the source itself reported lost before they reached the hub (gate, kernel buffer). */
  readonly droppedUpstream: number;
}

/** What stats() returns: cheap, for FirewallStatus and /metrics. */
export interface EventHubStats {
  readonly sources: Readonly<Record<EventSourceName, SourceStats>>;
  readonly published: number;
  readonly delivered: number;
  /** droppedRateLimited + droppedUpstream over every source. */
  readonly dropped: number;
  /** Listener calls that threw (logged, counted, never stop the hub). */
  readonly listenerFailures: number;
  readonly ringSize: number;
  readonly ringCapacity: number;
  readonly listeners: number;
  /** The last seq assigned (0: none yet). */
  readonly lastSeq: bigint;
}

/** Options of an EventHub. */
export interface EventHubOptions {
  readonly log: Logger;
  /** Events kept for backfill (default 10,000). */
  readonly ringCapacity?: number;
  /** Events per second each source may publish (default 20,000 each); a burst of one second's worth. */
  readonly ratePerSecond?: Partial<Record<EventSourceName, number>>;
  /** Resolves agents from origins; absent: events published with an origin stay unattributed. */
  readonly resolver?: AgentResolver;
  /** The overseer's firewall topic: denials are published there as `firewall.denied`. */
  readonly topic?: { publish(event: FirewallDenied): unknown };
  /** Monotonic milliseconds for the rate limits (tests drive time with it). */
  readonly nowMs?: () => number;
  /** Wall clock in unix nanoseconds for events published without a time. */
  readonly nowUnixNanos?: () => bigint;
  /** Told of every drop as it is counted (the metrics' `eventsDropped`); must not throw. */
  readonly onDrop?: (source: EventSourceName, count: number) => void;
}

const DEFAULT_RING = 10_000;
const DEFAULT_RATE = 20_000;
const NO_ONE: ResolvedAgent = Object.freeze({ agentName: "", project: "", containerId: "" });

interface MutableSourceStats {
  published: number;
  delivered: number;
  droppedRateLimited: number;
  droppedUpstream: number;
}

/** The source an event counts against: its layer. */
export function sourceOf(layer: egress.Layer): EventSourceName {
  switch (layer) {
    case egress.Layer.LAYER_DNS:
      return "dns";
    case egress.Layer.LAYER_BPF:
      return "bpf";
    case egress.Layer.LAYER_PROXY:
      return "proxy";
    default:
      return "other";
  }
}

/** The decision stream (see the file comment). Synchronous and allocation-light: no timers. */
export class EventHub {
  readonly #log: Logger;
  readonly #ring: (egress.FirewallEvent | undefined)[];
  #head = 0;
  #size = 0;
  #seq = 0n;
  readonly #buckets: Record<EventSourceName, TokenBucket>;
  readonly #counts: Record<EventSourceName, MutableSourceStats>;
  readonly #resolver: AgentResolver | undefined;
  readonly #topic: EventHubOptions["topic"];
  readonly #nowMs: () => number;
  readonly #nowUnixNanos: () => bigint;
  readonly #onDrop: ((source: EventSourceName, count: number) => void) | undefined;
  /** Copy-on-write: publish walks the array it read, so (un)subscribing inside a listener is safe. */
  #listeners: readonly ((event: egress.FirewallEvent) => void)[] = [];
  #listenerFailures = 0;

  constructor(options: EventHubOptions) {
    this.#log = options.log.child({ component: "firewall-events" });
    const capacity = options.ringCapacity ?? DEFAULT_RING;
    if (!Number.isSafeInteger(capacity) || capacity < 1)
      throw new RangeError(`ringCapacity must be a positive integer, got ${capacity}`);
    this.#ring = new Array<egress.FirewallEvent | undefined>(capacity);
    this.#nowMs = options.nowMs ?? (() => performance.now());
    this.#nowUnixNanos = options.nowUnixNanos ?? unixNanosNow;
    const now = this.#nowMs();
    const bucket = (s: EventSourceName): TokenBucket => {
      const rate = options.ratePerSecond?.[s] ?? DEFAULT_RATE;
      return new TokenBucket(rate, rate, now);
    };
    this.#buckets = {
      dns: bucket("dns"),
      bpf: bucket("bpf"),
      proxy: bucket("proxy"),
      other: bucket("other"),
    };
    const zero = (): MutableSourceStats => ({
      published: 0,
      delivered: 0,
      droppedRateLimited: 0,
      droppedUpstream: 0,
    });
    this.#counts = { dns: zero(), bpf: zero(), proxy: zero(), other: zero() };
    this.#resolver = options.resolver;
    this.#topic = options.topic;
    this.#onDrop = options.onDrop;
  }

  /**
   * Assigns seq and schema version, resolves agent/project (from `origin`, through the registry;
   * without an origin the event's own fields stand), keeps it in the ring, calls listeners.
   * Returns false when the source's rate limit refused it (counted, never silent).
   */
  publish(event: FirewallEventInput, origin?: EventOrigin): boolean {
    const source = sourceOf(event.layer);
    const counts = this.#counts[source];
    counts.published++;
    if (!this.#buckets[source].take(this.#nowMs())) {
      counts.droppedRateLimited++;
      this.#onDrop?.(source, 1);
      return false;
    }
    counts.delivered++;
    const who = origin === undefined ? event : (this.#resolver?.resolve(origin) ?? NO_ONE);
    // One literal of every field in one order: every event in the ring has the same shape, so the
    // listeners' and the audit encoder's property reads stay monomorphic (no spread, no copies).
    const full: egress.FirewallEvent = {
      schemaVersion: FIREWALL_EVENT_SCHEMA_VERSION,
      seq: ++this.#seq,
      timeUnixNanos: event.timeUnixNanos > 0n ? event.timeUnixNanos : this.#nowUnixNanos(),
      agentName: who.agentName,
      project: who.project,
      containerId: who.containerId,
      dstName: event.dstName,
      dstAddr: event.dstAddr,
      port: event.port,
      protocol: event.protocol,
      verdict: event.verdict,
      layer: event.layer,
      rule: event.rule,
      reason: event.reason,
      method: event.method,
      path: event.path,
      httpStatus: event.httpStatus,
      bytesIn: event.bytesIn,
      bytesOut: event.bytesOut,
      durationMicros: event.durationMicros,
      gapCount: event.gapCount,
    };
    this.#ring[(this.#head + this.#size) % this.#ring.length] = full;
    if (this.#size < this.#ring.length) this.#size++;
    else this.#head = (this.#head + 1) % this.#ring.length;
    for (const listener of this.#listeners) {
      try {
        listener(full);
      } catch (err) {
        this.#listenerFailures++;
        this.#log.error({ err, event: "event_listener_failed" }, "firewall event listener threw");
      }
    }
    if (full.verdict === egress.Verdict.VERDICT_DENIED) this.#publishDenied(full);
    return true;
  }

  /** Counts events a source lost before they reached the hub (the DNS gate's, the kernel's). */
  countUpstreamDrops(source: EventSourceName, count: number): void {
    if (!Number.isSafeInteger(count) || count <= 0) return;
    this.#counts[source].droppedUpstream += count;
    this.#counts[source].published += count;
    this.#onDrop?.(source, count);
  }

  /** Called synchronously for every published event; returns the unsubscribe. Must not throw. */
  onEvent(listener: (event: egress.FirewallEvent) => void): () => void {
    this.#listeners = [...this.#listeners, listener];
    return () => {
      this.#listeners = this.#listeners.filter((l) => l !== listener);
    };
  }

  /** Events still in the ring at or after `sinceUnixNanos` that `accept` keeps, oldest first. */
  backfill(sinceUnixNanos: bigint, accept: (event: egress.FirewallEvent) => boolean): egress.FirewallEvent[] {
    const out: egress.FirewallEvent[] = [];
    for (let i = 0; i < this.#size; i++) {
      const e = this.#ring[(this.#head + i) % this.#ring.length]!;
      if (e.timeUnixNanos >= sinceUnixNanos && accept(e)) out.push(e);
    }
    return out;
  }

  /** The oldest event still in the ring, if any (what the audit log must cover before it). */
  oldest(): egress.FirewallEvent | undefined {
    return this.#size === 0 ? undefined : this.#ring[this.#head];
  }

  /** Counters for status and metrics; cheap (no walk over the ring). */
  stats(): EventHubStats {
    const sources = {} as Record<EventSourceName, SourceStats>;
    let published = 0;
    let delivered = 0;
    let dropped = 0;
    for (const s of EVENT_SOURCES) {
      const c = this.#counts[s];
      sources[s] = { ...c };
      published += c.published;
      delivered += c.delivered;
      dropped += c.droppedRateLimited + c.droppedUpstream;
    }
    return {
      sources,
      published,
      delivered,
      dropped,
      listenerFailures: this.#listenerFailures,
      ringSize: this.#size,
      ringCapacity: this.#ring.length,
      listeners: this.#listeners.length,
      lastSeq: this.#seq,
    };
  }

  #publishDenied(e: egress.FirewallEvent): void {
    if (this.#topic === undefined) return;
    try {
      this.#topic.publish({
        type: "firewall.denied",
        containerId: e.containerId === "" ? null : e.containerId,
        destination: e.dstName !== "" ? e.dstName : e.dstAddr,
        proto: e.protocol,
        port: e.port,
        time: Number(e.timeUnixNanos / 1_000_000n),
      });
    } catch (err) {
      this.#log.error({ err, event: "event_topic_failed" }, "overseer publish threw");
    }
  }
}

/** The wall clock in unix nanoseconds (millisecond resolution). */
export function unixNanosNow(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}
