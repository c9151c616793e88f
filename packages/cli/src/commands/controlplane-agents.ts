// `clawker controlplane agents`: ListAgents with the CLI's token, as a table or JSON; with
// `--stats`, each agent's own usage beside it (AgentUsageService, read from its container's cgroups).
import { jobs, type admin as adminProto } from "@clawker/proto";
import { withAdmin } from "../admin-connection.js";
import { FORMAT_FLAG, type CommandSpec, type FlagValues } from "../command-spec.js";
import { ExitCode } from "../exit-codes.js";
import type { Io } from "../io.js";
import { ADMIN_SOCKET_FLAG, LOCATE_FLAGS, TOKEN_ENDPOINT_FLAG } from "./controlplane-up.js";

/** The spec of `clawker controlplane agents`. */
export const CONTROLPLANE_AGENTS: CommandSpec = {
  words: ["controlplane", "agents"],
  summary: "List the registered agents (ListAgents, as client clawker-cli with scope admin).",
  flags: {
    "trust-dir": LOCATE_FLAGS["trust-dir"],
    admin: LOCATE_FLAGS.admin,
    "token-endpoint": TOKEN_ENDPOINT_FLAG,
    "admin-socket": ADMIN_SOCKET_FLAG,
    timeout: { type: "string", value: "DURATION", description: "deadline of the call (default 10s)" },
    stats: { type: "boolean", description: "add each agent's CPU, memory, IO and process usage" },
    format: FORMAT_FLAG,
  },
  examples: [
    "clawker controlplane agents",
    "clawker controlplane agents --stats",
    "clawker controlplane agents --format json | jq '.agents[].name'",
  ],
};

/** One agent as the CLI prints it. */
export interface AgentRow {
  readonly name: string;
  readonly project: string;
  readonly containerId: string;
  readonly certThumbprint: string;
  readonly registeredAt: string;
  readonly lastSeen: string;
  /** With --stats: the agent container's usage and limits (uint64 figures as strings). */
  readonly usage?: AgentUsageRow;
}

/** One agent's usage as the CLI prints it (AgentUsage's JSON, without the names). */
export interface AgentUsageRow {
  readonly cpuLimitMillis: number;
  readonly memoryLimitBytes: string;
  readonly pidsLimit: string;
  readonly stats?: Readonly<Record<string, unknown>>;
  readonly note: string;
}

/** Attaches each usage to its agent's row by container id. */
export function withUsage(rows: readonly AgentRow[], usage: readonly jobs.AgentUsage[]): AgentRow[] {
  const byId = new Map(usage.map((u) => [u.containerId, u]));
  return rows.map((r) => {
    const u = byId.get(r.containerId);
    if (u === undefined) return r;
    return {
      ...r,
      usage: {
        cpuLimitMillis: u.cpuLimitMillis,
        memoryLimitBytes: String(u.memoryLimitBytes),
        pidsLimit: String(u.pidsLimit),
        ...(u.stats === undefined ? {} : { stats: jobs.JobStats.toJSON(u.stats) as Record<string, unknown> }),
        note: u.note,
      },
    };
  });
}

/** A fixed-width table of agents with their usage (CPU seconds, memory, IO, processes). */
export function usageTable(rows: readonly AgentRow[]): string {
  const mib = (v: unknown): string => `${(Number(v ?? 0) / (1 << 20)).toFixed(1)}M`;
  const table = [
    ["NAME", "PROJECT", "CONTAINER", "CPU", "THROTTLED", "MEMORY", "PEAK", "IO READ", "IO WRITE", "PIDS"],
    ...rows.map((r) => {
      const u = r.usage;
      const s = u?.stats;
      if (u === undefined || s === undefined)
        return [r.name, r.project, r.containerId.slice(0, 12), u?.note ?? "no usage", "", "", "", "", "", ""];
      const limit = (v: string, f: (x: unknown) => string): string => (v === "0" ? "" : `/${f(v)}`);
      return [
        r.name,
        r.project,
        r.containerId.slice(0, 12),
        `${(Number(s["cpuUsageUsec"] ?? 0) / 1e6).toFixed(2)}s${u.cpuLimitMillis === 0 ? "" : `/${u.cpuLimitMillis / 1000}cpu`}`,
        `${(Number(s["cpuThrottledUsec"] ?? 0) / 1e6).toFixed(2)}s`,
        `${mib(s["memoryCurrentBytes"])}${limit(u.memoryLimitBytes, mib)}`,
        mib(s["memoryPeakBytes"]),
        mib(s["ioReadBytes"]),
        mib(s["ioWriteBytes"]),
        `${Number(s["pidsCurrent"] ?? 0)}${limit(u.pidsLimit, String)}`,
      ];
    }),
  ];
  return formatTable(table);
}

/** Converts the wire form (bigint seconds) to printable rows. */
export function agentRows(agents: readonly adminProto.Agent[]): AgentRow[] {
  const iso = (s: bigint): string =>
    s === 0n ? "" : new Date(Number(s) * 1000).toISOString().replace(".000Z", "Z");
  return agents.map((a) => ({
    name: a.agentName,
    project: a.project,
    containerId: a.containerId,
    certThumbprint: a.certThumbprint,
    registeredAt: iso(a.registeredAtUnix),
    lastSeen: iso(a.lastSeenUnix),
  }));
}

/** A fixed-width table of agent rows (short container id and thumbprint). */
export function agentTable(rows: readonly AgentRow[]): string {
  const table = [
    ["NAME", "PROJECT", "CONTAINER", "THUMBPRINT", "REGISTERED", "LAST SEEN"],
    ...rows.map((r) => [
      r.name,
      r.project,
      r.containerId.slice(0, 12),
      r.certThumbprint.slice(0, 12),
      r.registeredAt,
      r.lastSeen,
    ]),
  ];
  return formatTable(table);
}

function formatTable(table: readonly string[][]): string {
  const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  return (
    table
      .map((row) =>
        row
          .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]! + 2)))
          .join("")
          .trimEnd(),
      )
      .join("\n") + "\n"
  );
}

/** Runs `controlplane agents`. */
export async function controlplaneAgents(values: FlagValues, io: Io): Promise<number> {
  const rows = await withAdmin(
    values,
    io,
    async (client) => {
      const listed = agentRows(await client.listAgents());
      if (values["stats"] !== true) return listed;
      const { agents } = await client.callMethod(jobs.AgentUsageServiceService.listAgentUsage, {
        agentName: "",
        project: "",
      });
      return withUsage(listed, agents);
    },
    { timeoutDefault: "10s" },
  );
  if (values["format"] === "json") {
    io.stdout.write(JSON.stringify({ agents: rows }, null, 2) + "\n");
  } else if (rows.length === 0) {
    io.stdout.write("no agents registered\n");
  } else {
    io.stdout.write(values["stats"] === true ? usageTable(rows) : agentTable(rows));
  }
  return ExitCode.ok;
}
