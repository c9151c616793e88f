// The DNS gate (issue 16 §2): see README.md. The process entry is main.ts; dnsGateEntry() says how
// to start it.
export { DnsGate, blockedText, UNKNOWN_SOURCE_TEXT } from "./gate.js";
export type { DnsGateOptions, DnsGateStats, PolicySummary } from "./gate.js";
export {
  compilePolicy,
  checkPattern,
  CompiledPolicy,
  DnsPolicySchema,
  EMPTY_POLICY,
  MAX_POLICY_CLIENTS,
  MAX_POLICY_RULES,
  MAX_TTL_SECONDS,
  MAX_UPSTREAMS,
} from "./policy.js";
export type {
  DenyReason,
  DnsCaller,
  DnsClient,
  DnsPolicy,
  DnsRule,
  DnsUpstream,
  MatchedRule,
  PolicySettings,
  PolicyVerdict,
} from "./policy.js";
export { dnsRulesFromListing } from "./policy-from-rules.js";
export { EbpfDnsCacheWriter, UnrecordedDnsCacheWriter, type DnsCacheWriter } from "./cache-writer.js";
export { decisionJson } from "./decision.js";
export type { DecisionSink, DnsAnswerError, DnsDecision, DnsDecisionReason, DnsVerdict } from "./decision.js";
export { ControlChannel, type ControlChannelOptions, type ControlledGate } from "./control-channel.js";
export { DnsGateConfigSchema, loadDnsGateConfig, parseDnsGateConfig, type DnsGateConfig } from "./config.js";
export { DnsGateError, InvalidConfigError, InvalidPolicyError } from "./errors.js";
export type { DnsGateReason, FieldProblem } from "./errors.js";
export { dnsGateEntry } from "./entry.js";
