// Validation and canonicalisation of egress rules (API.md §1 plus our scope extension): every
// problem of every rule is reported with its rule index and field, and a valid input becomes one
// canonical Rule. The decisions (and why) are in README.md, "Rules".
import { RE2JS } from "re2js";
import { parseDestination } from "./destination.js";
import { InvalidRuleError, type RuleProblem, quote } from "./errors.js";
import {
  type Action,
  DEFAULT_PROTO,
  GLOBAL_SCOPE,
  HTTP_PROTOCOLS,
  NAMED_PROTOCOLS,
  type PathRule,
  type PathRuleInput,
  type Rule,
  type RuleInput,
  type Scope,
  TLS_PROTOCOLS,
  anchoredPattern,
  isOpaqueProto,
} from "./rule.js";

/** Most path rules one rule may carry (bounds the work one request can cause). */
export const MAX_PATH_RULES = 256;
/** Longest path or path expression, in characters. */
export const MAX_PATH_LENGTH = 1024;
/** Longest project or agent name (the identity gate's limit). */
export const MAX_SCOPE_NAME_LENGTH = 64;
/** Longest protocol name. */
export const MAX_PROTO_LENGTH = 32;
/** Most ports one range may span: the proxy and the eBPF routes hold one entry per port. */
export const MAX_PORT_RANGE = 1024;

/**
 * The HTTP methods a path rule may name: RFC 9110's, PATCH (RFC 5789) and WebDAV's (RFC 4918,
 * 3253, 4791, 5323). A closed list, because a misspelt method in a deny rule would never match
 * and so silently allow what it was meant to stop.
 */
export const HTTP_METHODS: ReadonlySet<string> = new Set([
  "GET",
  "HEAD",
  "POST",
  "PUT",
  "DELETE",
  "CONNECT",
  "OPTIONS",
  "TRACE",
  "PATCH",
  "PROPFIND",
  "PROPPATCH",
  "MKCOL",
  "COPY",
  "MOVE",
  "LOCK",
  "UNLOCK",
  "REPORT",
  "SEARCH",
  "MKCALENDAR",
]);

// Project and agent names as the identity gate accepts them (agents/identity-gate.ts); no dot, so
// `<project>.<agent>` is unambiguous.
const SCOPE_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;
// RFC 3986 §3.1 scheme syntax, lowercase.
const PROTO_NAME = /^[a-z][a-z0-9+.-]*$/;
const ASCII_LETTERS = /^[A-Za-z]+$/;
const PORT_SINGLE = /^[0-9]+$/;
const PORT_RANGE = /^([0-9]+)-([0-9]+)$/;
const PATH_CHARS = /^[\x21-\x7e]+$/;
const PERCENT = /%(?![0-9A-Fa-f]{2})/;
const ENCODED_DOT = /%2e/gi;

/** Collects the problems of one rule (or of a remove selector when `index` is undefined). */
class Problems {
  readonly list: RuleProblem[] = [];
  constructor(readonly index: number | undefined) {}
  add(field: string, message: string): void {
    this.list.push({ index: this.index, field, message });
  }
}

/** The outcome of checking one rule: the canonical rule, or every problem found. */
export type RuleCheck =
  | { readonly ok: true; readonly rule: Rule }
  | { readonly ok: false; readonly problems: readonly RuleProblem[] };

/** Validates and canonicalises one rule; `index` names it in problems. */
export function checkRule(input: RuleInput, index: number): RuleCheck {
  const problems = new Problems(index);
  const rule = canonicalise(input, problems);
  return rule === undefined ? { ok: false, problems: problems.list } : { ok: true, rule };
}

/**
 * Validates and canonicalises every rule; throws InvalidRuleError listing every problem of every
 * rule when one is invalid (the caller then writes nothing).
 */
export function canonicalRules(inputs: readonly RuleInput[]): Rule[] {
  const rules: Rule[] = [];
  const problems: RuleProblem[] = [];
  for (let i = 0; i < inputs.length; i++) {
    const check = checkRule(inputs[i]!, i);
    if (check.ok) rules.push(check.rule);
    else problems.push(...check.problems);
  }
  if (problems.length > 0) throw new InvalidRuleError(problems);
  return rules;
}

/** The identifying fields of a rule, as a remove request names it. */
export interface KeyInput {
  readonly dst?: string | undefined;
  readonly proto?: string | undefined;
  readonly port?: string | undefined;
  readonly project?: string | undefined;
  readonly agentName?: string | undefined;
}

