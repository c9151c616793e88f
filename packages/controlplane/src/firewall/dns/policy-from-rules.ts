// The gate's name rules from the rule store's listing: what the daemon sends in a DnsPolicy.
// DNS knows names, not protocols or ports, so the rules of one (scope, name) collapse to one.
import type { ListedRule } from "../rule-store.js";
import { dstKind, scopeKey } from "../rule.js";
import type { DnsRule } from "./policy.js";

/**
 * One DnsRule per (scope, domain or wildcard destination) of the listing: `allow` (with the
 * destination's route identity) when any rule of that scope allows the destination on any
 * protocol or port, since the proxy then decides per port, path and method; `deny` when every
 * rule of that scope denies it. IPv4 and CIDR rules are left out: the gate only answers names.
 */
export function dnsRulesFromListing(listing: readonly ListedRule[]): DnsRule[] {
  const byKey = new Map<string, DnsRule>();
  for (const { rule, identity } of listing) {
    const kind = dstKind(rule.dst);
    if (kind !== "domain" && kind !== "wildcard") continue;
    const key = `${scopeKey(rule.scope)} ${rule.dst}`;
    const seen = byKey.get(key);
    if (seen !== undefined && (seen.action === "allow" || rule.action === "deny")) continue;
    byKey.set(
      key,
      rule.action === "allow"
        ? { scope: { ...rule.scope }, pattern: rule.dst, action: "allow", identity }
        : { scope: { ...rule.scope }, pattern: rule.dst, action: "deny" },
    );
  }
  return [...byKey.values()];
}
