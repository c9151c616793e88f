// The proxy's input: a compiled policy (entries, the source-address table, forbidden destinations)
// and its validation. The rule store's compile step produces a ProxyPolicy; everything here is
// checked before a byte is written or sent, because the values end up as HAProxy map keys and
// runtime API arguments. See README.md ("The policy") for the semantics.
import { RE2JS } from "re2js";
import { z } from "zod";
import { MAX_WILDCARD_LABELS, wildcardDepth } from "../name-match.js";
import { ProxyError } from "./errors.js";

/** Which agents an entry applies to. Agent entries win over project entries over global ones. */
export type ProxyScope =
  | { readonly kind: "global" }
  | { readonly kind: "project"; readonly project: string }
  | { readonly kind: "agent"; readonly agent: string };

/**
 * How traffic for an entry is handled: TLS by SNI without decryption, TLS decrypted so path and
 * method rules apply, plain HTTP by Host, opaque TCP through a route listener, or UDP (which
 * HAProxy 2.6 cannot proxy: accepted and left to the eBPF layer, see README.md).
 */
export type ProxyEntryKind = "tls-passthrough" | "tls-intercept" | "http" | "tcp" | "udp";

/** allow or deny. */
export type ProxyAction = "allow" | "deny";

/** One path rule of an HTTP-level entry (API.md PathRule). */
export interface ProxyPathRule {
  /** A literal prefix starting with `/`, or `~` and a regular expression matching the whole path. */
  readonly path: string;
  readonly action: ProxyAction;
  /** Methods the rule applies to; empty or absent means every method. */
  readonly methods?: readonly string[];
}

/** One compiled rule: what may be reached, by whom, how. */
export interface ProxyEntry {
  /** The rule this entry came from: logged with every decision, the unit of revocation. */
  readonly ruleId: string;
  readonly scope: ProxyScope;
  readonly kind: ProxyEntryKind;
  readonly action: ProxyAction;
  /**
   * A DNS name, `*.parent` (the parent and every name below it: name-match.ts), an IPv4 address or
   * an IPv4 CIDR.
   */
  readonly dst: string;
  /** The destination port the agent dialed (the original destination's port). */
  readonly port: number;
  /** tcp only: the route listener port the eBPF layer steers this destination to. */
  readonly listener?: number;
  readonly pathRules?: readonly ProxyPathRule[];
  /** Verdict when no path rule matches; required when `pathRules` is not empty. */
  readonly pathDefault?: ProxyAction;
  /** tls-intercept only: do not verify the upstream's certificate. */
  readonly insecureSkipTlsVerify?: boolean;
}

/** One row of the source-address table: which agent (and project) an address belongs to. */
export interface ProxySource {
  /** An IPv4 address or CIDR. */
  readonly address: string;
  readonly agent?: string;
  readonly project?: string;
}

/** Everything the proxy enforces; apply() replaces the previous policy as a whole. */
export interface ProxyPolicy {
  readonly entries: readonly ProxyEntry[];
  readonly sources: readonly ProxySource[];
  /** IPv4 addresses or CIDRs the proxy never connects to, checked after name resolution. */
  readonly forbidden: readonly string[];
}

/** The longest `*.parent` a wildcard may have, in labels (the config holds one lookup per level). */
export { MAX_WILDCARD_LABELS };
/** Upper bound on entries in one policy. */
export const MAX_ENTRIES = 200_000;
/** Methods every policy knows; any other method a rule names is added. */
export const STANDARD_METHODS: readonly string[] = [
  "GET",
  "HEAD",
  "POST",
  "PUT",
  "DELETE",
  "PATCH",
  "OPTIONS",
  "CONNECT",
  "TRACE",
];

const octet = "(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)";
const ipv4Re = new RegExp(`^${octet}\\.${octet}\\.${octet}\\.${octet}$`);
const labelRe = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;
// Map values are `|`-separated and map keys end at whitespace; ids also travel in CLI arguments,
// where `;` would start a second command. So: no whitespace, no `|`, no `;`, no quotes.
const ruleIdRe = /^[A-Za-z0-9_.:*/@+=-]{1,200}$/;
// 129: an agent scope is `<project>.<agent>`, two names of at most 64 (the identity gate's limit).
const tokenRe = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,128}$/;
const methodRe = /^[A-Z][A-Z0-9_-]{0,31}$/;