/** A canonical rule identity: what `ruleKey` is computed from. */
export type RuleIdentity = Pick<Rule, "scope" | "dst" | "proto" | "port">;

/**
 * Canonicalises the identifying fields the way `checkRule` does, so a remove finds the rule an add
 * stored from the same spelling; throws InvalidRuleError (fields without a rule index).
 */
export function canonicalIdentity(input: KeyInput): RuleIdentity {
  const problems = new Problems(undefined);
  const scope = canonicalScope(input.project ?? "", input.agentName ?? "", problems);
  const dst = canonicalDst(input.dst ?? "", problems);
  const proto = canonicalProto(input.proto ?? "", problems);
  const port = proto === undefined ? undefined : canonicalPort(input.port ?? "", proto, problems);
  if (scope === undefined || dst === undefined || proto === undefined || port === undefined) {
    throw new InvalidRuleError(problems.list);
  }
  return { scope, dst, proto, port };
}

/** The scope a remove request names (global when both fields are empty); throws InvalidRuleError. */
export function canonicalScopeOf(input: Pick<KeyInput, "project" | "agentName">): Scope {
  const problems = new Problems(undefined);
  const scope = canonicalScope(input.project ?? "", input.agentName ?? "", problems);
  if (scope === undefined) throw new InvalidRuleError(problems.list);
  return scope;
}

/** Canonicalises the path of a remove request; throws InvalidRuleError. */
export function canonicalRemovePath(path: string): string {
  const problems = new Problems(undefined);
  const canonical = canonicalPath(path, "path", problems);
  if (canonical === undefined) throw new InvalidRuleError(problems.list);
  return canonical;
}

/** The scope named by the wire's extension fields; undefined (with problems) when invalid. */
function canonicalScope(project: string, agentName: string, problems: Problems): Scope | undefined {
  const projectOk = checkScopeName(project, "project", problems);
  const agentOk = checkScopeName(agentName, "agent_name", problems);
  if (!projectOk || !agentOk) return undefined;
  if (agentName !== "")
    return { kind: "agent", name: project === "" ? agentName : `${project}.${agentName}` };
  if (project !== "") return { kind: "project", name: project };
  return GLOBAL_SCOPE;
}

function checkScopeName(name: string, field: string, problems: Problems): boolean {
  if (name === "") return true;
  if (name.length > MAX_SCOPE_NAME_LENGTH) {
    problems.add(field, `is longer than ${MAX_SCOPE_NAME_LENGTH} characters`);
    return false;
  }
  if (!SCOPE_NAME.test(name)) {
    problems.add(
      field,
      `${quote(name)} is not a name (letters, digits, "_" and "-", starting with a letter or digit)`,
    );
    return false;
  }
  return true;
}

function canonicalise(input: RuleInput, problems: Problems): Rule | undefined {
  const scope = canonicalScope(input.project ?? "", input.agentName ?? "", problems);
  if (input.floor === true) problems.add("floor", "is output only: floor rules come from the floor file");
  const dst = canonicalDst(input.dst ?? "", problems);
  const proto = canonicalProto(input.proto ?? "", problems);
  const port = proto === undefined ? undefined : canonicalPort(input.port ?? "", proto, problems);
  const action = canonicalAction(input.action ?? "", "action", "allow", problems);
  const pathDefault = canonicalAction(input.pathDefault ?? "", "path_default", "", problems);
  const pathRules = canonicalPathRules(input.pathRules ?? [], problems);
  const insecure = input.insecureSkipTlsVerify === true;

  if (proto !== undefined && !HTTP_PROTOCOLS.has(proto)) {
    if ((input.pathRules ?? []).length > 0) {
      problems.add("path_rules", `apply only to http, https, ws and wss, not ${proto}`);
    }
    if (pathDefault !== undefined && pathDefault !== "") {
      problems.add("path_default", `applies only to http, https, ws and wss, not ${proto}`);
    }
  }
  if (insecure && proto !== undefined && !TLS_PROTOCOLS.has(proto)) {
    problems.add("insecure_skip_tls_verify", `applies only to https and wss, not ${proto}`);
  }
  if (dst === "0.0.0.0/0" && action === "allow") {
    problems.add("dst", `"0.0.0.0/0" with action allow admits every IPv4 address; use a bypass instead`);
  }
  if (
    problems.list.length > 0 ||
    scope === undefined ||
    dst === undefined ||
    proto === undefined ||
    port === undefined ||
    action === undefined ||
    pathDefault === undefined ||
    pathRules === undefined
  ) {
    return undefined;
  }
  return { scope, dst, proto, port, action, pathRules, pathDefault, insecureSkipTlsVerify: insecure };
}

