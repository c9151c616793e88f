// The floor file: rules the operator wants present whatever callers do (e.g. the package registry
// an agent image needs). YAML or JSON (YAML is a superset), checked with zod and then with the
// same validation as FirewallAddRules; every problem is listed with its position.
import { readFileSync, statSync } from "node:fs";
import { LineCounter, parseDocument } from "yaml";
import * as z from "zod";
import { FloorFileError, problemPath } from "./errors.js";
import type { Rule, RuleInput } from "./rule.js";
import { describeKey, ruleKey } from "./rule.js";
import { checkRule } from "./rule-validation.js";

const PathRuleSchema = z.strictObject({
  path: z.string(),
  action: z.string().optional(),
  methods: z.array(z.string()).optional(),
});

// The wire's field names (snake_case), so a rule reads the same in the file, the .proto and a
// `clawker.yaml`. A port may be written as a YAML number.
const FloorRuleSchema = z.strictObject({
  dst: z.string(),
  proto: z.string().optional(),
  port: z.union([z.string(), z.number().int().nonnegative()]).optional(),
  action: z.string().optional(),
  path_rules: z.array(PathRuleSchema).optional(),
  path_default: z.string().optional(),
  insecure_skip_tls_verify: z.boolean().optional(),
  project: z.string().optional(),
  agent_name: z.string().optional(),
});

const FloorFileSchema = z.strictObject({ rules: z.array(FloorRuleSchema) });

type FloorRuleEntry = z.infer<typeof FloorRuleSchema>;

/**
 * Reads and validates a floor file. Throws FloorFileError listing every problem (unreadable, not
 * YAML/JSON, unknown or mistyped fields, invalid rules, two rules with one key), each with its
 * position (`rules[2].port (line 9)`). A file others may write is refused: whoever can edit it
 * decides what every agent may reach.
 */
export function loadFloorFile(path: string): readonly Rule[] {
  let text: string;
  try {
    const st = statSync(path);
    if ((st.mode & 0o022) !== 0) {
      throw new FloorFileError(path, [
        `is writable by group or others (mode ${(st.mode & 0o777).toString(8)}); chmod go-w`,
      ]);
    }
    const uid = process.getuid?.();
    if (uid !== undefined && st.uid !== uid && st.uid !== 0) {
      throw new FloorFileError(path, [`is owned by uid ${st.uid}, neither root nor this process (${uid})`]);
    }
    text = readFileSync(path, "utf8");
  } catch (err) {
    if (err instanceof FloorFileError) throw err;
    throw new FloorFileError(path, [`cannot be read: ${(err as Error).message}`], { cause: err });
  }
  return parseFloor(text, path);
}

/** Validates floor-file text; `source` names it in errors. Throws FloorFileError. */
export function parseFloor(text: string, source: string): readonly Rule[] {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines });
  if (doc.errors.length > 0) {
    throw new FloorFileError(
      source,
      doc.errors.map(
        (e) =>
          `line ${e.linePos?.[0].line ?? "?"}: ${e.message.split("\n")[0]!.replace(/ at line \d+, column \d+:$/, "")}`,
      ),
    );
  }
  const where = (path: readonly PropertyKey[]): string => {
    const shown = path.reduce<string>(
      (acc, k) => (typeof k === "number" ? `${acc}[${k}]` : acc === "" ? String(k) : `${acc}.${String(k)}`),
      "",
    );
    return `${shown === "" ? "(top level)" : shown}${lineOf(doc, lines, path)}`;
  };
  const parsed = FloorFileSchema.safeParse(doc.toJS());
  if (!parsed.success) {
    throw new FloorFileError(
      source,
      parsed.error.issues.map((issue) => `${where(issue.path)}: ${issue.message}`),
    );
  }
  const problems: string[] = [];
  const rules: Rule[] = [];
  const seen = new Map<string, number>();
  parsed.data.rules.forEach((entry, index) => {
    const check = checkRule(toInput(entry), index);
    if (!check.ok) {
      for (const p of check.problems) {
        problems.push(`${problemPath(p)}${lineOf(doc, lines, fieldPath(index, p.field))}: ${p.message}`);
      }
      return;
    }
    const key = ruleKey(check.rule);
    const first = seen.get(key);
    if (first !== undefined) {
      problems.push(`${where(["rules", index])}: ${describeKey(check.rule)} repeats rules[${first}]`);
      return;
    }
    seen.set(key, index);
    rules.push(check.rule);
  });
  if (problems.length > 0) throw new FloorFileError(source, problems);
  return Object.freeze(rules);
}

function toInput(entry: FloorRuleEntry): RuleInput {
  return {
    dst: entry.dst,
    proto: entry.proto ?? "",
    port: entry.port === undefined ? "" : String(entry.port),
    action: entry.action ?? "",
    pathRules: entry.path_rules ?? [],
    pathDefault: entry.path_default ?? "",
    insecureSkipTlsVerify: entry.insecure_skip_tls_verify ?? false,
    project: entry.project ?? "",
    agentName: entry.agent_name ?? "",
  };
}

/** `path_rules[0].methods[1]` of rule `index` as a document path. */
function fieldPath(index: number, field: string): PropertyKey[] {
  const path: PropertyKey[] = ["rules", index];
  for (const part of field.split(".")) {
    const m = /^([a-z_]+)((?:\[\d+\])*)$/.exec(part);
    if (m === null) break;
    path.push(m[1]!);
    for (const i of m[2]!.matchAll(/\[(\d+)\]/g)) path.push(Number(i[1]));
  }
  return path;
}

/** ` (line N)` for the deepest node of `path` the document has, or "" when none. */
function lineOf(
  doc: ReturnType<typeof parseDocument>,
  lines: LineCounter,
  path: readonly PropertyKey[],
): string {
  for (let n = path.length; n > 0; n--) {
    const node = doc.getIn(path.slice(0, n), true) as { range?: [number, number, number] } | undefined;
    if (node?.range !== undefined) return ` (line ${lines.linePos(node.range[0]).line})`;
  }
  return "";
}
