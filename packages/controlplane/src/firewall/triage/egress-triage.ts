// Live denial triage (issue 11 §3): denials grouped by (destination, port, agent), agents' pending
// requests (durable), approvals that become real rules through the Firewall's normal add path
// (validation, dedup, rule_changes with who, the live reconcile), expiring approvals removed by
// themselves (their end stored, so also after a restart), and dismissals. See README.md.
import { randomBytes } from "node:crypto";
import { agentFullName, egress } from "@clawker/proto";
import type { Logger } from "pino";
import { FirewallError, InvalidRuleError, QueueClosedError, SavedNotAppliedError, quote } from "../errors.js";
import { ruleKey, scopeToWire, type Rule, type RuleInput, type Scope } from "../rule.js";
import { auditWhoOf as whoOf, type AuditWho } from "../audit/audit-record.js";
import type { Actor, AddStatus, ListedRule, RemoveResult, RemoveSelector } from "../rule-store.js";
import { canonicalRules } from "../rule-validation.js";
import { DenialGroups, groupKey, suggestedRule, type DenialGroup } from "./denial-groups.js";
import { ruleCovers, type Wanted } from "./rule-cover.js";
import { TriageStore, type ExpiringRule, type StoredRequest } from "./triage-store.js";

/** What the triage needs of the Firewall: its normal add and remove path, its listing, its state. */
export interface TriageFirewall {
  /** True while the stack runs (an added rule is live once addRules resolves). */
  readonly running: boolean;
  /** The daemon's database file (the triage's tables live there, migration 2 of the firewall). */
  readonly database: string;
  addRules(inputs: readonly RuleInput[], actor: Actor): Promise<AddStatus[]>;
  removeRule(selector: RemoveSelector, actor: Actor): Promise<RemoveResult>;
  listRules(): readonly ListedRule[];
}

export type { AuditWho };

/** The operator and agent actions the triage records. */
export type TriageActionKind = "approval" | "dismissal" | "request";

/** Where approvals, dismissals and requests are recorded (the AuditLog has this method). */
export interface AuditSink {
  action(kind: TriageActionKind, who: AuditWho, detail: Record<string, unknown>): void;
}

/** What an EgressTriage is built from. */
export interface EgressTriageOptions {
  readonly firewall: TriageFirewall;
  readonly log: Logger;
  readonly audit?: AuditSink;
  /** Denial groups kept (default 1,000); at the cap the least recently seen tenth is evicted. */
  readonly maxGroups?: number;
  /** Pending requests per agent (default 20). */
  readonly maxPendingPerAgent?: number;
  /** RequestEgress per agent: a burst (default 5), then one per `requestRefillMs` (default 10 s). */
  readonly requestBurst?: number;
  readonly requestRefillMs?: number;
  /** Clock in unix milliseconds. */
  readonly now?: () => number;
}

/** The agent a RequestEgress came from, as the identity gate found it (never from the request). */
export interface RequestingAgent {
  readonly containerId: string;
  readonly agentName: string;
  readonly project: string;
}

/** What an agent asks for (RequestEgressRequest). */
export interface EgressAsk {
  readonly dst: string;
  readonly port: number;
  readonly proto: string;
  readonly reason: string;
}

/** An approval: exactly one of the ids, a scope, 0 (permanent) or seconds until it ends. */
export interface ApprovalInput {
  readonly denialId: string;
  readonly requestId: string;
  readonly scope: egress.ApprovalScope;
  readonly expiresAfterSeconds: number;
}

/** The rule that now stands, live; 0 for a permanent one. */
export interface Approval {
  readonly rule: ListedRule;
  readonly expiresAtUnixMs: number;
}

/** A triage list entry: a group with the agent's pending requests for its destination. */
export interface TriageGroup {
  readonly group: DenialGroup;
  readonly requests: readonly StoredRequest[];
}

/** What the triage counts (metrics read it). */
export interface TriageStats {
  readonly groups: number;
  readonly denialsRecorded: number;
  readonly groupsEvicted: number;
  /** Denials left out because a current allow rule covers their destination. */
  readonly denialsCovered: number;
  readonly pendingRequests: number;
  readonly requestsRefused: number;
  readonly approvals: number;
  readonly dismissals: number;
  readonly expiringRules: number;
  readonly expired: number;
}

