// The egress rule domain model: a canonical rule (what the store keeps and lists), its scope, the
// protocol table, the dedup key, and the conversion to the wire message. Validation and
// canonicalisation live in rule-validation.ts, the merge and order in rule-merge.ts.
import type { admin } from "@clawker/proto";

/** What a rule or path rule does with matching traffic. */
export type Action = "allow" | "deny";

/** Who a rule applies to: every agent, the agents of one project, or one agent. */
export type ScopeKind = "global" | "project" | "agent";

/**
 * A rule's scope. `name` is "" for global, the project name for a project, and the agent's full
 * name (`<project>.<agent>`, or the agent alone without a project; names contain no dot) for an
 * agent.
 */
export interface Scope {
  readonly kind: ScopeKind;
  readonly name: string;
}

/** The scope of a rule that names none: every agent (the wire default). */
export const GLOBAL_SCOPE: Scope = Object.freeze({ kind: "global", name: "" });

/** One canonical path rule: a literal prefix (`/...`) or `~` + RE2 matching the whole path. */
export interface PathRule {
  readonly path: string;
  readonly action: Action;
  /** Uppercase, deduplicated, sorted; empty means every method. */
  readonly methods: readonly string[];
}

/**
 * One canonical egress rule: every default filled in, names lowercased, path rules sorted by
 * path. Two rules with the same `ruleKey` are the same rule.
 */
export interface Rule {
  readonly scope: Scope;
  /** A domain, `*.` + domain, an IPv4 address or an IPv4 CIDR (network address, prefix < 32). */
  readonly dst: string;
  /** Lowercase; `https` when the caller gave none. */
  readonly proto: string;
  /** One port (`443`) or an inclusive range (`8000-8100`, opaque protocols only), decimal. */
  readonly port: string;
  readonly action: Action;
  readonly pathRules: readonly PathRule[];
  /** The action for paths no path rule matches; "" means none was set. */
  readonly pathDefault: Action | "";
  readonly insecureSkipTlsVerify: boolean;
}

/** A path rule as callers send it (the wire shape; every field optional). */
export interface PathRuleInput {
  readonly path?: string | undefined;
  readonly action?: string | undefined;
  readonly methods?: readonly string[] | undefined;
}

/**
 * A rule as callers send it: the wire `EgressRule` (ts-proto's `admin.EgressRule` is assignable)
 * or a floor-file entry; every field optional, nothing validated yet.
 */
export interface RuleInput {
  readonly dst?: string | undefined;
  readonly proto?: string | undefined;
  readonly port?: string | undefined;
  readonly action?: string | undefined;
  readonly pathRules?: readonly PathRuleInput[] | undefined;
  readonly pathDefault?: string | undefined;
  readonly insecureSkipTlsVerify?: boolean | undefined;
  /** Extension: the project the rule is scoped to. */
  readonly project?: string | undefined;
  /** Extension: the agent the rule is scoped to (short name; `project` is its project). */
  readonly agentName?: string | undefined;
  /** Extension, output only: set in listings for floor rules; callers must not set it. */
  readonly floor?: boolean | undefined;
}

/** Protocols with a name of their own and their default port; every other name is opaque. */
export const NAMED_PROTOCOLS: Readonly<Record<string, number>> = Object.freeze({
  https: 443,
  http: 80,
  ws: 80,
  wss: 443,
  ssh: 22,
});

/** Protocols whose requests the proxy can read, so path rules and a path default apply. */
export const HTTP_PROTOCOLS: ReadonlySet<string> = new Set(["http", "https", "ws", "wss"]);

/** Protocols carried in TLS the proxy may intercept, so skipping upstream verification applies. */
export const TLS_PROTOCOLS: ReadonlySet<string> = new Set(["https", "wss"]);

/** The proto of a rule that names none (API.md §1). */
export const DEFAULT_PROTO = "https";

/**
 * True for the opaque protocols: `tcp`, `udp` and any name without an entry in NAMED_PROTOCOLS
 * (carried as opaque TCP). Only these take port ranges, and they have no default port.
 */
export function isOpaqueProto(proto: string): boolean {
  return !Object.hasOwn(NAMED_PROTOCOLS, proto);
}

/** `global`, `project:<name>` or `agent:<full name>`: the scope part of the dedup key. */
export function scopeKey(scope: Scope): string {
  return scope.kind === "global" ? "global" : `${scope.kind}:${scope.name}`;
}

/** The dedup key: scope + `dst:proto:port`. Rules with equal keys are one rule. */
export function ruleKey(rule: Pick<Rule, "scope" | "dst" | "proto" | "port">): string {
  return `${scopeKey(rule.scope)} ${rule.dst}:${rule.proto}:${rule.port}`;
}

/** A rule's key for people: `example.com:https:443`, plus ` (project web)` when scoped. */
export function describeKey(rule: Pick<Rule, "scope" | "dst" | "proto" | "port">): string {
  const where = rule.scope.kind === "global" ? "" : ` (${rule.scope.kind} ${rule.scope.name})`;
  return `${rule.dst}:${rule.proto}:${rule.port}${where}`;
}

/** The inclusive [lo, hi] a canonical port string denotes (lo === hi for one port). */
export function portSpan(port: string): readonly [number, number] {
  const dash = port.indexOf("-");
  if (dash < 0) {
    const p = Number(port);
    return [p, p];
  }
  return [Number(port.slice(0, dash)), Number(port.slice(dash + 1))];
}

/** What a canonical `dst` is. */
export type DstKind = "domain" | "wildcard" | "ipv4" | "cidr";

/** The kind of a canonical `dst` (as rule-validation produced it). */
export function dstKind(dst: string): DstKind {
  if (dst.startsWith("*.")) return "wildcard";
  if (dst.includes("/")) return "cidr";
  // A canonical domain's last label is never all digits (rule-validation rejects it).
  return IPV4.test(dst) ? "ipv4" : "domain";
}

const IPV4 = /^\d+\.\d+\.\d+\.\d+$/;

/**
 * The RE2 pattern a `~` path rule compiles to: anchored at both ends, because the expression must
 * match the whole path (API.md §1). Undefined for a literal prefix.
 */
export function anchoredPattern(path: string): string | undefined {
  return path.startsWith("~") ? `^(?:${path.slice(1)})$` : undefined;
}

/** The scope's extension fields as the wire carries them (`project`, `agent_name`). */
export function scopeToWire(scope: Scope): { project: string; agentName: string } {
  switch (scope.kind) {
    case "global":
      return { project: "", agentName: "" };
    case "project":
      return { project: scope.name, agentName: "" };
    case "agent": {
      // Project and agent names contain no dot, so the first dot separates them.
      const dot = scope.name.indexOf(".");
      return dot < 0
        ? { project: "", agentName: scope.name }
        : { project: scope.name.slice(0, dot), agentName: scope.name.slice(dot + 1) };
    }
  }
}

/** The wire message for a canonical rule; `floor` marks a floor-file rule in listings. */
export function ruleToWire(rule: Rule, floor = false): admin.EgressRule {
  return {
    dst: rule.dst,
    proto: rule.proto,
    port: rule.port,
    action: rule.action,
    pathRules: rule.pathRules.map((p) => ({ path: p.path, action: p.action, methods: [...p.methods] })),
    pathDefault: rule.pathDefault,
    insecureSkipTlsVerify: rule.insecureSkipTlsVerify,
    ...scopeToWire(rule.scope),
    floor,
  };
}
