// `clawker firewall events`: the firewall's decisions (EgressService.WatchFirewallEvents, our
// extension): a backfill since a time, then live ones with --follow. Columns on a terminal, one
// JSON object per line with --format json (pipe to jq).
import { egress } from "@clawker/proto";
import { withAdmin } from "../admin-connection.js";
import { optStr, type CommandSpec, type FlagValues } from "../command-spec.js";
import { CliError, ExitCode } from "../exit-codes.js";
import type { Io } from "../io.js";
import { CONNECT_FLAGS, refusedRequest } from "./firewall-shared.js";

const S = egress.EgressServiceService;

/** The spec of `clawker firewall events`. */
export const FIREWALL_EVENTS: CommandSpec = {
  words: ["firewall", "events"],
  summary: "The firewall's decisions (DNS gate, proxy, eBPF): since a time, and live with --follow.",
  description:
    "Without --follow it prints what the control plane still keeps since --since (default 10m) and\n" +
    "exits. With --follow it goes on printing decisions as they happen until Ctrl+C. A watcher that\n" +
    "reads too slowly is told how many events it lost (a `gap` line), never left with a silent hole.",
  flags: {
    follow: { type: "boolean", short: "f", description: "keep printing new decisions" },
    since: {
      type: "string",
      value: "DURATION|TIME",
      description: "backfill from this long ago (30s, 10m, 2h, 1d) or this RFC 3339 time; 0: none",
    },
    agent: { type: "string", value: "NAME", description: "only this agent's decisions" },
    project: { type: "string", value: "PROJECT", description: "only this project's decisions" },
    denied: { type: "boolean", description: "only denials" },
    layer: {
      type: "string",
      multiple: true,
      value: "dns|bpf|proxy",
      description: "only decisions of this layer",
    },
    ...CONNECT_FLAGS,
  },
  examples: [
    "clawker firewall events --follow --denied",
    "clawker firewall events --agent dev --since 1h",
    "clawker firewall events --follow --format json | jq .dst_name",
  ],
};

const LAYERS: Readonly<Record<string, egress.Layer>> = {
  dns: egress.Layer.LAYER_DNS,
  bpf: egress.Layer.LAYER_BPF,
  proxy: egress.Layer.LAYER_PROXY,
};

const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `--since`: a duration back from now, or an RFC 3339 time; 0 for no backfill. In unix ns. */
export function parseSince(text: string, nowMs: number): bigint {
  const t = text.trim();
  if (t === "0") return 0n;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(t);
  if (m !== null) return BigInt(Math.max(1, Math.round(nowMs - Number(m[1]) * UNIT_MS[m[2]!]!))) * 1_000_000n;
  if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/.test(t)) {
    const at = Date.parse(t);
    if (Number.isFinite(at) && at > 0) return BigInt(at) * 1_000_000n;
  }
  throw new CliError(
    ExitCode.usage,
    `--since must be a duration like 30s, 10m, 2h or 1d, an RFC 3339 time, or 0; got ${JSON.stringify(text)}`,
  );
}

/** The request the flags ask for. */
export function eventsRequest(values: FlagValues, nowMs: number): egress.WatchFirewallEventsRequest {
  const layers = ((values["layer"] as string[] | undefined) ?? []).map((l) => {
    const layer = LAYERS[l.toLowerCase()];
    if (layer === undefined)
      throw new CliError(ExitCode.usage, `--layer must be dns, bpf or proxy, got ${JSON.stringify(l)}`);
    return layer;
  });
  const follow = values["follow"] === true;
  return {
    filter: {
      agentName: optStr(values, "agent") ?? "",
      project: optStr(values, "project") ?? "",
      verdicts: values["denied"] === true ? [egress.Verdict.VERDICT_DENIED] : [],
      layers,
    },
    // Without --follow, a backfill is the whole point: 10 minutes unless told otherwise.
    sinceUnixNanos: parseSince(optStr(values, "since") ?? (follow ? "0" : "10m"), nowMs),
    noFollow: !follow,
  };
}

const VERDICTS: Readonly<Record<number, string>> = {
  [egress.Verdict.VERDICT_ALLOWED]: "allowed",
  [egress.Verdict.VERDICT_DENIED]: "denied",
  [egress.Verdict.VERDICT_BYPASSED]: "bypassed",
};
const LAYER_NAMES: Readonly<Record<number, string>> = {
  [egress.Layer.LAYER_DNS]: "dns",
  [egress.Layer.LAYER_BPF]: "bpf",
  [egress.Layer.LAYER_PROXY]: "proxy",
};

