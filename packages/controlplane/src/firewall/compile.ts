// The compile step: the stored rules (RuleStore.list(), floor included) become what each
// enforcement layer takes: the proxy's ProxyPolicy, the DNS gate's rules and clients, the eBPF routes
// and the names that need an interception certificate. Pure and deterministic; a rule that cannot
// be compiled is left out (its traffic stays denied) and reported in `skipped`. See README.md,
// "Compile".
import { createHash } from "node:crypto";
// By module, not the dns/ index: that also exports the gate itself (dns-packet and its
// resolver), which runs in its own process and would only cost the daemon start-up and memory.
import { dnsRulesFromListing } from "./dns/policy-from-rules.js";
import type { DnsClient, DnsRule } from "./dns/policy.js";
import type {
  ProxyAction,
  ProxyEntry,
  ProxyEntryKind,
  ProxyPolicy,
  ProxyScope,
  ProxySource,
} from "./proxy/index.js";
import type { UdpRelayRoute } from "./udp-relay.js";
import type { ListedRule } from "./rule-store.js";
import { type Rule, type Scope, TLS_PROTOCOLS, dstKind, portSpan, scopeKey } from "./rule.js";

/** The proxy ports a compile targets: the catch-all listeners and the route listeners. */
export interface CompilePorts {
  /** The catch-all TLS (SNI) listener: https and wss names. */
  readonly tls: number;
  /** The catch-all HTTP (Host) listener: http and ws names. */
  readonly http: number;
  /** Route listeners for opaque TCP, one per destination (HAProxy keys them by listener). */
  readonly routes: readonly number[];
  /**
   * UDP relay ports (udp-relay.ts), one per routed (name, port) of a `udp` rule; UDP port numbers
   * are their own namespace, so the firewall reuses the route listeners' numbers. Absent: none.
   */
  readonly udp?: readonly number[];
}

/** What a compile reads. */
export interface CompileInput {
  /** Every rule, in canonical order (RuleStore.list()). */
  readonly rules: readonly ListedRule[];
  /** Who an agent is, by source address (from the running agent containers). */
  readonly sources: readonly ProxySource[];
  /** Addresses and CIDRs the proxy never connects to. */
  readonly forbidden: readonly string[];
  readonly ports: CompilePorts;
  /**
   * The route listener each TCP destination had in the previous compile: kept where possible, so
   * eBPF routes of unchanged destinations never move to another destination's listener.
   */
  readonly listeners?: ReadonlyMap<string, number>;
  /** The same for UDP: `<dst>:<port>` -> its relay port in the previous compile. */
  readonly udpListeners?: ReadonlyMap<string, number>;
}

/**
 * The DNS gate's share of a compile: the `rules` and `clients` of its DnsPolicy (dns/README.md,
 * "Policy"; the gate's owner adds the upstreams). Rules come from `dnsRulesFromListing`, the one
 * collapse of stored rules to names; clients are the proxy's sources with a single address.
 */
export interface CompiledDns {
  readonly rules: readonly DnsRule[];
  readonly clients: readonly DnsClient[];
}

/**
 * One eBPF route (API.md `Route`): connections to an address of destination `identity` on
 * `dstPort` are steered to the proxy's `proxyPort` (a catch-all listener or a route listener).
 */
export interface CompiledRoute {
  readonly identity: number;
  readonly dstPort: number;
  readonly proxyPort: number;
  /** tcp: to a proxy listener; udp: datagrams to the UDP relay's socket on `proxyPort`. */
  readonly protocol: "tcp" | "udp";
}

/** A rule (or part of one) the compile left out, and why; its traffic stays denied. */
export interface SkippedRule {
  readonly ruleId: string;
  readonly reason: "no_route_listener" | "path_rules_on_address" | "shadowed" | "route_conflict" | "udp_cidr";
  readonly message: string;
}

/** Everything one compile produces. */
export interface CompiledFirewall {
  readonly proxy: ProxyPolicy;
  readonly dns: CompiledDns;
  readonly routes: readonly CompiledRoute[];
  /** Names (`api.example.com`, `*.example.com`) the proxy intercepts: each needs a certificate. */
  readonly certificates: readonly string[];
  /** TCP destination -> its route listener (feed back as `listeners` next time). */
  readonly listeners: ReadonlyMap<string, number>;
  /** The UDP relay's sockets: one per routed (dst, port), with the rules that decide on it. */
  readonly udp: readonly UdpRelayRoute[];
  /** `<dst>:<port>` of a UDP route -> its relay port (feed back as `udpListeners` next time). */
  readonly udpListeners: ReadonlyMap<string, number>;
  readonly skipped: readonly SkippedRule[];
}

// The proxy's rule id alphabet and length (proxy/policy.ts).
const MAX_RULE_ID = 200;

