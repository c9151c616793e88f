// Whether a stored allow rule already covers a destination for one agent: what keeps an approved
// destination out of the triage list while its rule stands, and answers RequestEgress's
// `already_allowed`. Deliberately the rule's own terms (scope, dst, proto, port); what the proxy
// then decides per path or method is the proxy's.
import { isIpv4 } from "../proxy/policy.js";
import { portSpan, type Rule } from "../rule.js";

/** A destination as triage knows it: the agent (full name, "" unknown), its project, dst, proto, port. */
export interface Wanted {
  readonly agent: string;
  readonly project: string;
  readonly dst: string;
  readonly proto: string;
  readonly port: number;
}

/** True when `rule` is an allow rule whose scope, dst, proto and port cover `wanted`. */
export function ruleCovers(rule: Rule, wanted: Wanted): boolean {
  if (rule.action !== "allow" || rule.proto !== wanted.proto) return false;
  const [lo, hi] = portSpan(rule.port);
  if (wanted.port < lo || wanted.port > hi) return false;
  if (!scopeApplies(rule, wanted)) return false;
  return dstCovers(rule.dst, wanted.dst);
}

function scopeApplies(rule: Rule, wanted: Wanted): boolean {
  switch (rule.scope.kind) {
    case "global":
      return true;
    case "project":
      return wanted.project !== "" && rule.scope.name === wanted.project;
    case "agent":
      return wanted.agent !== "" && rule.scope.name === wanted.agent;
  }
}

/** A canonical rule dst against a name or address (the proxy's reading: `*.p` covers p and below). */
function dstCovers(ruleDst: string, dst: string): boolean {
  if (ruleDst === dst) return true;
  if (ruleDst.startsWith("*.")) {
    const parent = ruleDst.slice(2);
    return dst === parent || dst.endsWith(`.${parent}`);
  }
  const slash = ruleDst.indexOf("/");
  if (slash < 0 || !isIpv4(dst)) return false;
  const bits = Number(ruleDst.slice(slash + 1));
  const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0;
  return (ipv4ToInt(dst) & mask) >>> 0 === (ipv4ToInt(ruleDst.slice(0, slash)) & mask) >>> 0;
}

function ipv4ToInt(address: string): number {
  return address.split(".").reduce((n, octet) => ((n << 8) | Number(octet)) >>> 0, 0);
}
