// `clawker firewall add|remove|prune|list`: the egress rules, with the Go clawker's verbs and
// flags, plus our `--project` / `--agent` scope.
import { admin as adminProto } from "@clawker/proto";
import { optStr, positionals, type CommandSpec, type FlagValues } from "../command-spec.js";
import { CliError, ExitCode } from "../exit-codes.js";
import type { Io } from "../io.js";
import {
  CONNECT_FLAGS,
  SCOPE_FLAGS,
  ruleJson,
  scopeLabel,
  scopeOf,
  table,
  withFirewallClient,
} from "./firewall-shared.js";

const usage = (message: string): CliError => new CliError(ExitCode.usage, message);

/** The spec of `clawker firewall add`. */
export const FIREWALL_ADD: CommandSpec = {
  words: ["firewall", "add"],
  summary: "Allow (or deny) egress to a destination; live on the agents' next connection.",
  description:
    "DST is a domain, a *.wildcard domain, an IPv4 address or a CIDR. Without --path, --action is\n" +
    "the rule's (default allow). With --path, the rule allows the destination and --action (required)\n" +
    "applies to that path: a literal prefix, or ~ and an RE2 expression matching the whole path;\n" +
    "--methods narrows it (GET,HEAD). Path rules accumulate across calls. --path-default decides\n" +
    "the paths no path rule matches. A rule is global unless --project or --agent scopes it.\n" +
    "An invalid rule is refused with the field to fix (exit 2) and nothing is stored.",
  flags: {
    proto: {
      type: "string",
      value: "PROTO",
      description: "https (default), http, ws, wss, ssh, tcp, udp, or another name",
    },
    port: {
      type: "string",
      value: "PORT",
      description: "one port or lo-hi (opaque protocols); default: the protocol's",
    },
    action: {
      type: "string",
      value: "allow|deny",
      description: "the rule's action, or with --path the path rule's",
    },
    path: {
      type: "string",
      value: "URL-PATH",
      description: "a path rule: /prefix or '~regex' (needs --action)",
    },
    methods: {
      type: "string",
      multiple: true,
      value: "M[,M]",
      description: "HTTP methods the path rule applies to (needs --path)",
    },
    "path-default": {
      type: "string",
      value: "allow|deny",
      description: "verdict for paths no path rule matches",
    },
    ...SCOPE_FLAGS,
    ...CONNECT_FLAGS,
  },
  positionals: "DST",
  examples: [
    "clawker firewall add registry.npmjs.org",
    "clawker firewall add git.example.com --proto ssh",
    "clawker firewall add db.internal --proto tcp --port 5432 --project web",
    "clawker firewall add api.github.com --path / --action allow --methods GET,HEAD",
    "clawker firewall add api.github.com --path '~/repos/(a|b)/?' --action allow",
    "clawker firewall add tracker.example.com --action deny --agent dev --project web",
  ],
};

/** The rule `add` sends, from its flags (pure; usage errors before anything is sent). */
export function addRequest(values: FlagValues): adminProto.EgressRule {
  const [dst, ...extra] = positionals(values);
  if (dst === undefined || dst === "") throw usage("add needs a destination (DST)");
  if (extra.length > 0) throw usage(`add takes one destination; unexpected ${JSON.stringify(extra[0])}`);
  const path = optStr(values, "path");
  const action = optStr(values, "action");
  const methods = (Array.isArray(values["methods"]) ? values["methods"] : [])
    .flatMap((m) => m.split(","))
    .map((m) => m.trim())
    .filter((m) => m !== "");
  if (path !== undefined && action === undefined) {
    throw usage("--path needs --action allow or --action deny (what the path rule does)");
  }
  if (methods.length > 0 && path === undefined) throw usage("--methods narrows a path rule: give --path too");
  return adminProto.EgressRule.fromPartial({
    dst,
    proto: optStr(values, "proto") ?? "",
    port: optStr(values, "port") ?? "",
    // With --path the destination is allowed and the action is the path rule's (Go clawker's shape).
    action: path === undefined ? (action ?? "") : "allow",
    pathRules: path === undefined ? [] : [{ path, action: action ?? "", methods }],
    pathDefault: optStr(values, "path-default") ?? "",
    ...scopeOf(values),
  });
}

const ADD_WORDS: Record<adminProto.AddRuleStatus, string> = {
  [adminProto.AddRuleStatus.ADD_RULE_STATUS_ADDED]: "added",
  [adminProto.AddRuleStatus.ADD_RULE_STATUS_MODIFIED]: "modified",
  [adminProto.AddRuleStatus.ADD_RULE_STATUS_UNCHANGED]: "unchanged",
  [adminProto.AddRuleStatus.ADD_RULE_STATUS_UNSPECIFIED]: "unspecified",
  [adminProto.AddRuleStatus.UNRECOGNIZED]: "unrecognized",
};