/** The rule id a rule compiles under: `<scope>/<dst>:<proto>:<port>`, hashed when too long. */
export function compileRuleId(rule: Pick<Rule, "scope" | "dst" | "proto" | "port">): string {
  const id = `${scopeKey(rule.scope)}/${rule.dst}:${rule.proto}:${rule.port}`;
  if (id.length <= MAX_RULE_ID) return id;
  // A 253-character name does not fit: keep a readable head and make it unique with a digest.
  const digest = createHash("sha256").update(id).digest("hex").slice(0, 16);
  return `${id.slice(0, MAX_RULE_ID - 17)}@${digest}`;
}

/**
 * The verdict for paths no path rule matches (the Go control plane's rule): an explicit
 * `path_default` wins; otherwise `deny` when any path rule allows (an allowlist of paths), else
 * `allow` (a denylist of paths, or no path rules).
 */
export function effectivePathDefault(rule: Pick<Rule, "pathDefault" | "pathRules">): ProxyAction {
  if (rule.pathDefault !== "") return rule.pathDefault;
  return rule.pathRules.some((p) => p.action === "allow") ? "deny" : "allow";
}

/** The proxy scope of a rule scope (agent scopes carry the full `<project>.<agent>` name). */
export function proxyScopeOf(scope: Scope): ProxyScope {
  switch (scope.kind) {
    case "global":
      return { kind: "global" };
    case "project":
      return { kind: "project", project: scope.name };
    case "agent":
      return { kind: "agent", agent: scope.name };
  }
}

// More restrictive first: when two rules land on one proxy key, the earlier kind wins.
const KIND_RANK: Readonly<Record<ProxyEntryKind, number>> = {
  "tls-intercept": 0,
  http: 0,
  "tls-passthrough": 1,
  tcp: 1,
  udp: 1,
};

interface Candidate {
  readonly entry: ProxyEntry;
  readonly identity: number;
}

/** Compiles the rules; pure (see CompiledFirewall). */
export function compileFirewall(input: CompileInput): CompiledFirewall {
  const skipped: SkippedRule[] = [];
  const listeners = assignListeners(input, skipped);
  const candidates: Candidate[] = [];
  for (const { rule, identity } of input.rules) {
    candidates.push(...entriesOf(rule, identity, listeners, skipped));
  }
  const entries = resolveCollisions(candidates, skipped);
  const udp = compileUdp(input, entries, skipped);
  const routes = [...compileRoutes(entries, input.ports, skipped), ...udp.routes].sort(
    (a, b) => a.identity - b.identity || a.dstPort - b.dstPort || a.protocol.localeCompare(b.protocol),
  );
  const certificates = [
    ...new Set(entries.filter((c) => c.entry.kind === "tls-intercept").map((c) => c.entry.dst)),
  ].sort();
  return {
    proxy: {
      entries: entries.map((c) => c.entry),
      sources: input.sources,
      forbidden: input.forbidden,
    },
    dns: { rules: dnsRulesFromListing(input.rules), clients: dnsClientsOf(input.sources) },
    routes,
    certificates,
    listeners,
    udp: udp.relays,
    udpListeners: udp.listeners,
    skipped,
  };
}

/** True when a rule's traffic goes through a route listener (opaque TCP, or an address). */
function usesRouteListener(rule: Rule): boolean {
  if (rule.proto === "udp") return false;
  const kind = dstKind(rule.dst);
  if (kind === "ipv4" || kind === "cidr") return true;
  return !["http", "https", "ws", "wss"].includes(rule.proto);
}

/**
 * One route listener per TCP destination: the previous assignment when it is still a listener,
 * else the lowest free one. Destinations beyond the listener count get none (reported).
 */
function assignListeners(input: CompileInput, skipped: SkippedRule[]): Map<string, number> {
  // Destination -> its rules that need a listener, in listing order.
  const wanted = new Map<string, Rule[]>();
  for (const { rule } of input.rules) {
    if (!usesRouteListener(rule)) continue;
    const list = wanted.get(rule.dst);
    if (list === undefined) wanted.set(rule.dst, [rule]);
    else list.push(rule);
  }
  const available = new Set(input.ports.routes);
  const out = new Map<string, number>();
  for (const dst of wanted.keys()) {
    const previous = input.listeners?.get(dst);
    if (previous !== undefined && available.has(previous)) {
      out.set(dst, previous);
      available.delete(previous);
    }
  }
  const free = [...available].sort((a, b) => a - b);
  for (const [dst, rules] of wanted) {
    if (out.has(dst)) continue;
    const listener = free.shift();
    if (listener !== undefined) {
      out.set(dst, listener);
      continue;
    }
    for (const rule of rules) {
      skipped.push({
        ruleId: compileRuleId(rule),
        reason: "no_route_listener",
        message: `no free route listener for ${dst} (${input.ports.routes.length} configured: firewall.proxy.routePorts.count)`,
      });
    }
  }
  return out;
}