/** The reason an agent gives: at most this many UTF-8 bytes. */
export const MAX_REASON_BYTES = 512;
/** The longest an approval may last before it ends by itself: 30 days. */
export const MAX_APPROVAL_SECONDS = 30 * 24 * 3600;
/** Who removes an expired approval (rule_changes' actor). */
export const EXPIRY_ACTOR: Actor = Object.freeze({ clientId: "egress-triage", certCn: "expiry" });

// Every control, format (bidi overrides included), surrogate, private-use or unassigned character.
const NOT_PRINTABLE = /\p{C}/u;
const RETRY_EXPIRY_MS = 5_000;
// setTimeout's longest delay; a later end is re-armed when this one fires.
const MAX_TIMER_MS = 2 ** 31 - 1;
const MAX_BUCKETS = 4_096;
const MAX_COVERAGE_MEMO = 4_096;

/** Live denial triage with approvals (see the file comment). */
export class EgressTriage {
  readonly #firewall: TriageFirewall;
  readonly #log: Logger;
  readonly #audit: AuditSink | undefined;
  readonly #now: () => number;
  readonly #groups: DenialGroups;
  readonly #maxPending: number;
  readonly #burst: number;
  readonly #refillMs: number;
  readonly #buckets = new Map<string, { tokens: number; at: number }>();
  #store: TriageStore | undefined;
  #timer: NodeJS.Timeout | undefined;
  /** Approvals and expiries run one at a time, so an expiry never removes a rule just re-approved. */
  #chain: Promise<unknown> = Promise.resolve();
  #covers: { readonly of: readonly ListedRule[]; readonly index: CoverIndex } | undefined;
  /** Whether a (group, protocol, layer) is covered, for the rule listing `of` (a new one starts afresh). */
  #coverage: { of: readonly ListedRule[] | undefined; known: Map<string, boolean> } = {
    of: undefined,
    known: new Map(),
  };
  #closed = false;
  #counts = { requestsRefused: 0, approvals: 0, dismissals: 0, expired: 0 };
  /** Denials not grouped because a current allow rule covers them. */
  #coveredCount = 0;

  constructor(options: EgressTriageOptions) {
    this.#firewall = options.firewall;
    this.#log = options.log.child({ component: "egress-triage" });
    this.#audit = options.audit;
    this.#now = options.now ?? Date.now;
    this.#groups = new DenialGroups(options.maxGroups ?? 1_000);
    this.#maxPending = options.maxPendingPerAgent ?? 20;
    this.#burst = options.requestBurst ?? 5;
    this.#refillMs = options.requestRefillMs ?? 10_000;
  }

  /**
   * Opens its tables (after the Firewall started: its migrations made them) and arms the expiry of
   * every stored expiring approval; one already past is removed at once.
   */
  start(signal: AbortSignal): Promise<void> {
    signal.throwIfAborted();
    this.#store = new TriageStore(this.#firewall.database);
    signal.addEventListener("abort", () => void this.close(), { once: true });
    this.#arm();
    return Promise.resolve();
  }

  /**
   * Takes one decision of the event stream; only denials are kept, and not those a current allow
   * rule covers (an approved destination is never offered again while its rule stands). Constant
   * work per denial: the coverage of a (group, protocol, layer) is worked out once per rule set and
   * remembered. Never throws.
   */
  record(event: egress.FirewallEvent): void {
    if (event.verdict !== egress.Verdict.VERDICT_DENIED || this.#closed) return;
    try {
      const key = groupKey(event);
      if (key === undefined) {
        this.#coveredCount++;
        return;
      }
      const rules = this.#firewall.listRules();
      if (this.#coverage.of !== rules) this.#coverage = { of: rules, known: new Map() };
      // The suggested rule (what coverage is judged on) depends on the protocol and layer too.
      const coverKey = `${key}\n${event.protocol}\n${event.layer}`;
      let covered = this.#coverage.known.get(coverKey);
      if (covered === undefined) {
        covered = this.#coveredNow(event);
        // Bounded like the groups: a flood of distinct names starts the memo afresh.
        if (this.#coverage.known.size >= MAX_COVERAGE_MEMO) this.#coverage.known.clear();
        this.#coverage.known.set(coverKey, covered);
      }
      if (covered) {
        this.#coveredCount++;
        return;
      }
      this.#groups.record(event, key);
    } catch (err) {
      // Draining: the firewall's listing is closed; decisions still arriving are not triaged.
      if (err instanceof QueueClosedError) return;
      this.#log.error({ err, event: "triage_record_failed" }, "denial not recorded");
    }
  }

  /** Whether a current allow rule covers the rule that would allow this denial. */
  #coveredNow(event: egress.FirewallEvent): boolean {
    const rule = suggestedRule(event);
    return (
      rule.dst === "" ||
      this.#covered({
        agent: event.agentName === "" ? "" : agentFullName(event.project, event.agentName),
        project: event.project,
        dst: rule.dst,
        proto: rule.proto,
        port: Number(rule.port),
      })
    );
  }

  /**
   * The triage list, newest first: groups (filtered by agent short name / project / last seen),
   * each with its agent's pending requests for that destination, then the requests that match no
   * group. Whatever a current allow rule covers is left out.
   */
  list(filter: { agentName?: string; project?: string; sinceUnixNanos?: bigint } = {}): {
    groups: TriageGroup[];
    requests: StoredRequest[];
  } {
    const store = this.#openStore();
    const match = (agentName: string, project: string): boolean =>
      (filter.agentName === undefined || filter.agentName === "" || filter.agentName === agentName) &&
      (filter.project === undefined || filter.project === "" || filter.project === project);
    const pending = store
      .requests()
      .filter((r) => match(r.agentName, r.project) && !this.#covered(wantedOfRequest(r)));
    const claimed = new Set<string>();
    const groups: TriageGroup[] = [];
    for (const group of this.#groups.list()) {
      if (!match(group.agentName, group.project)) continue;
      if (filter.sinceUnixNanos !== undefined && group.lastSeen < filter.sinceUnixNanos) continue;
      if (this.#covered(wantedOfGroup(group))) continue;
      const requests = pending.filter(
        (r) =>
          agentFullName(r.project, r.agentName) === group.agent &&
          r.dst === group.suggested.dst &&
          r.port === group.suggested.port,
      );
      for (const r of requests) claimed.add(r.id);
      groups.push({ group, requests });
    }
    return { groups, requests: pending.filter((r) => !claimed.has(r.id)) };
  }

  /**
   * ApproveEgress: the group's (or request's) suggested rule added with the chosen scope through
   * the Firewall's add path; resolves once the proxy and DNS gate run it. An expiring approval
   * stores its end; a permanent one over an expiring rule makes it permanent.
   */
  approve(input: ApprovalInput, actor: Actor): Promise<Approval> {
    const run = this.#chain.then(() => this.#approve(input, actor));
    this.#chain = run.catch(() => undefined);
    return run;
  }

  async #approve(input: ApprovalInput, actor: Actor): Promise<Approval> {
    const store = this.#openStore();
    const target = this.#target(input);
    const seconds = input.expiresAfterSeconds;
    if (!Number.isInteger(seconds) || seconds < 0 || seconds > MAX_APPROVAL_SECONDS) {
      throw new FirewallError(
        "invalid_request",
        `expires_after_seconds must be 0 (permanent) or at most ${MAX_APPROVAL_SECONDS} (30 days)`,
      );
    }
    const scope = scopeOf(input.scope, target.agentName, target.project);
    if (!this.#firewall.running) {
      throw new FirewallError(
        "not_running",
        "the firewall is not running, so an approval would not be live (start it: clawker firewall up)",
      );
    }
    const ruleInput: RuleInput = {
      dst: target.dst,
      proto: target.proto,
      port: target.port,
      action: "allow",
      ...scopeToWire(scope),
    };
    const rule = canonicalRules([ruleInput])[0]!;
    const key = { scope: rule.scope, dst: rule.dst, proto: rule.proto, port: rule.port };
    const held = store.expiringOf(key);
    let statuses: AddStatus[];
    try {
      statuses = await this.#firewall.addRules([ruleInput], actor);
    } catch (err) {
      // Stored but not live: the caller is told so, and the expiry (if any) is still recorded so a
      // temporary approval can never become permanent by a failed apply.
      if (err instanceof SavedNotAppliedError && seconds > 0) {
        store.putExpiring({ ...key, expiresAtUnixMs: this.#now() + seconds * 1000 });
        this.#arm();
      }
      throw err;
    }
    // An allow rule that already stood permanently stays permanent: an expiry must never remove a
    // rule the approval did not add.
    const preexisting = statuses[0] === "unchanged" && held === undefined;
    let expiresAtUnixMs = 0;
    if (seconds > 0 && !preexisting) {
      expiresAtUnixMs = Math.max(this.#now() + seconds * 1000, held?.expiresAtUnixMs ?? 0);
      store.putExpiring({ ...key, expiresAtUnixMs });
    } else if (seconds === 0 && held !== undefined) {
      store.deleteExpiring(key);
    }
    this.#arm();
    if (target.kind === "denial") this.#groups.delete(target.id);
    else store.deleteRequest(target.id);
    this.#counts.approvals++;
    const listed = this.#firewall.listRules().find((l) => ruleKey(l.rule) === ruleKey(rule)) ?? {
      rule,
      floor: false,
      identity: 0,
    };
    this.#log.info(
      {
        event: "egress_approved",
        clientId: actor.clientId,
        certCn: actor.certCn,
        from: target.kind,
        id: target.id,
        rule: ruleKey(rule),
        expiresAtUnixMs,
      },
      "egress approved",
    );
    this.#audit?.action("approval", whoOf(actor), {
      [target.kind === "denial" ? "denial_id" : "request_id"]: target.id,
      rule: ruleKey(rule),
      dst: rule.dst,
      proto: rule.proto,
      port: rule.port,
      scope: scope.kind,
      scope_name: scope.name,
      status: statuses[0],
      expires_at_unix_ms: expiresAtUnixMs,
    });
    return { rule: listed, expiresAtUnixMs };
  }

  /** DismissEgress: the group or request leaves the list (a group until it happens again). */
  dismiss(input: { denialId: string; requestId: string }, actor: Actor): void {
    const store = this.#openStore();
    const target = this.#target({ ...input });
    if (target.kind === "denial") this.#groups.delete(target.id);
    else store.deleteRequest(target.id);
    this.#counts.dismissals++;
    this.#log.info(
      {
        event: "egress_dismissed",
        clientId: actor.clientId,
        certCn: actor.certCn,
        from: target.kind,
        id: target.id,
      },
      "egress dismissed",
    );
    this.#audit?.action("dismissal", whoOf(actor), {
      [target.kind === "denial" ? "denial_id" : "request_id"]: target.id,
      dst: target.dst,
      port: target.port,
      agent: agentFullName(target.project, target.agentName),
    });
  }

  /**
   * RequestEgress from an agent the identity gate found: validated like a rule, rate-limited per
   * agent, capped per agent, stored as pending. Grants nothing; an already allowed destination
   * queues nothing.
   */
  request(
    agent: RequestingAgent,
    ask: EgressAsk,
    actor: Actor,
  ): { requestId: string; alreadyAllowed: boolean } {
    const store = this.#openStore();
    const reason = checkReason(ask.reason);
    const rule = canonicalAsk(ask);
    const full = agentFullName(agent.project, agent.agentName);
    if (!this.#take(`${agent.containerId} ${full}`)) {
      this.#counts.requestsRefused++;
      throw new FirewallError("too_many_requests", "too many egress requests; ask again later");
    }
    const wanted = {
      agent: full,
      project: agent.project,
      dst: rule.dst,
      proto: rule.proto,
      port: Number(rule.port),
    };
    if (this.#covered(wanted)) return { requestId: "", alreadyAllowed: true };
    const stored = store.putRequest(
      {
        id: `r-${randomBytes(10).toString("hex")}`,
        containerId: agent.containerId,
        agentName: agent.agentName,
        project: agent.project,
        dst: rule.dst,
        proto: rule.proto,
        port: rule.port,
        reason,
        requestedAtUnixMs: this.#now(),
      },
      this.#maxPending,
    );
    if (stored === undefined) {
      this.#counts.requestsRefused++;
      throw new FirewallError(
        "too_many_requests",
        `this agent already has ${this.#maxPending} pending egress requests; wait for the operator`,
      );
    }
    this.#log.info(
      {
        event: "egress_requested",
        agent: full,
        containerId: agent.containerId,
        id: stored.id,
        dst: rule.dst,
        port: rule.port,
        proto: rule.proto,
      },
      "egress requested",
    );
    this.#audit?.action("request", whoOf(actor), {
      request_id: stored.id,
      agent: full,
      container_id: agent.containerId,
      dst: rule.dst,
      proto: rule.proto,
      port: rule.port,
      reason,
    });
    return { requestId: stored.id, alreadyAllowed: false };
  }

  /** Counts for metrics; cheap. */
  stats(): TriageStats {
    const g = this.#groups.stats();
    let pending = 0;
    let expiring = 0;
    if (this.#store !== undefined && !this.#closed) {
      pending = this.#store.requests().length;
      expiring = this.#store.expiring().length;
    }
    return {
      groups: g.groups,
      denialsRecorded: g.recorded,
      groupsEvicted: g.evicted,
      denialsCovered: this.#coveredCount,
      pendingRequests: pending,
      requestsRefused: this.#counts.requestsRefused,
      approvals: this.#counts.approvals,
      dismissals: this.#counts.dismissals,
      expiringRules: expiring,
      expired: this.#counts.expired,
    };
  }

  /** Stops the expiry timer and closes the tables. Idempotent. */
  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    // An approval or expiry in flight finishes first (it holds the store).
    return this.#chain.then(() => this.#store?.close());
  }

  // ---- internals ----

  #openStore(): TriageStore {
    if (this.#closed) throw new QueueClosedError();
    if (this.#store === undefined) throw new FirewallError("internal", "egress triage not started");
    return this.#store;
  }

  /** The group or request an approval or dismissal names; exactly one id. */
  #target(input: { denialId: string; requestId: string }): Target {
    const hasDenial = input.denialId !== "";
    if (hasDenial === (input.requestId !== "")) {
      throw new FirewallError("invalid_request", "give exactly one of denial_id and request_id");
    }
    if (hasDenial) {
      const group = this.#groups.get(input.denialId);
      if (group === undefined) {
        throw new FirewallError(
          "unknown_triage_item",
          `no denial ${quote(input.denialId)} (listed by: clawker firewall denials)`,
        );
      }
      return {
        kind: "denial",
        id: group.id,
        agentName: group.agentName,
        project: group.project,
        dst: group.suggested.dst,
        proto: group.suggested.proto,
        port: group.suggested.port,
      };
    }
    const request = this.#openStore().request(input.requestId);
    if (request === undefined) {
      throw new FirewallError(
        "unknown_triage_item",
        `no pending request ${quote(input.requestId)} (listed by: clawker firewall denials)`,
      );
    }
    return { kind: "request", ...request };
  }

  /** Whether a current allow rule covers it (the listing is indexed once per rule change). */
  #covered(wanted: Wanted): boolean {
    const rules = this.#firewall.listRules();
    if (this.#covers?.of !== rules) this.#covers = { of: rules, index: coverIndex(rules) };
    return this.#covers.index.candidates(wanted.dst).some((rule) => ruleCovers(rule, wanted));
  }

  /** One token of the agent's bucket, if it has one. */
  #take(agent: string): boolean {
    const now = this.#now();
    let bucket = this.#buckets.get(agent);
    if (bucket === undefined) {
      if (this.#buckets.size >= MAX_BUCKETS) this.#buckets.delete(this.#buckets.keys().next().value!);
      bucket = { tokens: this.#burst, at: now };
      this.#buckets.set(agent, bucket);
    }
    bucket.tokens = Math.min(this.#burst, bucket.tokens + (now - bucket.at) / this.#refillMs);
    bucket.at = now;
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  /** Arms the timer for the soonest stored end. */
  #arm(): void {
    if (this.#closed || this.#store === undefined) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const soonest = this.#store.expiring()[0];
    if (soonest === undefined) return;
    const delay = Math.min(Math.max(soonest.expiresAtUnixMs - this.#now(), 0), MAX_TIMER_MS);
    this.#timer = setTimeout(() => {
      const run = this.#chain.then(() => this.#expire());
      this.#chain = run.catch(() => undefined);
    }, delay);
    this.#timer.unref();
  }

  /** Removes every approval whose end has come, through the Firewall's remove path. */
  async #expire(): Promise<void> {
    if (this.#closed || this.#store === undefined) return;
    const now = this.#now();
    let retry = false;
    for (const due of this.#store.expiring().filter((e) => e.expiresAtUnixMs <= now)) {
      const removed = await this.#removeExpired(due);
      if (this.#closed) return;
      if (removed) this.#store.deleteExpiring(due);
      else retry = true;
    }
    if (retry) {
      this.#timer = setTimeout(() => {
        const run = this.#chain.then(() => this.#expire());
        this.#chain = run.catch(() => undefined);
      }, RETRY_EXPIRY_MS);
      this.#timer.unref();
      return;
    }
    this.#arm();
  }

  /** True when the rule is gone (removed now, or already); false to try again later. */
  async #removeExpired(due: ExpiringRule): Promise<boolean> {
    const selector: RemoveSelector = {
      dst: due.dst,
      proto: due.proto,
      port: due.port,
      ...scopeToWire(due.scope),
    };
    try {
      const result = await this.#firewall.removeRule(selector, EXPIRY_ACTOR);
      this.#counts.expired++;
      this.#log.info(
        { event: "approval_expired", rule: ruleKey(due), status: result.status },
        "approved egress rule expired",
      );
      return true;
    } catch (err) {
      if (err instanceof SavedNotAppliedError) return true; // removed durably; the next reload applies it
      if (err instanceof QueueClosedError) return false; // draining: the next start removes it
      this.#log.error(
        { err, event: "approval_expiry_failed", rule: ruleKey(due) },
        "expired rule not removed; retrying",
      );
      return false;
    }
  }
}