/** Runs `firewall add`. */
export async function firewallAdd(values: FlagValues, io: Io): Promise<number> {
  const rule = addRequest(values);
  const result = await withFirewallClient(values, io, (c) => c.firewallAddRules([rule]));
  const status = result.statuses[0];
  if (status === undefined || result.statuses.length !== 1) {
    throw new CliError(
      ExitCode.error,
      `the control plane answered ${result.statuses.length} statuses for one rule`,
    );
  }
  const word = ADD_WORDS[status] ?? "unrecognized";
  if (word === "unspecified" || word === "unrecognized") {
    throw new CliError(ExitCode.error, `the control plane answered an unknown status (${status})`);
  }
  if (values["format"] === "json") {
    io.stdout.write(JSON.stringify({ status: word, rule: ruleJson(rule) }, null, 2) + "\n");
    return ExitCode.ok;
  }
  const what = describe(rule);
  io.stdout.write(
    word === "added"
      ? `Added rule: ${what}\n`
      : word === "modified"
        ? `Updated rule: ${what}\n`
        : `Rule already exists: ${what}, no change\n`,
  );
  return ExitCode.ok;
}

function describe(rule: adminProto.EgressRule): string {
  const parts = [rule.dst, rule.proto || "https", rule.port].filter((p) => p !== "").join(":");
  const path = rule.pathRules[0];
  const scope = scopeLabel(rule);
  return `${parts}${rule.action === "deny" ? " (deny)" : ""}${path === undefined ? "" : ` path ${path.path} (${path.action})`}${scope === "global" ? "" : ` [${scope}]`}`;
}

/** The spec of `clawker firewall remove`. */
export const FIREWALL_REMOVE: CommandSpec = {
  words: ["firewall", "remove"],
  summary: "Remove one rule (or one path rule of it); exit 1 when nothing matched.",
  description:
    "The rule is named as it was added: DST with --proto and --port (their defaults as in add), and\n" +
    "--project / --agent for a scoped rule. With --path only that path rule goes. Any spelling\n" +
    "finds the rule (case, a trailing dot, a default port). Floor rules cannot be removed.",
  flags: {
    proto: { type: "string", value: "PROTO", description: "the rule's protocol (default https)" },
    port: { type: "string", value: "PORT", description: "the rule's port (default: the protocol's)" },
    path: { type: "string", value: "URL-PATH", description: "remove only this path rule" },
    ...SCOPE_FLAGS,
    ...CONNECT_FLAGS,
  },
  positionals: "DST",
  examples: [
    "clawker firewall remove registry.npmjs.org",
    "clawker firewall remove git.example.com --proto ssh",
    "clawker firewall remove api.example.com --path /v1",
    "clawker firewall remove db.internal --proto tcp --port 5432 --project web",
  ],
};

/** Runs `firewall remove`. */
export async function firewallRemove(values: FlagValues, io: Io): Promise<number> {
  const [dst, ...extra] = positionals(values);
  if (dst === undefined || dst === "")
    throw usage("remove needs a destination (DST); to remove every rule: prune --all");
  if (extra.length > 0) throw usage(`remove takes one destination; unexpected ${JSON.stringify(extra[0])}`);
  const request = adminProto.FirewallRemoveRuleRequest.fromPartial({
    dst,
    proto: optStr(values, "proto") ?? "",
    port: optStr(values, "port") ?? "",
    path: optStr(values, "path") ?? "",
    ...scopeOf(values),
  });
  const result = await withFirewallClient(values, io, (c) => c.firewallRemoveRule(request));
  const status = removeWord(result.status);
  const named = `${[dst, request.proto || "https", request.port].filter((p) => p !== "").join(":")}${request.path === "" ? "" : ` path ${request.path}`}`;
  if (values["format"] === "json") io.stdout.write(JSON.stringify({ status, rule: named }, null, 2) + "\n");
  if (status === "not_found") {
    throw new CliError(ExitCode.error, `no rule ${named} to remove (see clawker firewall list)`);
  }
  if (values["format"] !== "json") {
    io.stdout.write(status === "path_removed" ? `Removed path rule: ${named}\n` : `Removed rule: ${named}\n`);
  }
  return ExitCode.ok;
}