/** True when `s` holds an ASCII control character (below 0x20, or DEL). */
export function hasControl(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
}

/** True for a dotted-quad IPv4 address without leading zeros. */
export function isIpv4(s: string): boolean {
  return ipv4Re.test(s);
}

/** True for an IPv4 CIDR with a prefix of 0 to 32 and no host bits set. */
export function isCidr4(s: string): boolean {
  const [addr, bits, ...rest] = s.split("/");
  if (rest.length > 0 || addr === undefined || bits === undefined || !isIpv4(addr)) return false;
  if (!/^\d{1,2}$/.test(bits)) return false;
  const n = Number(bits);
  if (n > 32) return false;
  return ipv4ToInt(addr) % 2 ** (32 - n) === 0;
}

/** An IPv4 address or CIDR. */
export function isIpv4OrCidr(s: string): boolean {
  return isIpv4(s) || isCidr4(s);
}

function ipv4ToInt(ip: string): number {
  return ip.split(".").reduce((acc, o) => acc * 256 + Number(o), 0);
}

/** Lowercases a DNS name and drops one trailing dot; returns undefined when it is not a valid name. */
export function normalizeName(name: string): string | undefined {
  let n = name.toLowerCase();
  if (n.endsWith(".")) n = n.slice(0, -1);
  if (n.length === 0 || n.length > 253) return undefined;
  const labels = n.split(".");
  if (!labels.every((l) => labelRe.test(l))) return undefined;
  // An all-numeric last label would make it look like an address.
  if (/^\d+$/.test(labels.at(-1) ?? "")) return undefined;
  return n;
}

/** The destination forms an entry may have. */
export type DstForm = "name" | "wildcard" | "ipv4" | "cidr";

/** Classifies (and normalizes) a destination, or returns undefined when it is none of the forms. */
export function parseDst(dst: string): { form: DstForm; value: string } | undefined {
  if (isIpv4(dst)) return { form: "ipv4", value: dst };
  if (isCidr4(dst)) return { form: "cidr", value: dst };
  if (dst.startsWith("*.")) {
    const parent = normalizeName(dst.slice(2));
    return parent === undefined ? undefined : { form: "wildcard", value: `*.${parent}` };
  }
  const name = normalizeName(dst);
  return name === undefined ? undefined : { form: "name", value: name };
}

const action = z.enum(["allow", "deny"]);
const port = z.number().int().min(1).max(65_535);
const token = z.string().regex(tokenRe, "must be 1-129 of [A-Za-z0-9_.-], starting alphanumeric");

const scopeSchema = z.discriminatedUnion("kind", [
  z.strictObject({ kind: z.literal("global") }),
  z.strictObject({ kind: z.literal("project"), project: token }),
  z.strictObject({ kind: z.literal("agent"), agent: token }),
]);

const pathRuleSchema = z.strictObject({
  path: z
    .string()
    .min(1)
    .max(1024)
    .refine((p) => p.startsWith("/") || (p.startsWith("~") && p.length > 1), "must start with / or ~")
    // Map keys end at whitespace: a path (or regex) cannot hold any (write \x20 or %20).
    .refine((p) => !/\s/.test(p) && !hasControl(p), "must not hold whitespace or control characters"),
  action,
  methods: z
    .array(z.string().transform((m) => m.toUpperCase()))
    .max(32)
    .optional()
    .refine(
      (ms) => ms === undefined || ms.every((m) => methodRe.test(m)),
      "methods must be HTTP method tokens ([A-Z][A-Z0-9_-]*)",
    ),
});

const entrySchema = z.strictObject({
  ruleId: z.string().regex(ruleIdRe, "must be 1-200 of [A-Za-z0-9_.:*/@+=-]"),
  scope: scopeSchema,
  kind: z.enum(["tls-passthrough", "tls-intercept", "http", "tcp", "udp"]),
  action,
  dst: z.string().min(1).max(260),
  port,
  listener: port.optional(),
  pathRules: z.array(pathRuleSchema).max(256).optional(),
  pathDefault: action.optional(),
  insecureSkipTlsVerify: z.boolean().optional(),
});

