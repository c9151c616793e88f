// The daemon's metrics: counted in plain maps on the hot path (one lookup and an add per call) and
// rendered in the Prometheus text format by prom-client, which is loaded on the first scrape only:
// it costs ~13 MiB and a noticeable share of a cold start, which a daemon nobody scrapes never pays.
import type * as PromClient from "prom-client";
import type { CounterRow } from "../server/listener-counters.js";

/** A firewall decision's outcome (issue 11 §1). */
export type FirewallVerdict = "allowed" | "denied" | "bypassed";

/** The enforcement layer that decided (issue 11 §1). */
export type FirewallLayer = "dns" | "bpf" | "proxy";

/** What the scrape reads at its moment; each source is optional (absent: the metric has no sample). */
export interface MetricsSources {
  /** Registered agents. */
  readonly agents?: () => number;
  /** The introspection cache's running totals. */
  readonly introspectionCache?: () => { readonly hits: number; readonly misses: number };
  /** Stored firewall rules, floor included; undefined while the rule store is not open. */
  readonly firewallRules?: () => number | undefined;
  /** Containers currently bypassing the firewall. */
  readonly bypassesActive?: () => Promise<number>;
  /** Every listener refusal counted so far. */
  readonly refusals?: () => readonly CounterRow[];
}

/** A rendered scrape. */
export interface MetricsPage {
  readonly contentType: string;
  readonly body: string;
}

/** gRPC status codes 0-16 (OK .. UNAUTHENTICATED); the index is the code. */
const CODE_NAMES = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
] as const;

/** Counts one listener's finished calls: (method path, numeric gRPC code). */
export type RpcCounter = (method: string, code: number) => void;

/**
 * The daemon's metrics. Typed functions count (`rpcCounter`, `firewallDecision`, `eventsDropped`,
 * `helperStarted`); the rest is read from `sources` when scraped. Label values are bounded:
 * methods are the served paths or `(unknown method)`, never an agent or project name.
 */
export class Metrics {
  readonly #sources: MetricsSources;
  /** listener -> method -> count per gRPC code. */
  readonly #rpcs = new Map<string, Map<string, number[]>>();
  readonly #decisions = new Map<string, number>();
  readonly #drops = new Map<string, number>();
  readonly #helperStarts = new Map<string, number>();
  #page: Promise<() => Promise<MetricsPage>> | undefined;

  constructor(sources: MetricsSources = {}) {
    this.#sources = sources;
  }

  /** The counting function one listener's call guard calls with every status it passes on. */
  rpcCounter(listener: string): RpcCounter {
    const byMethod = new Map<string, number[]>();
    this.#rpcs.set(listener, byMethod);
    return (method, code) => {
      let counts = byMethod.get(method);
      if (counts === undefined) {
        counts = new Array<number>(CODE_NAMES.length).fill(0);
        byMethod.set(method, counts);
      }
      // A code outside 0-16 is grpc-js's to refuse; counted as UNKNOWN rather than dropped.
      counts[code >= 0 && code < CODE_NAMES.length ? code : 2]!++;
    };
  }

  /** Seam for the decision stream (issue 11): one firewall decision by verdict and layer. */
  firewallDecision(verdict: FirewallVerdict, layer: FirewallLayer): void {
    const key = `${verdict}\u0000${layer}`;
    this.#decisions.set(key, (this.#decisions.get(key) ?? 0) + 1);
  }

  /** Seam for the decision stream (issue 11): `n` events a source dropped (a rate limit, a full ring). */
  eventsDropped(source: string, n = 1): void {
    this.#drops.set(source, (this.#drops.get(source) ?? 0) + n);
  }

  /** A supervised helper was started (its first start and every restart). */
  helperStarted(helper: string): void {
    this.#helperStarts.set(helper, (this.#helperStarts.get(helper) ?? 0) + 1);
  }

  /** The calls counted for listener/method/code name so far (tests and status views). */
  rpcCount(listener: string, method: string, code: (typeof CODE_NAMES)[number]): number {
    return this.#rpcs.get(listener)?.get(method)?.[CODE_NAMES.indexOf(code)] ?? 0;
  }

