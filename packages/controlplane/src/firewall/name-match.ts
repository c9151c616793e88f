// What a rule's name pattern covers, for every layer that matches names (the DNS gate in code, the
// proxy in its rendered HAProxy lookups), so `*.example.com` means one thing everywhere. As the
// Go control plane's DNS zones and Envoy vhosts: `*.example.com` covers `example.com` itself and
// every name below it; an exact rule beats a wildcard over the same name.

/**
 * The longest parent a `*.` wildcard may have, in labels: the proxy's config holds one lookup per
 * level, so a deeper wildcard could never match there and is refused on both layers.
 */
export const MAX_WILDCARD_LABELS = 8;

/**
 * The patterns that can match a lowercase name without the root dot, most specific first: the
 * name itself, then `*.` + the name (a wildcard covers its parent), then `*.` + each parent from
 * the longest, down to two labels (a wildcard over one label is never valid). Parents longer than
 * MAX_WILDCARD_LABELS labels are skipped. The label boundary is a dot: `evilexample.com` never
 * yields `*.example.com`.
 */
export function matchingPatterns(name: string): string[] {
  const out = [name];
  let labels = 1;
  for (let i = 0; i < name.length; i++) if (name.charCodeAt(i) === 0x2e) labels++;
  for (let at = 0; labels >= 2; labels--) {
    if (labels <= MAX_WILDCARD_LABELS) out.push(`*.${name.slice(at)}`);
    at = name.indexOf(".", at) + 1;
  }
  return out;
}

/** The number of labels of a wildcard's parent (`*.a.b.c` -> 3), or 0 for a pattern without `*.`. */
export function wildcardDepth(pattern: string): number {
  if (!pattern.startsWith("*.")) return 0;
  let labels = 1;
  for (let i = 2; i < pattern.length; i++) if (pattern.charCodeAt(i) === 0x2e) labels++;
  return labels;
}
