// What the `clawker firewall` commands share: the connection (token, clock check), scope flags,
// agent -> container resolution, the rule's printable and JSON forms, and the error mapping that
// turns a refused rule into a usage error naming what to fix.
import { AdminError, type AdminClient } from "@clawker/adminclient";
import type { admin as adminProto } from "@clawker/proto";
import { withAdmin } from "../admin-connection.js";
import { FORMAT_FLAG, optStr, type FlagSpec, type FlagValues } from "../command-spec.js";
import { CliError, ExitCode } from "../exit-codes.js";
import type { Io } from "../io.js";
import { LOCATE_FLAGS, TOKEN_ENDPOINT_FLAG } from "./controlplane-up.js";

/** Where the control plane is and how long a call may take: every firewall command takes these. */
export const CONNECT_FLAGS: Readonly<Record<string, FlagSpec>> = {
  "trust-dir": LOCATE_FLAGS["trust-dir"],
  admin: LOCATE_FLAGS.admin,
  "token-endpoint": TOKEN_ENDPOINT_FLAG,
  timeout: { type: "string", value: "DURATION", description: "deadline of each call (default 30s)" },
  format: FORMAT_FLAG,
};

/** `--project` / `--agent`: the scope of a rule (our extension; neither is a global rule). */
export const SCOPE_FLAGS: Readonly<Record<string, FlagSpec>> = {
  project: {
    type: "string",
    value: "PROJECT",
    description: "scope to one project (with --agent: the agent's project)",
  },
  agent: { type: "string", value: "NAME", description: "scope to one agent" },
};

/**
 * Runs `body` with an open admin client (a clock too far off refused) and always closes it; a
 * malformed request the control plane refused becomes a usage error (refusedRequest). TCP only:
 * the firewall commands have no `--admin-socket`.
 */
export async function withFirewallClient<T>(
  values: FlagValues,
  io: Io,
  body: (client: AdminClient) => Promise<T>,
): Promise<T> {
  return await withAdmin(
    values,
    io,
    async (client) => {
      try {
        return await body(client);
      } catch (err) {
        throw refusedRequest(err);
      }
    },
    { socket: false, timeoutDefault: "30s" },
  );
}

/** The reasons of a malformed request: the admin domain's, and the firewall's own (API.md §6). */
const MALFORMED = new Set<string>([
  "invalid_argument",
  "invalid_rule",
  "invalid_selector",
  "invalid_request",
]);

/**
 * A request the control plane refused as malformed (a rule, a selector, a duration) is a usage
 * error (exit 2) with the server's words, which name the rule index and field to fix.
 */
export function refusedRequest(err: unknown): unknown {
  if (err instanceof AdminError && MALFORMED.has(err.reason)) {
    return new CliError(ExitCode.usage, err.message, { cause: err });
  }
  return err;
}

/** The wire scope fields from `--project` / `--agent`. */
export function scopeOf(values: FlagValues): { project: string; agentName: string } {
  return { project: optStr(values, "project") ?? "", agentName: optStr(values, "agent") ?? "" };
}

/** A rule's scope for people and JSON: `global`, `project:<p>` or `agent:<p>.<a>` (`agent:<a>`). */
export function scopeLabel(rule: Pick<adminProto.EgressRule, "project" | "agentName">): string {
  if (rule.agentName !== "") return `agent:${rule.project === "" ? "" : `${rule.project}.`}${rule.agentName}`;
  if (rule.project !== "") return `project:${rule.project}`;
  return "global";
}

/** A rule as `--format json` prints it (the wire's snake_case names, plus the scope label). */
export function ruleJson(rule: adminProto.EgressRule): Record<string, unknown> {
  return {
    scope: scopeLabel(rule),
    dst: rule.dst,
    proto: rule.proto,
    port: rule.port,
    action: rule.action,
    path_rules: rule.pathRules.map((p) => ({ path: p.path, action: p.action, methods: p.methods })),
    path_default: rule.pathDefault,
    insecure_skip_tls_verify: rule.insecureSkipTlsVerify,
    project: rule.project,
    agent_name: rule.agentName,
    floor: rule.floor,
  };
}

/** Columns padded to their widest cell; the last column is not padded. */
export function table(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return (
    rows
      .map((row) =>
        row
          .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]! + 2)))
          .join("")
          .trimEnd(),
      )
      .join("\n") + "\n"
  );
}

/** `90` -> `1m30s`, `3600` -> `1h0m0s`, `5` -> `5s`. */
export function formatSeconds(total: number): string {
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (h > 0) return `${h}h${m}m${s}s`;
  if (m > 0) return `${m}m${s}s`;
  return `${s}s`;
}

/** Which container an agent command names: `--container ID`, or `--agent` (+ `--project`). */
export interface ContainerTarget {
  readonly containerId: string;
  /** How to name it to people: `web.dev` or the short container id. */
  readonly label: string;
}

/** `--agent` / `--project` / `--container` for enable, disable and bypass. */
export const TARGET_FLAGS: Readonly<Record<string, FlagSpec>> = {
  agent: { type: "string", value: "NAME", description: "the agent, as in `clawker controlplane agents`" },
  project: { type: "string", value: "PROJECT", description: "project of --agent (default: none)" },
  container: { type: "string", value: "ID", description: "the agent's container id (or a unique prefix)" },
};

/**
 * The container an agent command names. `--agent` is looked up among the registered agents
 * (ListAgents); `--container` is passed as given (the control plane resolves prefixes).
 */
export async function resolveTarget(client: AdminClient, values: FlagValues): Promise<ContainerTarget> {
  const agent = optStr(values, "agent");
  const container = optStr(values, "container");
  const project = optStr(values, "project") ?? "";
  if ((agent === undefined) === (container === undefined)) {
    throw new CliError(
      ExitCode.usage,
      "name the agent with --agent NAME [--project P] or with --container ID",
    );
  }
  if (container !== undefined) {
    if (project !== "") throw new CliError(ExitCode.usage, "--project goes with --agent, not --container");
    return { containerId: container, label: container.slice(0, 12) };
  }
  const label = project === "" ? agent! : `${project}.${agent!}`;
  const rows = (await client.listAgents()).filter((a) => a.agentName === agent && a.project === project);
  if (rows.length === 0) {
    throw new CliError(
      ExitCode.error,
      `no registered agent ${label} (see clawker controlplane agents${project === "" ? "; give --project if it has one" : ""})`,
    );
  }
  if (rows.length > 1) {
    const ids = rows.map((r) => r.containerId.slice(0, 12)).join(", ");
    throw new CliError(
      ExitCode.error,
      `${rows.length} containers are registered as ${label} (${ids}); name one with --container`,
    );
  }
  return { containerId: rows[0]!.containerId, label };
}
