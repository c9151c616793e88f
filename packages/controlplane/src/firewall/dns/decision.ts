// One structured event per DNS decision (the decision stream of issue 11 consumes them), and the
// gate's logging of them: every decision at debug, denials at info but rate-limited, so a looping
// agent cannot flood the log.
import type { Logger } from "pino";
import type { RcodeName } from "./dns-message.js";
import type { MatchedRule } from "./policy.js";

/** Whether the name was answered under the policy. */
export type DnsVerdict = "allowed" | "denied";

/**
 * Why: an allow or deny rule matched, no rule matched, the source address is not a known agent,
 * or the name has bytes no rule can name.
 */
export type DnsDecisionReason = "rule_allow" | "rule_deny" | "no_rule" | "unknown_source" | "invalid_name";

/** What went wrong answering an allowed name. */
export type DnsAnswerError = "upstream_timeout" | "upstream_failed" | "cache_write_failed";

/** One decision of the DNS gate. Fields are always present (undefined when not applicable). */
export interface DnsDecision {
  /** Milliseconds since the epoch. */
  readonly time: number;
  /** The source address of the query. */
  readonly client: string;
  /** The caller's agent scope name and project, when the source is a known agent. */
  readonly agent: string | undefined;
  readonly project: string | undefined;
  /** The queried name, lowercase, without the root dot (bytes outside ASCII shown as latin1). */
  readonly name: string;
  /** `A`, `AAAA`, ... or `TYPE<n>`. */
  readonly type: string;
  readonly transport: "udp" | "tcp";
  readonly verdict: DnsVerdict;
  readonly reason: DnsDecisionReason;
  /** The rule that decided (pattern, scope, action), if one did. */
  readonly rule: MatchedRule | undefined;
  /** The route identity recorded for the addresses (allowed names). */
  readonly identity: number | undefined;
  /** The response code sent. */
  readonly rcode: RcodeName;
  /** The addresses answered (and recorded in the eBPF dns_cache before the reply). */
  readonly addresses: readonly string[];
  /** True when the addresses came from the gate's cache. */
  readonly cached: boolean;
  readonly error: DnsAnswerError | undefined;
}

/** Receives every decision; must not throw (a throwing sink is logged and ignored). */
export type DecisionSink = (decision: DnsDecision) => void;

/** Options of a DecisionLog. */
export interface DecisionLogOptions {
  /** Denials logged at info per second on average (a burst of twice as many). */
  readonly denialsPerSecond?: number;
  /** How often one client's refused (rate-limited) queries are summarised at info. */
  readonly rateLimitedEveryMs?: number;
}

/** Logs decisions and rate-limited clients without letting either flood the log. */
export class DecisionLog {
  private readonly log: Logger;
  private readonly denialsPerSecond: number;
  private readonly rateLimitedEveryMs: number;
  private denialTokens: number;
  private denialAt = 0;
  private suppressed = 0;
  private readonly limited = new Map<string, { count: number; loggedAt: number }>();

  constructor(log: Logger, options: DecisionLogOptions = {}) {
    this.log = log;
    this.denialsPerSecond = options.denialsPerSecond ?? 10;
    this.rateLimitedEveryMs = options.rateLimitedEveryMs ?? 10_000;
    this.denialTokens = this.denialsPerSecond * 2;
  }

  /** Logs one decision: at debug always, at info when it is a denial and the budget allows. */
  record(d: DnsDecision, now: number): void {
    if (this.log.isLevelEnabled("debug"))
      this.log.debug({ decision: d, event: "dns_decision" }, "dns decision");
    if (d.verdict !== "denied") return;
    this.denialTokens = Math.min(
      this.denialsPerSecond * 2,
      this.denialTokens + ((now - this.denialAt) / 1000) * this.denialsPerSecond,
    );
    this.denialAt = now;
    if (this.denialTokens < 1) {
      this.suppressed++;
      return;
    }
    this.denialTokens -= 1;
    const suppressed = this.suppressed;
    this.suppressed = 0;
    this.log.info(
      {
        client: d.client,
        agent: d.agent,
        name: d.name,
        type: d.type,
        reason: d.reason,
        rule: d.rule,
        suppressed,
        event: "dns_denied",
      },
      "dns query denied",
    );
  }

  /** Counts a refused query of `client`; logs the count at most every `rateLimitedEveryMs` per client. */
  rateLimited(client: string, now: number): void {
    let entry = this.limited.get(client);
    if (entry === undefined) {
      // Bounded like the buckets: forget the oldest client first.
      if (this.limited.size >= 4_096) {
        const oldest = this.limited.keys().next();
        if (oldest.done !== true) this.limited.delete(oldest.value);
      }
      entry = { count: 0, loggedAt: Number.NEGATIVE_INFINITY };
      this.limited.set(client, entry);
    }
    entry.count++;
    if (now - entry.loggedAt < this.rateLimitedEveryMs) return;
    this.log.info({ client, refused: entry.count, event: "dns_rate_limited" }, "dns client rate-limited");
    entry.count = 0;
    entry.loggedAt = now;
  }
}

const ruleJson = new WeakMap<MatchedRule, string>();

/**
 * A decision as JSON, the same text JSON.stringify gives (undefined fields left out), built by
 * hand: at tens of thousands of answers a second the generic walk over the nested rule was a
 * quarter of the gate's time. A rule's JSON is computed once per compiled rule.
 */
export function decisionJson(d: DnsDecision): string {
  let rule = "";
  if (d.rule !== undefined) {
    let cached = ruleJson.get(d.rule);
    if (cached === undefined) {
      cached = JSON.stringify(d.rule);
      ruleJson.set(d.rule, cached);
    }
    rule = `,"rule":${cached}`;
  }
  let addresses = "[";
  for (let i = 0; i < d.addresses.length; i++) addresses += `${i === 0 ? "" : ","}"${d.addresses[i]}"`;
  addresses += "]";
  return (
    `{"time":${d.time},"client":${JSON.stringify(d.client)}` +
    (d.agent === undefined ? "" : `,"agent":${JSON.stringify(d.agent)}`) +
    (d.project === undefined ? "" : `,"project":${JSON.stringify(d.project)}`) +
    `,"name":${JSON.stringify(d.name)},"type":"${d.type}","transport":"${d.transport}"` +
    `,"verdict":"${d.verdict}","reason":"${d.reason}"${rule}` +
    (d.identity === undefined ? "" : `,"identity":${d.identity}`) +
    `,"rcode":"${d.rcode}","addresses":${addresses},"cached":${d.cached}` +
    (d.error === undefined ? "" : `,"error":"${d.error}"`) +
    "}"
  );
}