const sourceSchema = z.strictObject({
  address: z.string().refine(isIpv4OrCidr, "must be an IPv4 address or CIDR"),
  agent: token.optional(),
  project: token.optional(),
});

const policySchema = z.strictObject({
  entries: z.array(entrySchema).max(MAX_ENTRIES),
  sources: z.array(sourceSchema).max(65_536),
  forbidden: z.array(z.string().refine(isIpv4OrCidr, "must be an IPv4 address or CIDR")).max(4096),
});

/** A normalized path rule: methods uppercase, deduplicated and sorted (empty: every method). */
export interface CheckedPathRule {
  readonly path: string;
  readonly action: ProxyAction;
  readonly methods: readonly string[];
}

/** A validated, normalized entry (dst normalized, pathDefault resolved). */
export interface CheckedEntry {
  readonly ruleId: string;
  readonly scope: ProxyScope;
  readonly kind: ProxyEntryKind;
  readonly action: ProxyAction;
  readonly dst: string;
  readonly dstForm: DstForm;
  readonly port: number;
  readonly listener: number | undefined;
  readonly pathRules: readonly CheckedPathRule[];
  readonly pathDefault: ProxyAction;
  readonly insecureSkipTlsVerify: boolean;
}

/** A validated policy, ready to be compiled into map files. */
export interface CheckedPolicy {
  readonly entries: readonly CheckedEntry[];
  readonly sources: readonly ProxySource[];
  readonly forbidden: readonly string[];
}

/** What validation needs to know about the proxy it will run on. */
export interface PolicyLimits {
  /** Route listener ports tcp entries may name. */
  readonly routePorts: ReadonlySet<number>;
}

/**
 * Validates and normalizes a policy. Throws ProxyError("invalid_policy") listing every problem
 * (up to 20) with its path, e.g. `entries[3].dst: not a DNS name, *.name, IPv4 address or CIDR`.
 */
export function checkPolicy(policy: ProxyPolicy, limits: PolicyLimits): CheckedPolicy {
  const parsed = policySchema.safeParse(policy);
  if (!parsed.success) {
    throw invalid(parsed.error.issues.map((i) => `${formatPath(i.path)}: ${i.message}`));
  }
  const problems: string[] = [];
  const entries: CheckedEntry[] = [];
  const keys = new Map<string, number>();
  parsed.data.entries.forEach((e, i) => {
    const at = `entries[${i}]`;
    const dst = parseDst(e.dst);
    if (dst === undefined) {
      problems.push(`${at}.dst: not a DNS name, *.name, IPv4 address or CIDR`);
      return;
    }
    if (dst.form === "wildcard" && wildcardDepth(dst.value) > MAX_WILDCARD_LABELS) {
      problems.push(`${at}.dst: a wildcard's parent may have at most ${MAX_WILDCARD_LABELS} labels`);
    }
    // As the rule store and the DNS gate: `*.com` would admit a whole top-level domain.
    if (dst.form === "wildcard" && wildcardDepth(dst.value) < 2) {
      problems.push(`${at}.dst: a wildcard's parent needs at least two labels`);
    }
    const isIp = dst.form === "ipv4" || dst.form === "cidr";
    if (isIp && e.kind !== "tcp" && e.kind !== "udp") {
      problems.push(
        `${at}.dst: IPv4 and CIDR destinations need kind tcp (a route listener): no SNI or Host names them`,
      );
    }
    if (e.kind === "tcp") {
      if (e.listener === undefined) problems.push(`${at}.listener: required for kind tcp`);
      else if (!limits.routePorts.has(e.listener)) {
        problems.push(`${at}.listener: ${e.listener} is not one of the proxy's route listener ports`);
      }
    } else if (e.listener !== undefined) {
      problems.push(`${at}.listener: only kind tcp has a route listener`);
    }
    const pathRules = e.pathRules ?? [];
    const isHttpLevel = e.kind === "http" || e.kind === "tls-intercept";
    if (pathRules.length > 0 && !isHttpLevel) {
      problems.push(`${at}.pathRules: only kinds http and tls-intercept see paths`);
    }
    if (pathRules.length > 0 && e.pathDefault === undefined) {
      problems.push(`${at}.pathDefault: required when pathRules is not empty`);
    }
    if (e.pathDefault !== undefined && !isHttpLevel) {
      problems.push(`${at}.pathDefault: only kinds http and tls-intercept see paths`);
    }
    if (e.insecureSkipTlsVerify === true && e.kind !== "tls-intercept") {
      problems.push(`${at}.insecureSkipTlsVerify: only kind tls-intercept connects upstream with TLS`);
    }
    const seenPaths = new Set<string>();
    const checkedRules: CheckedPathRule[] = [];
    pathRules.forEach((r, j) => {
      if (seenPaths.has(r.path)) problems.push(`${at}.pathRules[${j}].path: duplicate path ${r.path}`);
      seenPaths.add(r.path);
      if (r.path.startsWith("~")) {
        const why = regexProblem(r.path.slice(1));
        if (why !== undefined) problems.push(`${at}.pathRules[${j}].path: ${why}`);
      }
      checkedRules.push({ path: r.path, action: r.action, methods: [...new Set(r.methods ?? [])].sort() });
    });
    const key = entryKey(e.scope, e.kind, e.port, e.listener, dst.value);
    const first = keys.get(key);
    if (first !== undefined && e.kind !== "udp") {
      problems.push(`${at}: same scope, kind, port and destination as entries[${first}]`);
    }
    keys.set(key, i);
    entries.push({
      ruleId: e.ruleId,
      scope: e.scope,
      kind: e.kind,
      action: e.action,
      dst: dst.value,
      dstForm: dst.form,
      port: e.port,
      listener: e.listener,
      pathRules: checkedRules,
      pathDefault: e.pathDefault ?? "allow",
      insecureSkipTlsVerify: e.insecureSkipTlsVerify ?? false,
    });
  });
  const seenSources = new Set<string>();
  parsed.data.sources.forEach((s, i) => {
    if (seenSources.has(s.address)) problems.push(`sources[${i}].address: duplicate ${s.address}`);
    seenSources.add(s.address);
  });
  if (problems.length > 0) throw invalid(problems);
  const sources: ProxySource[] = parsed.data.sources.map((s) => ({
    address: s.address,
    ...(s.agent === undefined ? {} : { agent: s.agent }),
    ...(s.project === undefined ? {} : { project: s.project }),
  }));
  return { entries, sources, forbidden: parsed.data.forbidden };
}