interface Target {
  readonly kind: "denial" | "request";
  readonly id: string;
  readonly agentName: string;
  readonly project: string;
  readonly dst: string;
  readonly proto: string;
  readonly port: string;
}

/** Allow rules by dst, so a coverage check reads only the rules that could match. */
interface CoverIndex {
  candidates(dst: string): Rule[];
}

function coverIndex(listed: readonly ListedRule[]): CoverIndex {
  const byDst = new Map<string, Rule[]>();
  const cidrs: Rule[] = [];
  for (const { rule } of listed) {
    if (rule.action !== "allow") continue;
    if (rule.dst.includes("/")) {
      cidrs.push(rule);
      continue;
    }
    let list = byDst.get(rule.dst);
    if (list === undefined) byDst.set(rule.dst, (list = []));
    list.push(rule);
  }
  return {
    candidates(dst: string): Rule[] {
      const out = [...(byDst.get(dst) ?? []), ...cidrs];
      // `*.p` covers p and every name below it.
      const labels = dst.split(".");
      for (let i = 0; i < labels.length - 1; i++)
        out.push(...(byDst.get(`*.${labels.slice(i).join(".")}`) ?? []));
      return out;
    },
  };
}

function wantedOfGroup(group: DenialGroup): Wanted {
  return {
    agent: group.agent,
    project: group.project,
    dst: group.suggested.dst,
    proto: group.suggested.proto,
    port: Number(group.suggested.port),
  };
}