function isoTime(ns: bigint): string {
  return new Date(Number(ns / 1_000_000n)).toISOString();
}

/** An event as `--format json` prints it (snake_case, enums as words, empty fields kept). */
export function eventJson(e: egress.FirewallEvent): Record<string, unknown> {
  if (e.gapCount > 0n) return { gap_count: Number(e.gapCount), time: isoTime(e.timeUnixNanos) };
  return {
    schema_version: e.schemaVersion,
    seq: Number(e.seq),
    time: isoTime(e.timeUnixNanos),
    time_unix_nanos: e.timeUnixNanos.toString(),
    agent_name: e.agentName,
    project: e.project,
    container_id: e.containerId,
    dst_name: e.dstName,
    dst_addr: e.dstAddr,
    port: e.port,
    protocol: e.protocol,
    verdict: VERDICTS[e.verdict] ?? "unknown",
    layer: LAYER_NAMES[e.layer] ?? "unknown",
    rule:
      e.rule === undefined
        ? null
        : { key: e.rule.key, project: e.rule.project, agent_name: e.rule.agentName, action: e.rule.action },
    reason: e.reason,
    method: e.method,
    path: e.path,
    http_status: e.httpStatus,
    bytes_in: Number(e.bytesIn),
    bytes_out: Number(e.bytesOut),
    duration_micros: Number(e.durationMicros),
  };
}

// Fixed widths: a followed stream cannot pad to the widest row it has not seen yet.
const COLUMNS = [
  ["TIME", 12],
  ["VERDICT", 9],
  ["LAYER", 6],
  ["AGENT", 20],
  ["DESTINATION", 40],
  ["PROTO", 6],
] as const;

/** The header line of the text output. */
export function eventHeader(): string {
  return COLUMNS.map(([h, w]) => h.padEnd(w)).join(" ") + " REASON\n";
}

/** One event as a text line (a gap as a line saying how many were lost). */
export function eventLine(e: egress.FirewallEvent): string {
  if (e.gapCount > 0n) return `-- ${e.gapCount} events lost: this watcher fell behind --\n`;
  const agent = e.agentName === "" ? "-" : e.project === "" ? e.agentName : `${e.project}.${e.agentName}`;
  const where = e.dstName !== "" ? e.dstName : e.dstAddr !== "" ? e.dstAddr : "-";
  const dst = e.port > 0 ? `${where}:${e.port}` : where;
  const detail = [
    e.reason,
    e.method === "" ? "" : `${e.method} ${e.path}`,
    e.httpStatus === 0 ? "" : String(e.httpStatus),
    e.rule === undefined ? "" : `rule ${e.rule.key}`,
  ]
    .filter((s) => s !== "")
    .join(" ");
  const cells = [
    isoTime(e.timeUnixNanos).slice(11, 23),
    VERDICTS[e.verdict] ?? "unknown",
    LAYER_NAMES[e.layer] ?? "-",
    agent,
    dst,
    e.protocol || "-",
  ];
  return cells.map((c, i) => c.padEnd(COLUMNS[i]![1])).join(" ") + " " + detail + "\n";
}

/** Runs `firewall events`. */
export async function firewallEvents(values: FlagValues, io: Io): Promise<number> {
  const request = eventsRequest(values, Date.now());
  const isJson = values["format"] === "json";
  const abort = new AbortController();
  const stopInterrupt = io.onInterrupt?.(() => abort.abort());
  try {
    await withAdmin(
      values,
      io,
      async (c) => {
        if (!isJson) io.stdout.write(eventHeader());
        try {
          for await (const m of c.streamMethod(S.watchFirewallEvents, request, { signal: abort.signal })) {
            const e = m.event;
            if (e === undefined) continue;
            io.stdout.write(isJson ? JSON.stringify(eventJson(e)) + "\n" : eventLine(e));
          }
        } catch (err) {
          if (abort.signal.aborted) return;
          throw refusedRequest(err);
        }
      },
      // A followed stream has no deadline; a backfill has the usual --timeout.
      request.noFollow ? { socket: false, timeoutDefault: "30s" } : { socket: false },
    );
  } finally {
    stopInterrupt?.();
  }
  return ExitCode.ok;
}