/** The map a kind's entries live in; both TLS kinds share one (an SNI has one verdict). */
export function mapOfKind(kind: ProxyEntryKind): "tls" | "http" | "tcp" | undefined {
  switch (kind) {
    case "tls-passthrough":
    case "tls-intercept":
      return "tls";
    case "http":
      return "http";
    case "tcp":
      return "tcp";
    case "udp":
      return undefined;
  }
}

function entryKey(
  scope: ProxyScope,
  kind: ProxyEntryKind,
  port: number,
  listener: number | undefined,
  dst: string,
): string {
  return `${scopeKey(scope)}|${mapOfKind(kind) ?? kind}|${port}|${listener ?? ""}|${dst}`;
}

/** The scope part of a map key: `g`, `p:<project>` or `a:<agent>`. */
export function scopeKey(scope: ProxyScope): string {
  switch (scope.kind) {
    case "global":
      return "g";
    case "project":
      return `p:${scope.project}`;
    case "agent":
      return `a:${scope.agent}`;
  }
}

/**
 * A best-effort syntax check of an RE2 expression with JavaScript's engine (HAProxy matches with
 * PCRE2; the syntax both share is what rules use). Named groups `(?P<n>` are RE2's spelling.
 */
function regexProblem(source: string): string | undefined {
  try {
    // RE2 syntax, as the rule store validates it (and HAProxy's PCRE2 reads it): JavaScript's
    // RegExp refused RE2's `(?i)` flags, so such a saved rule could never apply.
    RE2JS.compile(source);
    return undefined;
  } catch (err) {
    return `not a valid regular expression (${(err as Error).message})`;
  }
}

function formatPath(path: readonly PropertyKey[]): string {
  return path
    .map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`))
    .join("");
}

function invalid(problems: readonly string[]): ProxyError {
  const shown = problems.slice(0, 20);
  const more = problems.length > shown.length ? `; and ${problems.length - shown.length} more` : "";
  return new ProxyError("invalid_policy", `invalid proxy policy: ${shown.join("; ")}${more}`);
}
