// The DNS gate's input (`DnsPolicy`): which names each caller may resolve, who a source address
// is, where allowed queries go, TTL bounds and the per-client rate limit. `compilePolicy` checks
// all of it (every problem listed) and builds the tables the hot path consults. Matching and how
// scopes combine are described in README.md, "Policy".
import * as z from "zod";
import { ipv4 } from "../../ebpf/protocol.js";
import { MAX_WILDCARD_LABELS, matchingPatterns, wildcardDepth } from "../name-match.js";
import type { Action, Scope, ScopeKind } from "../rule.js";
import { InvalidPolicyError, quote, type FieldProblem } from "./errors.js";

/** The eBPF manager's longest DNS entry lifetime (`dns-update` ttl), so the TTL ceiling's bound. */
export const MAX_TTL_SECONDS = 604_800;
/** At most this many rules in one policy. */
export const MAX_POLICY_RULES = 200_000;
/** At most this many source addresses in one policy. */
export const MAX_POLICY_CLIENTS = 65_536;
/** At most this many upstream resolvers. */
export const MAX_UPSTREAMS = 8;

const u32 = z.number().int().min(1).max(0xffff_ffff);
const port = z.number().int().min(1).max(65_535);

const ruleSchema = z.strictObject({
  scope: z.strictObject({ kind: z.enum(["global", "project", "agent"]), name: z.string() }),
  /** `example.com` (that name only) or `*.example.com` (it and every name below it), canonical spelling. */
  pattern: z.string(),
  action: z.enum(["allow", "deny"]),
  /** The route identity the eBPF dns_cache records for addresses of names this rule allows. */
  identity: u32.optional(),
});

const clientSchema = z.strictObject({
  /** The agent container's address on the agents' network. */
  address: ipv4,
  /** Its project ("" for none). */
  project: z.string(),
  /** Its short agent name (the scope name is `<project>.<agent>`, or `<agent>` without a project). */
  agent: z.string(),
});

/** The schema of a DNS policy as the daemon sends it. */
export const DnsPolicySchema = z.strictObject({
  rules: z.array(ruleSchema).max(MAX_POLICY_RULES),
  clients: z.array(clientSchema).max(MAX_POLICY_CLIENTS),
  upstreams: z
    .array(z.strictObject({ address: ipv4, port: port.default(53) }))
    .min(1)
    .max(MAX_UPSTREAMS),
  ttl: z
    .strictObject({
      // At least 1: a ttl of 0 in the manager's dns-update removes the entry.
      floor: z.number().int().min(1).max(MAX_TTL_SECONDS).default(30),
      ceiling: z.number().int().min(1).max(MAX_TTL_SECONDS).default(3_600),
    })
    .prefault({}),
  rateLimit: z
    .strictObject({
      queriesPerSecond: z.number().min(0.1).max(1_000_000).default(200),
      burst: z.number().int().min(1).max(1_000_000).default(400),
    })
    .prefault({}),
  /** Budget for one upstream attempt (UDP, and TCP after truncation); then the next upstream. */
  upstreamTimeoutMs: z.number().int().min(50).max(30_000).default(2_000),
});

/** A DNS policy as the daemon writes it (defaults may be left out). */
export type DnsPolicy = z.input<typeof DnsPolicySchema>;
/** One name rule of a policy. */
export type DnsRule = z.input<typeof ruleSchema>;
/** One source address of a policy: who is asking. */
export type DnsClient = z.input<typeof clientSchema>;
/** One upstream resolver. */
export interface DnsUpstream {
  readonly address: string;
  readonly port: number;
}

/** The rule a decision came from: its pattern, scope and action. */
export interface MatchedRule {
  readonly pattern: string;
  readonly scope: Scope;
  readonly action: Action;
}

/** Why a name was refused. */
export type DenyReason = "rule_deny" | "no_rule";

/** The policy's answer for one caller and one name. */
export type PolicyVerdict =
  | { readonly allowed: true; readonly identity: number; readonly rule: MatchedRule }
  | { readonly allowed: false; readonly reason: "rule_deny"; readonly rule: MatchedRule }
  | { readonly allowed: false; readonly reason: "no_rule" };

/** A known source address: the agent and project whose rules apply to it. */
export interface DnsCaller {
  readonly address: string;
  readonly project: string;
  readonly agent: string;
  /** The agent's scope name (`<project>.<agent>` or `<agent>`). */
  readonly agentScope: string;
}

/** The compiled policy's TTL bounds, rate limit and upstream budget. */
export interface PolicySettings {
  readonly upstreams: readonly DnsUpstream[];
  readonly ttl: { readonly floor: number; readonly ceiling: number };
  readonly rateLimit: { readonly queriesPerSecond: number; readonly burst: number };
  readonly upstreamTimeoutMs: number;
}

interface ScopedRule {
  readonly rule: MatchedRule;
  readonly identity: number | undefined;
}

/** The rules of one pattern, by the scope they apply to. */
interface PatternRules {
  global?: ScopedRule;
  readonly projects: Map<string, ScopedRule>;
  readonly agents: Map<string, ScopedRule>;
}