function canonicalDst(raw: string, problems: Problems): string | undefined {
  const parsed = parseDestination(raw);
  if (parsed.ok) return parsed.dst;
  problems.add("dst", parsed.message);
  return undefined;
}

function canonicalProto(raw: string, problems: Problems): string | undefined {
  if (raw === "") return DEFAULT_PROTO;
  // Lowercase only after an ASCII check: "\u212A".toLowerCase() is "k".
  const proto = raw.length <= MAX_PROTO_LENGTH && /^[\x21-\x7e]+$/.test(raw) ? raw.toLowerCase() : "";
  if (!PROTO_NAME.test(proto)) {
    problems.add(
      "proto",
      `${quote(raw)} is not a protocol name (a letter, then letters, digits, "+", "-" or ".", at most ${MAX_PROTO_LENGTH})`,
    );
    return undefined;
  }
  return proto;
}

function canonicalPort(raw: string, proto: string, problems: Problems): string | undefined {
  const opaque = isOpaqueProto(proto);
  if (raw === "") {
    if (opaque) {
      problems.add("port", `is required for ${proto}: only http, https, ws, wss and ssh have a default port`);
      return undefined;
    }
    return String(NAMED_PROTOCOLS[proto]);
  }
  if (PORT_SINGLE.test(raw)) {
    const port = portNumber(raw, problems);
    return port === undefined ? undefined : String(port);
  }
  const range = PORT_RANGE.exec(raw);
  if (range === null) {
    problems.add("port", `${quote(raw)} is neither a port (1-65535) nor a range lo-hi`);
    return undefined;
  }
  const lo = portNumber(range[1]!, problems);
  const hi = portNumber(range[2]!, problems);
  if (lo === undefined || hi === undefined) return undefined;
  if (lo > hi) {
    problems.add("port", `range ${raw} is reversed (write ${hi}-${lo})`);
    return undefined;
  }
  if (lo === hi) return String(lo);
  if (!opaque) {
    problems.add("port", `ranges are for opaque protocols (tcp, udp, other names); ${proto} takes one port`);
    return undefined;
  }
  if (hi - lo + 1 > MAX_PORT_RANGE) {
    problems.add(
      "port",
      `range ${raw} spans ${hi - lo + 1} ports; at most ${MAX_PORT_RANGE} (each port is one proxy entry and one route)`,
    );
    return undefined;
  }
  return `${lo}-${hi}`;
}

function portNumber(digits: string, problems: Problems): number | undefined {
  const n = digits.length > 5 ? Infinity : Number(digits);
  if (n < 1 || n > 65535) {
    problems.add("port", `${digits} is out of range (1-65535)`);
    return undefined;
  }
  return n;
}

function canonicalAction<D extends Action | "">(
  raw: string,
  field: string,
  fallback: D,
  problems: Problems,
): Action | D | undefined {
  if (raw === "") return fallback;
  const action = ASCII_LETTERS.test(raw) ? raw.toLowerCase() : "";
  if (action === "allow" || action === "deny") return action;
  problems.add(field, `${quote(raw)} is not an action (allow or deny)`);
  return undefined;
}