  /** The Prometheus text page; loads prom-client on the first call. */
  async render(): Promise<MetricsPage> {
    // `default` (module.exports): prom-client is CommonJS, and its chunk in the install tree
    // (scripts/install-tree.ts splits lazy imports) exports only `default`, as Node guarantees.
    this.#page ??= import("prom-client").then((prom) => this.#renderer(prom.default));
    return (await this.#page)();
  }

  /** One prom-client registry whose collectors copy the maps above at each scrape. */
  #renderer(prom: typeof PromClient.default): () => Promise<MetricsPage> {
    const registry = new prom.Registry();
    const counter = (
      name: string,
      help: string,
      labelNames: readonly string[],
      fill: (set: (labels: Record<string, string>, value: number) => void) => void | Promise<void>,
    ): void => {
      // A Gauge carrying counter semantics would lose `_total`'s meaning; prom-client's Counter
      // cannot be set, so the collector resets and adds the running total.
      const metric: PromClient.Counter<string> = new prom.Counter({
        name,
        help,
        labelNames,
        registers: [registry],
        async collect() {
          metric.reset();
          await fill((labels, value) => metric.inc(labels, value));
        },
      });
    };
    const gauge = (
      name: string,
      help: string,
      read: () => number | undefined | Promise<number | undefined>,
    ) => {
      const metric: PromClient.Gauge<string> = new prom.Gauge({
        name,
        help,
        registers: [registry],
        async collect() {
          metric.reset();
          const value = await read();
          if (value !== undefined) metric.set(value);
        },
      });
    };
    const s = this.#sources;
    counter(
      "clawker_grpc_server_handled_total",
      "gRPC calls finished, by listener, method path and status code.",
      ["listener", "method", "code"],
      (set) => {
        for (const [listener, byMethod] of this.#rpcs)
          for (const [method, counts] of byMethod)
            counts.forEach((n, code) => {
              if (n > 0) set({ listener, method, code: CODE_NAMES[code]! }, n);
            });
      },
    );
    if (s.introspectionCache !== undefined) {
      const read = s.introspectionCache;
      counter(
        "clawker_introspection_cache_total",
        "Token introspections answered from the cache (hit) or asked of the auth server (miss).",
        ["result"],
        (set) => {
          const { hits, misses } = read();
          set({ result: "hit" }, hits);
          set({ result: "miss" }, misses);
        },
      );
    }
    if (s.refusals !== undefined) {
      const read = s.refusals;
      counter(
        "clawker_refusals_total",
        "Connections and calls the listeners refused, by listener and reason.",
        ["listener", "reason"],
        (set) => {
          for (const r of read()) set({ listener: r.listener, reason: r.reason }, r.count);
        },
      );
    }
    counter(
      "clawker_firewall_decisions_total",
      "Firewall decisions by verdict and the layer that decided.",
      ["verdict", "layer"],
      (set) => {
        for (const [key, n] of this.#decisions) {
          const [verdict, layer] = key.split("\u0000");
          set({ verdict: verdict!, layer: layer! }, n);
        }
      },
    );
    counter("clawker_events_dropped_total", "Events dropped, by source.", ["source"], (set) => {
      for (const [source, n] of this.#drops) set({ source }, n);
    });
    counter(
      "clawker_helper_starts_total",
      "Supervised helper processes started, by helper (a restart counts again).",
      ["helper"],
      (set) => {
        for (const [helper, n] of this.#helperStarts) set({ helper }, n);
      },
    );
    if (s.agents !== undefined) gauge("clawker_agents", "Registered agents.", s.agents);
    if (s.firewallRules !== undefined)
      gauge("clawker_firewall_rules", "Stored firewall rules, floor included.", s.firewallRules);
    if (s.bypassesActive !== undefined)
      gauge("clawker_firewall_bypasses_active", "Containers bypassing the firewall now.", s.bypassesActive);
    gauge("process_resident_memory_bytes", "Resident memory of the daemon's own process.", () =>
      process.memoryUsage.rss(),
    );
    return async () => ({ contentType: registry.contentType, body: await registry.metrics() });
  }
}
