// `clawker firewall denials|approve|dismiss`: the denial triage (issue 11 §3, §4): what agents were
// refused, grouped by destination, port and agent, with the agents' pending requests; an approval
// turns one into a rule (for the agent, its project or everyone; permanent or for a while), live
// when the command returns; a dismissal takes it off the list and grants nothing.
import type { AdminClient } from "@clawker/adminclient";
import { egress } from "@clawker/proto";
import { optStr, positionals, type CommandSpec, type FlagValues } from "../command-spec.js";
import { CliError, ExitCode } from "../exit-codes.js";
import type { Io } from "../io.js";
import {
  CONNECT_FLAGS,
  formatSeconds,
  ruleJson,
  scopeLabel,
  table,
  withFirewallClient,
} from "./firewall-shared.js";

const S = egress.EgressServiceService;
const usage = (message: string): CliError => new CliError(ExitCode.usage, message);

/** The longest approval the control plane accepts: 30 days. */
export const MAX_APPROVAL_SECONDS = 30 * 24 * 3600;

/** The spec of `clawker firewall denials`. */
export const FIREWALL_DENIALS: CommandSpec = {
  words: ["firewall", "denials"],
  summary: "Show what agents were refused (grouped) and their pending egress requests.",
  description:
    "One row per destination, port and agent: how often, when last, which layer refused it and\n" +
    "why. ID is what `clawker firewall approve` and `dismiss` take; a request's ID starts with r-.\n" +
    "A destination a rule now allows is not shown.",
  flags: {
    agent: { type: "string", value: "NAME", description: "only this agent (short name)" },
    project: { type: "string", value: "PROJECT", description: "only this project" },
    ...CONNECT_FLAGS,
  },
  examples: ["clawker firewall denials", "clawker firewall denials --project web --format json"],
};

/** The spec of `clawker firewall approve`. */
export const FIREWALL_APPROVE: CommandSpec = {
  words: ["firewall", "approve"],
  summary: "Allow a denied destination or a pending request (agent, project or everyone).",
  description:
    "ID is a denial's or request's id from `clawker firewall denials`. The rule allows that\n" +
    "destination and port for the agent (--agent, the default), its project (--project) or every\n" +
    "agent (--global); --for DURATION (30m, 1h, 7d; at most 30d) removes it again by itself, also\n" +
    "across control plane restarts. The command returns once the rule is live.",
  flags: {
    agent: { type: "boolean", description: "for the agent that was refused (the default)" },
    project: { type: "boolean", description: "for every agent of its project" },
    global: { type: "boolean", description: "for every agent" },
    for: { type: "string", value: "DURATION", description: "remove it again after this long" },
    ...CONNECT_FLAGS,
  },
  positionals: "ID",
  examples: ["clawker firewall approve d-3f2a9c...", "clawker firewall approve r-9b1c... --project --for 1h"],
};

/** The spec of `clawker firewall dismiss`. */
export const FIREWALL_DISMISS: CommandSpec = {
  words: ["firewall", "dismiss"],
  summary: "Take a denial (until it happens again) or a pending request off the list.",
  flags: { ...CONNECT_FLAGS },
  positionals: "ID",
  examples: ["clawker firewall dismiss d-3f2a9c..."],
};

/** `30s`, `45m`, `1h`, `7d` in whole seconds; a usage error otherwise or past 30 days. */
export function approvalSeconds(text: string): number {
  const m = /^(\d+)(s|m|h|d)$/.exec(text.trim());
  if (m === null) throw usage(`--for must be a duration like 30m, 1h or 7d, got ${JSON.stringify(text)}`);
  const seconds = Number(m[1]) * { s: 1, m: 60, h: 3600, d: 86400 }[m[2] as "s" | "m" | "h" | "d"];
  if (seconds < 1 || seconds > MAX_APPROVAL_SECONDS) {
    throw usage(`--for must be between 1s and 30d, got ${JSON.stringify(text)}`);
  }
  return seconds;
}

/** The one ID positional; a request's id starts with `r-`, a denial's with `d-`. */
function idOf(values: FlagValues): { denialId: string; requestId: string } {
  const [id, ...extra] = positionals(values);
  if (id === undefined) throw usage("give the ID of a denial or request (see clawker firewall denials)");
  if (extra.length > 0) throw usage(`unexpected argument ${JSON.stringify(extra[0])}`);
  if (id.startsWith("r-")) return { denialId: "", requestId: id };
  if (id.startsWith("d-")) return { denialId: id, requestId: "" };
  throw usage(`${JSON.stringify(id)} is not a denial (d-...) or request (r-...) id`);
}

function scopeFlag(values: FlagValues): egress.ApprovalScope {
  const chosen = (["agent", "project", "global"] as const).filter((f) => values[f] === true);
  if (chosen.length > 1) throw usage("give one of --agent, --project, --global");
  switch (chosen[0]) {
    case "project":
      return egress.ApprovalScope.APPROVAL_SCOPE_PROJECT;
    case "global":
      return egress.ApprovalScope.APPROVAL_SCOPE_GLOBAL;
    default:
      return egress.ApprovalScope.APPROVAL_SCOPE_AGENT;
  }
}

const LAYER: Readonly<Record<number, string>> = {
  [egress.Layer.LAYER_DNS]: "dns",
  [egress.Layer.LAYER_BPF]: "bpf",
  [egress.Layer.LAYER_PROXY]: "proxy",
};

