// The audit log's on-disk schema, version 1 (README.md, "Records"): one JSON object per line,
// `v` and `kind` first. 64-bit integers are decimal strings (proto3 JSON's rule), so no reader
// loses precision; JSON.stringify escapes every control character, so no field can forge a line.
import { egress } from "@clawker/proto";

/** The schema version written on every record. */
export const AUDIT_SCHEMA_VERSION = 1;

/** The operator and agent actions the log records. */
export type AuditActionKind =
  | "rule_change"
  | "bypass_start"
  | "bypass_end"
  | "enable"
  | "disable"
  | "approval"
  | "dismissal"
  | "request"
  | "stack_up"
  | "stack_down"
  | "ca_rotated";

/** Who caused an action: the token's OAuth2 client id and the caller's certificate CN. */
export interface AuditWho {
  readonly clientId?: string;
  readonly cn?: string;
}

/** Why records were lost (a gap record's `causes`). */
export type GapCause = "backlog_full" | "write_failed" | "torn_tail" | "unserializable";

const VERDICTS: Readonly<Record<egress.Verdict, string>> = {
  [egress.Verdict.VERDICT_UNSPECIFIED]: "unspecified",
  [egress.Verdict.VERDICT_ALLOWED]: "allowed",
  [egress.Verdict.VERDICT_DENIED]: "denied",
  [egress.Verdict.VERDICT_BYPASSED]: "bypassed",
  [egress.Verdict.UNRECOGNIZED]: "unspecified",
};
const LAYERS: Readonly<Record<egress.Layer, string>> = {
  [egress.Layer.LAYER_UNSPECIFIED]: "unspecified",
  [egress.Layer.LAYER_DNS]: "dns",
  [egress.Layer.LAYER_BPF]: "bpf",
  [egress.Layer.LAYER_PROXY]: "proxy",
  [egress.Layer.UNRECOGNIZED]: "unspecified",
};
const VERDICT_OF = new Map(
  Object.entries(VERDICTS)
    .filter(([, v]) => v !== "unspecified")
    .map(([k, v]) => [v, Number(k) as egress.Verdict]),
);
const LAYER_OF = new Map(
  Object.entries(LAYERS)
    .filter(([, v]) => v !== "unspecified")
    .map(([k, v]) => [v, Number(k) as egress.Layer]),
);

/** ISO 8601 UTC with nanoseconds, from nanoseconds since the epoch. */
function isoOf(unixNanos: bigint): string {
  const ms = unixNanos / 1_000_000n;
  const iso = new Date(Number(ms)).toISOString(); // ...T12:00:00.123Z
  const nanos = (((unixNanos % 1_000_000_000n) + 1_000_000_000n) % 1_000_000_000n)
    .toString()
    .padStart(9, "0");
  return `${iso.slice(0, 20)}${nanos}Z`;
}

/** One decision (a FirewallEvent) as a line, newline included. */
export function encodeDecision(e: egress.FirewallEvent): string {
  const r: Record<string, unknown> = {
    v: AUDIT_SCHEMA_VERSION,
    kind: "decision",
    time: isoOf(e.timeUnixNanos),
    time_unix_nanos: e.timeUnixNanos.toString(),
    seq: e.seq.toString(),
    schema_version: e.schemaVersion,
    agent_name: e.agentName,
    project: e.project,
    container_id: e.containerId,
    dst_name: e.dstName,
    dst_addr: e.dstAddr,
    port: e.port,
    protocol: e.protocol,
    verdict: VERDICTS[e.verdict] ?? "unspecified",
    layer: LAYERS[e.layer] ?? "unspecified",
    reason: e.reason,
  };
  // Absent means empty or zero (proto3's defaults): most decisions carry no HTTP detail.
  if (e.rule !== undefined) {
    r["rule"] = {
      key: e.rule.key,
      project: e.rule.project,
      agent_name: e.rule.agentName,
      action: e.rule.action,
    };
  }
  if (e.method !== "") r["method"] = e.method;
  if (e.path !== "") r["path"] = e.path;
  if (e.httpStatus !== 0) r["http_status"] = e.httpStatus;
  if (e.bytesIn !== 0n) r["bytes_in"] = e.bytesIn.toString();
  if (e.bytesOut !== 0n) r["bytes_out"] = e.bytesOut.toString();
  if (e.durationMicros !== 0n) r["duration_micros"] = e.durationMicros.toString();
  if (e.gapCount !== 0n) r["gap_count"] = e.gapCount.toString();
  return `${JSON.stringify(r)}\n`;
}

/** BigInts in an action's detail become decimal strings (JSON has no 64-bit integers). */
function bigintSafe(_key: string, value: unknown): unknown {
  return typeof value === "bigint" ? value.toString() : value;
}