function entriesOf(
  rule: Rule,
  identity: number,
  listeners: ReadonlyMap<string, number>,
  skipped: SkippedRule[],
): Candidate[] {
  const ruleId = compileRuleId(rule);
  const form = dstKind(rule.dst);
  const isAddress = form === "ipv4" || form === "cidr";
  const pathLimited = rule.pathRules.length > 0 || rule.pathDefault === "deny";
  if (isAddress && pathLimited && rule.action === "allow" && rule.proto !== "udp") {
    // An address has no SNI or Host: the proxy can only pass it as opaque TCP, which would allow
    // every path the rule meant to limit. Left out, so it stays denied (fail closed).
    skipped.push({
      ruleId,
      reason: "path_rules_on_address",
      message: `${rule.dst} is an address: path rules cannot be enforced on it (use a name)`,
    });
    return [];
  }
  let listener: number | undefined;
  if (usesRouteListener(rule)) {
    listener = listeners.get(rule.dst);
    if (listener === undefined) return []; // reported by assignListeners
  }
  const kind = kindOf(rule, pathLimited);
  const allowing = rule.action === "allow";
  const withPaths = allowing && (kind === "tls-intercept" || kind === "http") && pathLimited;
  const shape = {
    ruleId,
    scope: proxyScopeOf(rule.scope),
    kind,
    action: rule.action,
    dst: rule.dst,
    ...(listener === undefined ? {} : { listener }),
    ...(withPaths
      ? {
          pathRules: rule.pathRules.map((p) => ({ path: p.path, action: p.action, methods: [...p.methods] })),
          pathDefault: effectivePathDefault(rule),
        }
      : {}),
    ...(allowing && kind === "tls-intercept" && rule.insecureSkipTlsVerify
      ? { insecureSkipTlsVerify: true }
      : {}),
  };
  const [lo, hi] = portSpan(rule.port);
  const out: Candidate[] = [];
  for (let port = lo; port <= hi; port++) out.push({ entry: { ...shape, port }, identity });
  return out;
}

function kindOf(rule: Rule, pathLimited: boolean): ProxyEntryKind {
  if (rule.proto === "udp") return "udp";
  if (usesRouteListener(rule)) return "tcp";
  if (TLS_PROTOCOLS.has(rule.proto)) {
    return rule.action === "allow" && pathLimited ? "tls-intercept" : "tls-passthrough";
  }
  return "http";
}

/** The map a kind lives in (both TLS kinds share one: an SNI has one verdict). */
function mapOf(kind: ProxyEntryKind): string {
  return kind === "tls-intercept" || kind === "tls-passthrough" ? "tls" : kind;
}

/**
 * Two rules of one scope can land on one proxy key (`https` and `wss` to one name and port, or
 * `ssh` and `tcp` to one address). One entry survives: a deny over an allow, then the more
 * restrictive kind (interception over passthrough), then the earlier rule in canonical order.
 */
function resolveCollisions(candidates: readonly Candidate[], skipped: SkippedRule[]): Candidate[] {
  const byKey = new Map<string, Candidate>();
  const order: string[] = [];
  const shadowed = new Set<string>();
  for (const c of candidates) {
    const e = c.entry;
    if (e.kind === "udp") {
      order.push(`udp#${order.length}`);
      byKey.set(order.at(-1)!, c);
      continue;
    }
    const key = `${entryScopeKey(e.scope)}|${mapOf(e.kind)}|${e.port}|${e.listener ?? ""}|${e.dst}`;
    const held = byKey.get(key);
    if (held === undefined) {
      byKey.set(key, c);
      order.push(key);
      continue;
    }
    const [winner, loser] = beats(c.entry, held.entry) ? [c, held] : [held, c];
    byKey.set(key, winner);
    if (!shadowed.has(loser.entry.ruleId)) {
      shadowed.add(loser.entry.ruleId);
      skipped.push({
        ruleId: loser.entry.ruleId,
        reason: "shadowed",
        message: `${loser.entry.ruleId} and ${winner.entry.ruleId} name one destination and port in one scope; ${winner.entry.ruleId} applies`,
      });
    }
  }
  return order.map((k) => byKey.get(k)!);
}

function entryScopeKey(scope: ProxyScope): string {
  return scope.kind === "global" ? "g" : scope.kind === "project" ? `p:${scope.project}` : `a:${scope.agent}`;
}

function beats(a: ProxyEntry, b: ProxyEntry): boolean {
  if (a.action !== b.action) return a.action === "deny";
  return KIND_RANK[a.kind] < KIND_RANK[b.kind];
}

/**
 * Routes per (identity, port): the catch-all listener for names, the route listener for opaque
 * TCP. A destination and port steered to two different listeners by two rules (a name as `https`
 * and as `tcp` on one port) keeps the first rule's route.
 */