function agentLabel(project: string, agentName: string): string {
  if (agentName === "") return "(unknown)";
  return project === "" ? agentName : `${project}.${agentName}`;
}

function iso(nanos: bigint): string {
  return new Date(Number(nanos / 1_000_000n)).toISOString();
}

function requestJson(r: egress.EgressRequest): Record<string, unknown> {
  return {
    id: r.id,
    agent: agentLabel(r.project, r.agentName),
    agent_name: r.agentName,
    project: r.project,
    dst: r.dst,
    port: r.port,
    proto: r.proto,
    reason: r.reason,
    requested_at: iso(r.requestedAtUnixNanos),
  };
}

/** Runs `firewall denials`. */
export async function firewallDenials(values: FlagValues, io: Io): Promise<number> {
  if (positionals(values).length > 0)
    throw usage(`unexpected argument ${JSON.stringify(positionals(values)[0])}`);
  const request = egress.ListFirewallDenialsRequest.fromPartial({
    agentName: optStr(values, "agent") ?? "",
    project: optStr(values, "project") ?? "",
  });
  const listed = await withFirewallClient(values, io, (c: AdminClient) =>
    c.callMethod(S.listFirewallDenials, request),
  );
  if (values["format"] === "json") {
    const out = {
      denials: listed.groups.map((g) => ({
        id: g.id,
        agent: agentLabel(g.project, g.agentName),
        agent_name: g.agentName,
        project: g.project,
        dst_name: g.dstName,
        dst_addr: g.dstAddr,
        port: g.port,
        protocol: g.protocol,
        count: Number(g.count),
        first_seen: iso(g.firstSeenUnixNanos),
        last_seen: iso(g.lastSeenUnixNanos),
        layer: LAYER[g.layer] ?? "",
        reason: g.reason,
        suggested_rule: g.suggestedRule === undefined ? null : ruleJson(g.suggestedRule),
        requests: g.requests.map(requestJson),
      })),
      requests: listed.requests.map(requestJson),
    };
    io.stdout.write(JSON.stringify(out, null, 2) + "\n");
    return ExitCode.ok;
  }
  if (listed.groups.length === 0 && listed.requests.length === 0) {
    io.stdout.write("No denials or pending requests\n");
    return ExitCode.ok;
  }
  if (listed.groups.length > 0) {
    io.stdout.write(
      table([
        ["ID", "AGENT", "DESTINATION", "PORT", "COUNT", "LAST SEEN", "LAYER", "REASON", "REQUESTS"],
        ...listed.groups.map((g) => [
          g.id,
          agentLabel(g.project, g.agentName),
          g.dstName || g.dstAddr,
          String(g.port),
          String(g.count),
          iso(g.lastSeenUnixNanos),
          LAYER[g.layer] ?? "-",
          g.reason || "-",
          g.requests.map((r) => r.id).join(",") || "-",
        ]),
      ]),
    );
  }
  const requests = [...listed.groups.flatMap((g) => g.requests), ...listed.requests];
  if (requests.length > 0) {
    if (listed.groups.length > 0) io.stdout.write("\n");
    io.stdout.write(
      table([
        ["REQUEST", "AGENT", "DESTINATION", "PORT", "PROTO", "REASON"],
        // The agent's words are shown as JSON strings, so they cannot pass for anything else.
        ...requests.map((r) => [
          r.id,
          agentLabel(r.project, r.agentName),
          r.dst,
          String(r.port),
          r.proto,
          JSON.stringify(r.reason),
        ]),
      ]),
    );
  }
  return ExitCode.ok;
}

/** Runs `firewall approve`. */
export async function firewallApprove(values: FlagValues, io: Io): Promise<number> {
  const ids = idOf(values);
  const scope = scopeFlag(values);
  const forText = optStr(values, "for");
  const seconds = forText === undefined ? 0 : approvalSeconds(forText);
  const answer = await withFirewallClient(values, io, (c) =>
    c.callMethod(S.approveEgress, { ...ids, scope, expiresAfterSeconds: seconds }),
  );
  const rule = answer.rule!;
  const ends = answer.expiresAtUnixNanos === 0n ? undefined : iso(answer.expiresAtUnixNanos);
  if (values["format"] === "json") {
    io.stdout.write(JSON.stringify({ rule: ruleJson(rule), expires_at: ends ?? null }, null, 2) + "\n");
    return ExitCode.ok;
  }
  io.stdout.write(
    `Allowed ${rule.dst}:${rule.proto}:${rule.port} for ${scopeLabel(rule)} (live now)` +
      (ends === undefined ? ", permanent\n" : `, until ${ends} (${formatSeconds(seconds)})\n`),
  );
  return ExitCode.ok;
}

/** Runs `firewall dismiss`. */
export async function firewallDismiss(values: FlagValues, io: Io): Promise<number> {
  const ids = idOf(values);
  await withFirewallClient(values, io, (c) => c.callMethod(S.dismissEgress, ids));
  const id = ids.denialId || ids.requestId;
  if (values["format"] === "json") io.stdout.write(JSON.stringify({ id, dismissed: true }, null, 2) + "\n");
  else io.stdout.write(`Dismissed ${id}\n`);
  return ExitCode.ok;
}