const NO_RULE: PolicyVerdict = Object.freeze({ allowed: false, reason: "no_rule" });

/** A validated policy in lookup form; immutable, so the gate swaps it with one assignment. */
export class CompiledPolicy {
  /** TTL bounds, rate limit and upstreams. */
  readonly settings: PolicySettings;
  /** Rules in the policy (after merging duplicates). */
  readonly ruleCount: number;
  private readonly patterns: ReadonlyMap<string, PatternRules>;
  private readonly callers: ReadonlyMap<string, DnsCaller>;

  /** Use compilePolicy; this constructor trusts its input. */
  constructor(
    settings: PolicySettings,
    patterns: ReadonlyMap<string, PatternRules>,
    callers: ReadonlyMap<string, DnsCaller>,
    ruleCount: number,
  ) {
    this.settings = settings;
    this.patterns = patterns;
    this.callers = callers;
    this.ruleCount = ruleCount;
  }

  /** The caller behind a source address, or undefined for an address the policy does not know. */
  caller(address: string): DnsCaller | undefined {
    return this.callers.get(address);
  }

  /** How many source addresses the policy knows. */
  get callerCount(): number {
    return this.callers.size;
  }

  /**
   * Decides a lowercase name without the root dot: the longest pattern with a rule for the caller
   * (its agent, its project, or global) wins, in name-match.ts's order (the name, `*.` + the name,
   * `*.` + each parent from the longest); at that pattern a deny in any of them beats an allow.
   */
  decide(caller: DnsCaller, name: string): PolicyVerdict {
    for (const pattern of matchingPatterns(name)) {
      const verdict = this.decideAt(pattern, caller);
      if (verdict !== undefined) return verdict;
    }
    return NO_RULE;
  }

  private decideAt(pattern: string, caller: DnsCaller): PolicyVerdict | undefined {
    const rules = this.patterns.get(pattern);
    if (rules === undefined) return undefined;
    // Most specific scope first, so an allow reports the agent's (or project's) own rule.
    const applicable: ScopedRule[] = [];
    const agent = rules.agents.get(caller.agentScope);
    if (agent !== undefined) applicable.push(agent);
    const project = caller.project === "" ? undefined : rules.projects.get(caller.project);
    if (project !== undefined) applicable.push(project);
    if (rules.global !== undefined) applicable.push(rules.global);
    if (applicable.length === 0) return undefined;
    const deny = applicable.find((r) => r.rule.action === "deny");
    if (deny !== undefined) return { allowed: false, reason: "rule_deny", rule: deny.rule };
    const allow = applicable[0]!;
    return { allowed: true, identity: allow.identity!, rule: allow.rule };
  }
}

/** A policy that answers nothing: no rules, no known callers. The gate starts with it. */
export const EMPTY_POLICY = new CompiledPolicy(
  {
    upstreams: [],
    ttl: { floor: 30, ceiling: 3_600 },
    rateLimit: { queriesPerSecond: 200, burst: 400 },
    upstreamTimeoutMs: 2_000,
  },
  new Map(),
  new Map(),
  0,
);

const LABEL = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/;
const DIGITS = /^[0-9]+$/;
const SCOPE_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;
const MAX_SCOPE_NAME = 64;

/**
 * Checks that a pattern is in the rule store's canonical spelling (lowercase RFC 1123 labels, no
 * root dot, `*.` only as a whole first label over two or more labels); the message says why not.
 */
export function checkPattern(pattern: string): string | undefined {
  if (pattern.length === 0) return "is empty";
  if (pattern.length > 253) return "is longer than 253 characters";
  const wildcard = pattern.startsWith("*.");
  const labels = (wildcard ? pattern.slice(2) : pattern).split(".");
  for (const label of labels) {
    if (label.length === 0 || label.length > 63 || !LABEL.test(label)) {
      return `${quote(pattern)} is not a canonical name (lowercase letters, digits and inner hyphens; "*." only as the first label)`;
    }
  }
  if (DIGITS.test(labels[labels.length - 1]!)) return `${quote(pattern)} ends in an all-digit label`;
  if (wildcard && labels.length < 2) return `${quote(pattern)} is a wildcard over a single label`;
  // The proxy holds one lookup per level: a deeper wildcard would be answered here and never match there.
  if (wildcardDepth(pattern) > MAX_WILDCARD_LABELS) {
    return `${quote(pattern)} is a wildcard over more than ${MAX_WILDCARD_LABELS} labels`;
  }
  return undefined;
}

function checkName(name: string, what: string): string | undefined {
  if (name.length > 0 && name.length <= MAX_SCOPE_NAME && SCOPE_NAME.test(name)) return undefined;
  return `${quote(name)} is not ${what} (letters, digits, "_" and "-", starting with a letter or digit, at most ${MAX_SCOPE_NAME})`;
}