function compileRoutes(
  entries: readonly Candidate[],
  ports: CompilePorts,
  skipped: SkippedRule[],
): CompiledRoute[] {
  const routes = new Map<string, CompiledRoute & { ruleId: string }>();
  for (const { entry, identity } of entries) {
    if (entry.kind === "udp" || identity === 0) continue;
    const proxyPort = entry.kind === "tcp" ? entry.listener! : entry.kind === "http" ? ports.http : ports.tls;
    const key = `${identity}/${entry.port}`;
    const held = routes.get(key);
    if (held === undefined) {
      routes.set(key, { identity, dstPort: entry.port, proxyPort, protocol: "tcp", ruleId: entry.ruleId });
    } else if (held.proxyPort !== proxyPort) {
      skipped.push({
        ruleId: entry.ruleId,
        reason: "route_conflict",
        message: `${entry.dst} port ${entry.port} is already routed to proxy port ${held.proxyPort} by ${held.ruleId}`,
      });
    }
  }
  return [...routes.values()].map(({ identity, dstPort, proxyPort, protocol }) => ({
    identity,
    dstPort,
    proxyPort,
    protocol,
  }));
}

/**
 * UDP: one relay port per (dst, port) that some `udp` rule names (sticky like the TCP listeners),
 * a route (identity, port, udp) to it when an allowing rule of any scope names it (the relay
 * decides per agent), and the rules of every scope on it. A CIDR names no one upstream the relay
 * could send to: left out (denied). Pairs beyond the port pool get none (reported).
 */
function compileUdp(
  input: CompileInput,
  entries: readonly Candidate[],
  skipped: SkippedRule[],
): { relays: UdpRelayRoute[]; routes: CompiledRoute[]; listeners: Map<string, number> } {
  const pairs = new Map<string, { dst: string; port: number; identity: number; entries: Candidate[] }>();
  for (const c of entries) {
    if (c.entry.kind !== "udp") continue;
    if (dstKind(c.entry.dst) === "cidr") {
      if (!skipped.some((s) => s.ruleId === c.entry.ruleId && s.reason === "udp_cidr")) {
        skipped.push({
          ruleId: c.entry.ruleId,
          reason: "udp_cidr",
          message: `${c.entry.dst} is a network: the UDP relay needs one name or address to send to`,
        });
      }
      continue;
    }
    const key = `${c.entry.dst}:${c.entry.port}`;
    const held = pairs.get(key);
    if (held === undefined)
      pairs.set(key, { dst: c.entry.dst, port: c.entry.port, identity: c.identity, entries: [c] });
    else held.entries.push(c);
  }
  // Only pairs some rule allows need a socket: a deny alone is what no route already does.
  const wanted = [...pairs].filter(([, p]) => p.entries.some((c) => c.entry.action === "allow"));
  const available = new Set(input.ports.udp ?? []);
  const listeners = new Map<string, number>();
  for (const [key] of wanted) {
    const previous = input.udpListeners?.get(key);
    if (previous !== undefined && available.has(previous)) {
      listeners.set(key, previous);
      available.delete(previous);
    }
  }
  const free = [...available].sort((a, b) => a - b);
  const relays: UdpRelayRoute[] = [];
  const routes: CompiledRoute[] = [];
  for (const [key, p] of wanted) {
    let listener = listeners.get(key);
    if (listener === undefined) listener = free.shift();
    if (listener === undefined) {
      for (const c of p.entries) {
        skipped.push({
          ruleId: c.entry.ruleId,
          reason: "no_route_listener",
          message: `no free UDP relay port for ${key} (${input.ports.udp?.length ?? 0} configured: firewall.proxy.routePorts.count)`,
        });
      }
      continue;
    }
    listeners.set(key, listener);
    relays.push({
      listener,
      dst: p.dst,
      port: p.port,
      entries: p.entries.map((c) => ({
        ruleId: c.entry.ruleId,
        scope: c.entry.scope,
        action: c.entry.action,
      })),
    });
    if (p.identity !== 0)
      routes.push({ identity: p.identity, dstPort: p.port, proxyPort: listener, protocol: "udp" });
  }
  return { relays, routes, listeners };
}

/**
 * The DNS gate's clients: sources with one address (a CIDR names no single asker), the agent by
 * its short name as the gate's policy wants it (`<project>.<agent>` -> `agent`).
 */
function dnsClientsOf(sources: readonly ProxySource[]): DnsClient[] {
  const clients: DnsClient[] = [];
  for (const { address, agent, project } of sources) {
    if (agent === undefined || address.includes("/")) continue;
    const p = project ?? "";
    clients.push({ address, project: p, agent: p === "" ? agent : agent.slice(p.length + 1) });
  }
  return clients;
}