function canonicalPathRules(inputs: readonly PathRuleInput[], problems: Problems): PathRule[] | undefined {
  if (inputs.length > MAX_PATH_RULES) {
    problems.add("path_rules", `has ${inputs.length} entries; at most ${MAX_PATH_RULES}`);
    return undefined;
  }
  const before = problems.list.length;
  const out: PathRule[] = [];
  const seen = new Map<string, number>();
  for (let i = 0; i < inputs.length; i++) {
    const input = inputs[i]!;
    const field = `path_rules[${i}]`;
    const path = canonicalPath(input.path ?? "", `${field}.path`, problems);
    const action = canonicalAction(input.action ?? "", `${field}.action`, "allow", problems);
    const methods = canonicalMethods(input.methods ?? [], `${field}.methods`, problems);
    if (path === undefined || action === undefined || methods === undefined) continue;
    const first = seen.get(path);
    if (first !== undefined) {
      problems.add(`${field}.path`, `${quote(path)} repeats path_rules[${first}]`);
      continue;
    }
    seen.set(path, i);
    out.push({ path, action, methods });
  }
  if (problems.list.length > before) return undefined;
  // Canonical order: by path. The order carries no precedence (see README.md, "Path rules").
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

function canonicalPath(raw: string, field: string, problems: Problems): string | undefined {
  if (raw === "") {
    problems.add(field, `is required: a literal prefix starting with "/" or "~" and an RE2 expression`);
    return undefined;
  }
  if (raw.length > MAX_PATH_LENGTH) {
    problems.add(field, `is longer than ${MAX_PATH_LENGTH} characters`);
    return undefined;
  }
  if (!raw.startsWith("/") && !raw.startsWith("~")) {
    problems.add(field, `${quote(raw)} must start with "/" (a literal prefix) or "~" (an RE2 expression)`);
    return undefined;
  }
  // Request paths on the wire are printable ASCII; a space or newline here could only ever be a
  // mistake (or an attempt to break the proxy's line-based map files).
  if (!PATH_CHARS.test(raw)) {
    problems.add(
      field,
      `${quote(raw)} has whitespace, control or non-ASCII characters (percent-encode them, or \\x20 in an expression)`,
    );
    return undefined;
  }
  if (raw.startsWith("~")) return checkExpression(raw, field, problems);
  if (raw.includes("?") || raw.includes("#")) {
    problems.add(
      field,
      `${quote(raw)} has "?" or "#": a path rule matches the path, not a query or fragment`,
    );
    return undefined;
  }
  if (PERCENT.test(raw)) {
    problems.add(field, `${quote(raw)} has a "%" that is not followed by two hex digits`);
    return undefined;
  }
  // RFC 3986 §6.2.2.1: percent-escapes compare case-insensitively; one spelling per path.
  const path = raw.replace(/%[0-9a-f]{2}/gi, (e) => e.toUpperCase());
  const segments = path.split("/");
  for (let i = 1; i < segments.length; i++) {
    const segment = segments[i]!.replace(ENCODED_DOT, ".");
    // Requests are normalised (dot segments removed, slashes merged) before they are matched, so
    // a rule spelt with them would never match: a deny that silently denies nothing.
    if (segment === "." || segment === "..") {
      problems.add(field, `${quote(raw)} has a "." or ".." segment, which a normalised request never has`);
      return undefined;
    }
    if (segment === "" && i < segments.length - 1) {
      problems.add(field, `${quote(raw)} has an empty segment ("//"), which a normalised request never has`);
      return undefined;
    }
  }
  return path;
}

/** Expression -> undefined (valid) or what RE2 said; bounded, oldest entry evicted first. */
const expressionChecks = new Map<string, string | undefined>();
const EXPRESSION_CACHE_SIZE = 4096;

function checkExpression(raw: string, field: string, problems: Problems): string | undefined {
  if (raw.length === 1) {
    problems.add(field, `"~" must be followed by an RE2 expression`);
    return undefined;
  }
  // Compiling costs ~0.1-0.25 ms here and rule sets repeat expressions (one per project...).
  let error = expressionChecks.get(raw);
  if (!expressionChecks.has(raw)) {
    try {
      // RE2 semantics: RE2JS refuses what RE2 refuses (backreferences, lookaround, ...).
      RE2JS.compile(anchoredPattern(raw)!);
    } catch (err) {
      error = err instanceof Error ? err.message.replace(/^error parsing regexp: /, "") : String(err);
    }
    if (expressionChecks.size >= EXPRESSION_CACHE_SIZE) {
      expressionChecks.delete(expressionChecks.keys().next().value!);
    }
    expressionChecks.set(raw, error);
  }
  if (error !== undefined) {
    problems.add(field, `${quote(raw)} is not a valid RE2 expression: ${error}`);
    return undefined;
  }
  return raw;
}

function canonicalMethods(
  inputs: readonly string[],
  field: string,
  problems: Problems,
): string[] | undefined {
  const out = new Set<string>();
  let ok = true;
  for (let i = 0; i < inputs.length; i++) {
    const raw = inputs[i]!;
    // Uppercase only after an ASCII check: "\u0131".toUpperCase() is "I".
    const method = ASCII_LETTERS.test(raw) ? raw.toUpperCase() : "";
    if (!HTTP_METHODS.has(method)) {
      problems.add(
        `${field}[${i}]`,
        `${quote(raw)} is not a known HTTP method (${[...HTTP_METHODS].join(", ")})`,
      );
      ok = false;
      continue;
    }
    out.add(method);
  }
  return ok ? [...out].sort() : undefined;
}