function removeWord(status: adminProto.RemoveRuleStatus): "removed" | "path_removed" | "not_found" {
  switch (status) {
    case adminProto.RemoveRuleStatus.REMOVE_RULE_STATUS_REMOVED:
      return "removed";
    case adminProto.RemoveRuleStatus.REMOVE_RULE_STATUS_PATH_REMOVED:
      return "path_removed";
    case adminProto.RemoveRuleStatus.REMOVE_RULE_STATUS_NOT_FOUND:
      return "not_found";
    default:
      throw new CliError(ExitCode.error, `the control plane answered an unknown status (${status})`);
  }
}

/** The spec of `clawker firewall prune`. */
export const FIREWALL_PRUNE: CommandSpec = {
  words: ["firewall", "prune"],
  summary: "Remove every rule of one scope (global unless --project / --agent); needs --all --yes.",
  description:
    "Agents lose every egress the removed rules allowed, at once (their open connections too).\n" +
    "Floor rules stay. --yes confirms: there is no prompt.",
  flags: {
    all: { type: "boolean", description: "every rule of the scope (required)" },
    yes: { type: "boolean", short: "y", description: "confirm the removal (required)" },
    ...SCOPE_FLAGS,
    ...CONNECT_FLAGS,
  },
  examples: ["clawker firewall prune --all --yes", "clawker firewall prune --all --yes --project web"],
};

/** Runs `firewall prune`. */
export async function firewallPrune(values: FlagValues, io: Io): Promise<number> {
  if (values["all"] !== true) throw usage("prune needs --all (it removes every rule of the scope)");
  if (values["yes"] !== true) {
    throw usage(
      "prune --all removes every rule of the scope and agents lose that egress at once: pass --yes to confirm",
    );
  }
  const scope = scopeOf(values);
  const result = await withFirewallClient(values, io, (c) =>
    c.firewallRemoveRule(adminProto.FirewallRemoveRuleRequest.fromPartial({ all: true, ...scope })),
  );
  const status = removeWord(result.status);
  const label = scopeLabel(scope);
  if (values["format"] === "json") {
    io.stdout.write(JSON.stringify({ status, scope: label }, null, 2) + "\n");
  } else {
    io.stdout.write(
      status === "not_found" ? `No ${label} rules to remove\n` : `Removed every ${label} rule\n`,
    );
  }
  return ExitCode.ok;
}

/** The spec of `clawker firewall list`. */
export const FIREWALL_LIST: CommandSpec = {
  words: ["firewall", "list"],
  summary: "List the egress rules (global, then projects, then agents), floor rules marked.",
  description: "--project / --agent list exactly that scope's rules.",
  flags: { ...SCOPE_FLAGS, ...CONNECT_FLAGS },
  examples: [
    "clawker firewall list",
    "clawker firewall list --project web",
    "clawker firewall list --format json | jq '.rules[].dst'",
  ],
};

/** The rules of one scope (exact), or all of them when no scope flag is given. */
export function filterScope(
  rules: readonly adminProto.EgressRule[],
  values: FlagValues,
): adminProto.EgressRule[] {
  const project = optStr(values, "project");
  const agent = optStr(values, "agent");
  if (project === undefined && agent === undefined) return [...rules];
  return rules.filter((r) => r.project === (project ?? "") && r.agentName === (agent ?? ""));
}

/** The list table: one row per rule, path rules and the path default indented under it. */
export function rulesTable(rules: readonly adminProto.EgressRule[]): string {
  const rows: string[][] = [["SCOPE", "DST", "PROTO", "PORT", "ACTION", "NOTES"]];
  for (const r of rules) {
    const notes = [r.floor ? "floor" : "", r.insecureSkipTlsVerify ? "insecure-skip-tls-verify" : ""]
      .filter((n) => n !== "")
      .join(", ");
    rows.push([scopeLabel(r), r.dst, r.proto, r.port, r.action, notes]);
    for (const p of r.pathRules) {
      rows.push(["", `  ${p.path}`, "", "", p.action, p.methods.length === 0 ? "" : p.methods.join(",")]);
    }
    if (r.pathDefault !== "") rows.push(["", "  (path default)", "", "", r.pathDefault, ""]);
  }
  return table(rows);
}

/** Runs `firewall list`. */
export async function firewallList(values: FlagValues, io: Io): Promise<number> {
  const rules = filterScope(await withFirewallClient(values, io, (c) => c.firewallListRules()), values);
  if (values["format"] === "json") {
    io.stdout.write(JSON.stringify({ rules: rules.map(ruleJson) }, null, 2) + "\n");
  } else if (rules.length === 0) {
    io.stdout.write("no rules\n");
  } else {
    io.stdout.write(rulesTable(rules));
  }
  return ExitCode.ok;
}
