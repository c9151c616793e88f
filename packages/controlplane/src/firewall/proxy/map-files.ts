// Compiles a checked policy into the contents of HAProxy's map files, and writes map files
// atomically (temp file 0600, fsync, rename). The key and value layouts are the contract with the
// rules in haproxy-config.ts; README.md ("Map files") describes them.
import { createHash, randomBytes } from "node:crypto";
import { open, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { mapOfKind, scopeKey, STANDARD_METHODS, type CheckedEntry, type CheckedPolicy } from "./policy.js";

/** Every map file the base config reads. */
export const MAP_NAMES = [
  "agents",
  "projects",
  "forbidden",
  "methods",
  "paths-prefix",
  "paths-regex",
  "tls",
  "http",
  "tcp",
] as const;

/** The name of one map file (`<name>.map` in the maps directory). */
export type MapName = (typeof MAP_NAMES)[number];

/**
 * Maps the verdict maps point into. They are committed before the verdict maps when entries are
 * added and after them when entries go, so a lookup never follows a key to nothing.
 */
export const LEAF_MAPS: readonly MapName[] = [
  "agents",
  "projects",
  "forbidden",
  "methods",
  "paths-prefix",
  "paths-regex",
];
/** The verdict maps: SNI (both TLS kinds), Host, and route listener. */
export const ROOT_MAPS: readonly MapName[] = ["tls", "http", "tcp"];

/** One map entry: a key without whitespace and a value (the rest of the line). */
export interface MapEntry {
  readonly key: string;
  readonly value: string;
}

/** What a rule needs at runtime: its entries in canonical form (another form is a new version, a new tag). */
export interface RuleVersion {
  readonly ruleId: string;
  /** The rule's entries in canonical form: changes whenever anything about them changes. */
  readonly digest: string;
}

/** Computes every allowing rule's version from its entries (deny-only rules have none). */
export function ruleVersions(policy: CheckedPolicy): Map<string, RuleVersion> {
  const byRule = new Map<string, CheckedEntry[]>();
  const allowing = new Set<string>();
  for (const e of policy.entries) {
    if (e.kind === "udp") continue;
    const list = byRule.get(e.ruleId) ?? [];
    list.push(e);
    byRule.set(e.ruleId, list);
    if (e.action === "allow") allowing.add(e.ruleId);
  }
  const out = new Map<string, RuleVersion>();
  for (const [ruleId, entries] of byRule) {
    if (!allowing.has(ruleId)) continue;
    // The canonical form itself, not a hash of it: comparing strings is cheaper than 10,000 hashes.
    const digest = entries
      .map((e) => JSON.stringify(canonicalEntry(e)))
      .sort()
      .join("\n");
    out.set(ruleId, { ruleId, digest });
  }
  return out;
}

/**
 * Compiles the policy into map contents. `tagOf(ruleId)` is the session tag of a rule's current
 * version (every allowing rule must have one; session-tags.ts).
 */
export function compileMaps(
  policy: CheckedPolicy,
  tagOf: (ruleId: string) => number,
): Record<MapName, MapEntry[]> {
  const maps: Record<MapName, MapEntry[]> = {
    agents: [],
    projects: [],
    forbidden: [],
    methods: [],
    "paths-prefix": [],
    "paths-regex": [],
    tls: [],
    http: [],
    tcp: [],
  };
  for (const s of policy.sources) {
    if (s.agent !== undefined) maps.agents.push({ key: s.address, value: s.agent });
    if (s.project !== undefined) maps.projects.push({ key: s.address, value: s.project });
  }
  for (const f of policy.forbidden) maps.forbidden.push({ key: f, value: "forbidden" });

  const methods = new Set(STANDARD_METHODS);
  for (const e of policy.entries) for (const r of e.pathRules) for (const m of r.methods) methods.add(m);
  const methodList = [...methods].sort();
  for (const m of methodList) maps.methods.push({ key: m, value: m });

  const pathKeysDone = new Set<string>();
  for (const e of policy.entries) {
    const map = mapOfKind(e.kind);
    if (map === undefined) continue;
    const pk = e.pathRules.length > 0 ? pathKeyOf(e) : "-";
    if (pk !== "-" && !pathKeysDone.has(pk)) {
      pathKeysDone.add(pk);
      addPathEntries(maps, pk, e, methodList);
    }
    const key =
      map === "tcp"
        ? `${scopeKey(e.scope)}/l${e.listener}/${e.port}`
        : `${scopeKey(e.scope)}/${e.port}/${e.dst}`;
    maps[map].push({ key, value: verdictValue(e, pk, e.action === "allow" ? String(tagOf(e.ruleId)) : "-") });
  }
  return maps;
}

/**
 * A root map value: `<verdict>|<tag>|<ruleId>|<pathKey>|<pathDefault>|<upstream>`, where the
 * verdict is pass, mitm, http, tcp or deny, and upstream is `v`/`k` (verify or not) for mitm, the
 * name to resolve or `@dst` (the original destination) for tcp, `-` otherwise.
 */
function verdictValue(e: CheckedEntry, pk: string, tag: string): string {
  if (e.action === "deny") return `deny|-|${e.ruleId}|-|-|-`;
  switch (e.kind) {
    case "tls-passthrough":
      return `pass|${tag}|${e.ruleId}|-|-|-`;
    case "tls-intercept":
      return `mitm|${tag}|${e.ruleId}|${pk}|${e.pathDefault}|${e.insecureSkipTlsVerify ? "k" : "v"}`;
    case "http":
      return `http|${tag}|${e.ruleId}|${pk}|${e.pathDefault}|-`;
    case "tcp":
      return `tcp|${tag}|${e.ruleId}|-|-|${e.dstForm === "name" ? e.dst : "@dst"}`;
    case "udp":
      return "deny|-|-|-|-|-";
  }
}

/** A short content hash of an entry's path rules and default: entries with equal rules share it. */
function pathKeyOf(e: CheckedEntry): string {
  const body = JSON.stringify({ rules: e.pathRules, d: e.pathDefault });
  return "k" + createHash("sha256").update(body).digest("hex").slice(0, 12);
}

/**
 * Path entries. Lookup keys are `<pathKey>:<method>:<normalized path>`, the method mapped through
 * the methods map (unknown methods become `*`). Prefix rules go to a longest-prefix map, expanded
 * per method (every known method plus `*` for a rule without methods); regex rules go to a regex
 * map in rule order, anchored, with the method set as an alternation.
 */
function addPathEntries(
  maps: Record<MapName, MapEntry[]>,
  pk: string,
  e: CheckedEntry,
  methods: readonly string[],
): void {
  for (const r of e.pathRules) {
    if (r.path.startsWith("~")) {
      const m = r.methods.length === 0 ? "[^:]+" : `(?:${r.methods.join("|")})`;
      maps["paths-regex"].push({ key: `^${pk}:${m}:(?:${r.path.slice(1)})$`, value: r.action });
    } else {
      const ms = r.methods.length === 0 ? [...methods, "*"] : r.methods;
      for (const m of ms) maps["paths-prefix"].push({ key: `${pk}:${m}:${r.path}`, value: r.action });
    }
  }
}

function canonicalEntry(e: CheckedEntry): unknown[] {
  return [
    scopeKey(e.scope),
    e.kind,
    e.action,
    e.dst,
    e.port,
    e.listener ?? 0,
    e.pathRules.map((r) => [r.path, r.action, r.methods]),
    e.pathDefault,
    e.insecureSkipTlsVerify,
  ];
}

/** Renders a map file's text: one `key value` line per entry. */
export function renderMap(entries: readonly MapEntry[]): string {
  return entries.map((e) => `${e.key} ${e.value}\n`).join("");
}

/**
 * Writes `content` to `path` atomically with mode 0600: a temp file beside it, fsync, rename. A
 * reader (HAProxy on reload) sees the old file or the new one, never a half-written one.
 */
export async function writeFileAtomic(path: string, content: string): Promise<void> {
  const tmp = join(path, "..", `.${randomBytes(6).toString("hex")}.tmp`);
  const handle = await open(tmp, "wx", 0o600);
  try {
    await handle.writeFile(content);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
