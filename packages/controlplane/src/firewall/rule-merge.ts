// The merge of API.md §1 (an add onto an existing rule of the same key), rule equality, and the
// canonical order rules are listed in.
import { type PathRule, type Rule, type Scope, portSpan } from "./rule.js";

/**
 * Merges `incoming` onto `existing` (same key, both canonical). The caller wins on `action`;
 * `path_default` changes only when the incoming one is non-empty; path rules are merged by path
 * (an incoming path replaces the existing rule for that path, the others stay). The caller also
 * wins on `insecure_skip_tls_verify`: the wire cannot tell false from unset, and re-adding a rule
 * without the flag should turn upstream verification back on, not leave it off.
 */
export function mergeRule(existing: Rule, incoming: Rule): Rule {
  return {
    scope: existing.scope,
    dst: existing.dst,
    proto: existing.proto,
    port: existing.port,
    action: incoming.action,
    pathRules: mergePathRules(existing.pathRules, incoming.pathRules),
    pathDefault: incoming.pathDefault !== "" ? incoming.pathDefault : existing.pathDefault,
    insecureSkipTlsVerify: incoming.insecureSkipTlsVerify,
  };
}

function mergePathRules(existing: readonly PathRule[], incoming: readonly PathRule[]): readonly PathRule[] {
  if (incoming.length === 0) return existing;
  const byPath = new Map<string, PathRule>();
  for (const p of existing) byPath.set(p.path, p);
  for (const p of incoming) byPath.set(p.path, p);
  return [...byPath.values()].sort((a, b) => compareStrings(a.path, b.path));
}

/** True when two canonical rules are the same in every field. */
export function rulesEqual(a: Rule, b: Rule): boolean {
  if (
    a.scope.kind !== b.scope.kind ||
    a.scope.name !== b.scope.name ||
    a.dst !== b.dst ||
    a.proto !== b.proto ||
    a.port !== b.port ||
    a.action !== b.action ||
    a.pathDefault !== b.pathDefault ||
    a.insecureSkipTlsVerify !== b.insecureSkipTlsVerify ||
    a.pathRules.length !== b.pathRules.length
  ) {
    return false;
  }
  for (let i = 0; i < a.pathRules.length; i++) {
    const [p, q] = [a.pathRules[i]!, b.pathRules[i]!];
    if (p.path !== q.path || p.action !== q.action || p.methods.length !== q.methods.length) return false;
    if (p.methods.some((m, j) => m !== q.methods[j])) return false;
  }
  return true;
}

const SCOPE_RANK = { global: 0, project: 1, agent: 2 } as const;

/** Scopes in listing order: global, then projects by name, then agents by full name. */
export function compareScopes(a: Scope, b: Scope): number {
  return SCOPE_RANK[a.kind] - SCOPE_RANK[b.kind] || compareStrings(a.name, b.name);
}

/**
 * The canonical listing order: by scope, then destination, protocol, and port numerically (so
 * 80 sorts before 443 and a range by its low end). Total on keys: no two rules compare equal.
 */
export function compareRules(a: Rule, b: Rule): number {
  return (
    compareScopes(a.scope, b.scope) ||
    compareStrings(a.dst, b.dst) ||
    compareStrings(a.proto, b.proto) ||
    comparePorts(a.port, b.port)
  );
}

function comparePorts(a: string, b: string): number {
  const [alo, ahi] = portSpan(a);
  const [blo, bhi] = portSpan(b);
  return alo - blo || ahi - bhi;
}

/** Code-unit order: the same on every machine and locale. */
function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
