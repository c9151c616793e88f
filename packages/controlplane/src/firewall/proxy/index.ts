// The egress proxy driver (HAProxy): see README.md.
export {
  EgressProxy,
  PROXY_HELPER_NAME,
  type ApplyResult,
  type EgressProxyOptions,
  type ProxyHealth,
  type ProxyProcessHost,
  type RevokeSelector,
} from "./proxy.js";
export { ProxyError, type ProxyErrorReason } from "./errors.js";
export {
  MAX_WILDCARD_LABELS,
  checkPolicy,
  type ProxyAction,
  type ProxyEntry,
  type ProxyEntryKind,
  type ProxyPathRule,
  type ProxyPolicy,
  type ProxyScope,
  type ProxySource,
} from "./policy.js";
export { parseProxyConfig, type ProxyConfig, type ProxyConfigInput } from "./proxy-config.js";
export { parseDecisionLine, type DecisionLayer, type ProxyDecision } from "./decision-log.js";
export type { ProxyLayout } from "./haproxy-config.js";
