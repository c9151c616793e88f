// `clawker controlplane agents`: ListAgents with the CLI's token, as a table or JSON.
import type { admin as adminProto } from "@clawker/proto";
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
    format: FORMAT_FLAG,
  },
  examples: [
    "clawker controlplane agents",
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
  const rows = await withAdmin(values, io, async (client) => agentRows(await client.listAgents()), {
    timeoutDefault: "10s",
  });
  if (values["format"] === "json") {
    io.stdout.write(JSON.stringify({ agents: rows }, null, 2) + "\n");
  } else if (rows.length === 0) {
    io.stdout.write("no agents registered\n");
  } else {
    io.stdout.write(agentTable(rows));
  }
  return ExitCode.ok;
}