function checkScope(kind: ScopeKind, name: string): string | undefined {
  switch (kind) {
    case "global":
      return name === "" ? undefined : "a global scope has no name";
    case "project":
      return checkName(name, "a project name");
    case "agent": {
      // `<project>.<agent>` or `<agent>`: names contain no dot (rule.ts).
      const parts = name.split(".");
      if (parts.length > 2) return `${quote(name)} is not <project>.<agent> or <agent>`;
      for (const part of parts) {
        const problem = checkName(part, "an agent scope name");
        if (problem !== undefined) return problem;
      }
      return undefined;
    }
  }
}

function zodPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const p of path) out += typeof p === "number" ? `[${p}]` : out === "" ? String(p) : `.${String(p)}`;
  return out;
}

/**
 * Validates a policy (every problem listed, as InvalidPolicyError) and compiles it. Rules with the
 * same scope and pattern merge (a deny wins); allow rules need an identity, and one pattern has
 * one identity in every scope, as route identities are per destination.
 */
export function compilePolicy(input: unknown): CompiledPolicy {
  const parsed = DnsPolicySchema.safeParse(input);
  if (!parsed.success) {
    throw new InvalidPolicyError(
      parsed.error.issues.map((i) => ({ path: zodPath(i.path), message: i.message })),
    );
  }
  const policy = parsed.data;
  const problems: FieldProblem[] = [];
  if (policy.ttl.floor > policy.ttl.ceiling) {
    problems.push({
      path: "ttl",
      message: `floor ${policy.ttl.floor} is above ceiling ${policy.ttl.ceiling}`,
    });
  }

  const patterns = new Map<string, PatternRules>();
  const identities = new Map<string, { identity: number; at: number }>();
  let ruleCount = 0;
  policy.rules.forEach((r, i) => {
    const at = `rules[${i}]`;
    const scopeProblem = checkScope(r.scope.kind, r.scope.name);
    if (scopeProblem !== undefined) problems.push({ path: `${at}.scope.name`, message: scopeProblem });
    const patternProblem = checkPattern(r.pattern);
    if (patternProblem !== undefined) problems.push({ path: `${at}.pattern`, message: patternProblem });
    if (r.action === "allow") {
      if (r.identity === undefined) {
        problems.push({ path: `${at}.identity`, message: "is required for an allow rule" });
      } else {
        const seen = identities.get(r.pattern);
        if (seen === undefined) identities.set(r.pattern, { identity: r.identity, at: i });
        else if (seen.identity !== r.identity) {
          problems.push({
            path: `${at}.identity`,
            message: `${r.identity} differs from ${seen.identity} given for ${quote(r.pattern)} in rules[${seen.at}]`,
          });
        }
      }
    }
    if (scopeProblem !== undefined || patternProblem !== undefined) return;
    let entry = patterns.get(r.pattern);
    if (entry === undefined) {
      entry = { projects: new Map(), agents: new Map() };
      patterns.set(r.pattern, entry);
    }
    const scope: Scope = Object.freeze({ kind: r.scope.kind, name: r.scope.name });
    const scoped: ScopedRule = {
      rule: Object.freeze({ pattern: r.pattern, scope, action: r.action }),
      identity: r.identity,
    };
    const previous =
      r.scope.kind === "global"
        ? entry.global
        : (r.scope.kind === "project" ? entry.projects : entry.agents).get(r.scope.name);
    if (previous === undefined) ruleCount++;
    // The same scope and pattern twice: a deny wins, as it does across scopes.
    if (previous !== undefined && previous.rule.action === "deny") return;
    if (r.scope.kind === "global") entry.global = scoped;
    else (r.scope.kind === "project" ? entry.projects : entry.agents).set(r.scope.name, scoped);
  });

  const callers = new Map<string, DnsCaller>();
  policy.clients.forEach((c, i) => {
    const at = `clients[${i}]`;
    if (callers.has(c.address)) {
      problems.push({ path: `${at}.address`, message: `${c.address} is listed twice` });
      return;
    }
    const projectProblem = c.project === "" ? undefined : checkName(c.project, "a project name");
    if (projectProblem !== undefined) problems.push({ path: `${at}.project`, message: projectProblem });
    const agentProblem = c.agent === "" ? "is required" : checkName(c.agent, "an agent name");
    if (agentProblem !== undefined) problems.push({ path: `${at}.agent`, message: agentProblem });
    const agentScope = c.project === "" ? c.agent : `${c.project}.${c.agent}`;
    callers.set(
      c.address,
      Object.freeze({ address: c.address, project: c.project, agent: c.agent, agentScope }),
    );
  });

  if (problems.length > 0) throw new InvalidPolicyError(problems);
  const settings: PolicySettings = Object.freeze({
    upstreams: Object.freeze(policy.upstreams.map((u) => Object.freeze({ ...u }))),
    ttl: Object.freeze({ ...policy.ttl }),
    rateLimit: Object.freeze({ ...policy.rateLimit }),
    upstreamTimeoutMs: policy.upstreamTimeoutMs,
  });
  return new CompiledPolicy(settings, patterns, callers, ruleCount);
}