/** One action as a line; throws (TypeError) only for a detail JSON cannot hold (a cycle). */
export function encodeAction(
  kind: AuditActionKind,
  who: AuditWho,
  detail: Record<string, unknown>,
  nowUnixNanos: bigint,
): string {
  const r = {
    v: AUDIT_SCHEMA_VERSION,
    kind: "action",
    time: isoOf(nowUnixNanos),
    time_unix_nanos: nowUnixNanos.toString(),
    action: kind,
    who: { client_id: who.clientId ?? "", cn: who.cn ?? "" },
    detail,
  };
  return `${JSON.stringify(r, bigintSafe)}\n`;
}

/** A gap record: how many records were lost, and why. */
export function encodeGap(
  lost: number,
  causes: Partial<Record<GapCause, number>>,
  nowUnixNanos: bigint,
  extra: Record<string, unknown> = {},
): string {
  const r = {
    v: AUDIT_SCHEMA_VERSION,
    kind: "gap",
    time: isoOf(nowUnixNanos),
    time_unix_nanos: nowUnixNanos.toString(),
    lost,
    causes,
    ...extra,
  };
  return `${JSON.stringify(r)}\n`;
}

/** What a line read back is. */
export type ParsedRecord =
  | { readonly kind: "decision"; readonly event: egress.FirewallEvent }
  | { readonly kind: "gap"; readonly lost: number; readonly timeUnixNanos: bigint }
  | { readonly kind: "action"; readonly timeUnixNanos: bigint; readonly record: Record<string, unknown> };

const str = (v: unknown): string => (typeof v === "string" ? v : "");
const num = (v: unknown): number => (typeof v === "number" && Number.isInteger(v) && v >= 0 ? v : 0);
/** A decimal string as a BigInt; undefined when it is not one. */
function big(v: unknown): bigint | undefined {
  if (v === undefined) return 0n;
  if (typeof v !== "string" || !/^-?\d{1,20}$/.test(v)) return undefined;
  return BigInt(v);
}

/**
 * Parses one line (without its newline). Undefined for anything that is not a complete record of
 * a version this reader knows: a torn line, garbage, a record of a later schema version.
 */
export function parseRecord(line: string): ParsedRecord | undefined {
  if (line.length === 0 || line.charCodeAt(0) !== 0x7b /* { */) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return undefined;
  const r = raw as Record<string, unknown>;
  if (r["v"] !== AUDIT_SCHEMA_VERSION) return undefined;
  const time = big(r["time_unix_nanos"]);
  if (time === undefined || r["time_unix_nanos"] === undefined) return undefined;
  switch (r["kind"]) {
    case "decision":
      return decodeDecision(r, time);
    case "gap":
      return { kind: "gap", lost: num(r["lost"]), timeUnixNanos: time };
    case "action":
      return { kind: "action", timeUnixNanos: time, record: r };
    default:
      return undefined;
  }
}

function decodeDecision(r: Record<string, unknown>, time: bigint): ParsedRecord | undefined {
  const seq = big(r["seq"]);
  const bytesIn = big(r["bytes_in"]);
  const bytesOut = big(r["bytes_out"]);
  const duration = big(r["duration_micros"]);
  const gap = big(r["gap_count"]);
  if (
    seq === undefined ||
    bytesIn === undefined ||
    bytesOut === undefined ||
    duration === undefined ||
    gap === undefined
  ) {
    return undefined;
  }
  const rule = r["rule"];
  const ruleRecord =
    typeof rule === "object" && rule !== null ? (rule as Record<string, unknown>) : undefined;
  return {
    kind: "decision",
    event: {
      schemaVersion: num(r["schema_version"]),
      seq,
      timeUnixNanos: time,
      agentName: str(r["agent_name"]),
      project: str(r["project"]),
      containerId: str(r["container_id"]),
      dstName: str(r["dst_name"]),
      dstAddr: str(r["dst_addr"]),
      port: num(r["port"]),
      protocol: str(r["protocol"]),
      verdict: VERDICT_OF.get(str(r["verdict"])) ?? egress.Verdict.VERDICT_UNSPECIFIED,
      layer: LAYER_OF.get(str(r["layer"])) ?? egress.Layer.LAYER_UNSPECIFIED,
      rule:
        ruleRecord === undefined
          ? undefined
          : {
              key: str(ruleRecord["key"]),
              project: str(ruleRecord["project"]),
              agentName: str(ruleRecord["agent_name"]),
              action: str(ruleRecord["action"]),
            },
      reason: str(r["reason"]),
      method: str(r["method"]),
      path: str(r["path"]),
      httpStatus: num(r["http_status"]),
      bytesIn,
      bytesOut,
      durationMicros: duration,
      gapCount: gap,
    },
  };
}