function wantedOfRequest(r: StoredRequest): Wanted {
  return {
    agent: agentFullName(r.project, r.agentName),
    project: r.project,
    dst: r.dst,
    proto: r.proto,
    port: Number(r.port),
  };
}

/** The rule scope an approval picks, for the agent (short name, project) the denial or request is of. */
function scopeOf(scope: egress.ApprovalScope, agentName: string, project: string): Scope {
  switch (scope) {
    case egress.ApprovalScope.APPROVAL_SCOPE_GLOBAL:
      return { kind: "global", name: "" };
    case egress.ApprovalScope.APPROVAL_SCOPE_PROJECT:
      if (project === "") {
        throw new FirewallError(
          "invalid_request",
          agentName === ""
            ? "the denial's source is no known agent, so it has no project: approve it globally"
            : `agent ${quote(agentName)} has no project: approve it for the agent or globally`,
        );
      }
      return { kind: "project", name: project };
    case egress.ApprovalScope.APPROVAL_SCOPE_AGENT:
      if (agentName === "") {
        throw new FirewallError(
          "invalid_request",
          "the denial's source is no known agent: approve it for a project or globally",
        );
      }
      return { kind: "agent", name: agentFullName(project, agentName) };
    default:
      throw new FirewallError("invalid_request", "scope is required: agent, project or global");
  }
}

/** The reason an agent gives: present, at most 512 UTF-8 bytes, printable. */
function checkReason(reason: string): string {
  if (reason.trim() === "")
    throw new FirewallError("invalid_request", "reason is required (say why the agent needs it)");
  if (Buffer.byteLength(reason, "utf8") > MAX_REASON_BYTES) {
    throw new FirewallError("invalid_request", `reason is longer than ${MAX_REASON_BYTES} bytes`);
  }
  if (NOT_PRINTABLE.test(reason)) {
    throw new FirewallError(
      "invalid_request",
      "reason must be printable text (no control or formatting characters)",
    );
  }
  return reason;
}

/** dst, proto and port validated and canonicalised as a rule's; problems named by field. */
function canonicalAsk(ask: EgressAsk): Rule {
  try {
    return canonicalRules([
      { dst: ask.dst, proto: ask.proto, port: ask.port === 0 ? "" : String(ask.port) },
    ])[0]!;
  } catch (err) {
    if (!(err instanceof InvalidRuleError)) throw err;
    throw new FirewallError(
      "invalid_request",
      err.problems.map((p) => `${p.field}: ${p.message}`).join("; "),
      {
        cause: err,
      },
    );
  }
}
