// The audit log's on-disk schema, version 1 (README.md, "Records"): one JSON object per line,
// `v` and `kind` first. 64-bit integers are decimal strings (proto3 JSON's rule), so no reader
// loses precision; JSON.stringify escapes every control character, so no field can forge a line.
import { egress } from "@clawker/proto";
import type { Actor } from "../rule-store.js";

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

/** An Actor (rule_changes' caller) as the audit log's AuditWho. */
export function auditWhoOf(actor: Actor): AuditWho {
  return { clientId: actor.clientId, cn: actor.certCn };
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

/** JSON text of a string (quotes and escapes); a non-string (a malformed event) is written as "". */
const q = (s: string): string => (typeof s === "string" ? JSON.stringify(s) : '""');
/** A JSON integer: anything else (NaN, a fraction) would make the line unparsable, so it is 0. */
const int = (n: number): number => (Number.isSafeInteger(n) ? n : 0);

// The ISO prefix of the last second seen: decisions come in bursts within one second, and
// Date#toISOString was a third of a record's cost.
let isoSecond = "";
let isoPrefix = "";

/** ISO 8601 with nanoseconds from the decimal nanoseconds `ns` (what time_unix_nanos holds). */
function isoOfDecimal(ns: string): string {
  if (ns.length < 10 || ns.charCodeAt(0) === 0x2d /* - */) return isoOf(BigInt(ns));
  const second = ns.slice(0, -9);
  if (second !== isoSecond) {
    isoSecond = second;
    isoPrefix = new Date(Number(second) * 1000).toISOString().slice(0, 20);
  }
  return `${isoPrefix}${ns.slice(-9)}Z`;
}

/**
 * One decision (a FirewallEvent) as a line, newline included. Written out by hand, not through
 * JSON.stringify of an object: this runs once per decision on the publisher's turn.
 */
export function encodeDecision(e: egress.FirewallEvent): string {
  const t = e.timeUnixNanos.toString();
  let line =
    `{"v":${AUDIT_SCHEMA_VERSION},"kind":"decision","time":"${isoOfDecimal(t)}","time_unix_nanos":"${t}"` +
    `,"seq":"${e.seq}","schema_version":${int(e.schemaVersion)},"agent_name":${q(e.agentName)}` +
    `,"project":${q(e.project)},"container_id":${q(e.containerId)},"dst_name":${q(e.dstName)}` +
    `,"dst_addr":${q(e.dstAddr)},"port":${int(e.port)},"protocol":${q(e.protocol)}` +
    `,"verdict":"${VERDICTS[e.verdict] ?? "unspecified"}","layer":"${LAYERS[e.layer] ?? "unspecified"}"` +
    `,"reason":${q(e.reason)}`;
  // Absent means empty or zero (proto3's defaults): most decisions carry no HTTP detail.
  if (e.rule !== undefined) {
    line +=
      `,"rule":{"key":${q(e.rule.key)},"project":${q(e.rule.project)}` +
      `,"agent_name":${q(e.rule.agentName)},"action":${q(e.rule.action)}}`;
  }
  if (e.method !== "") line += `,"method":${q(e.method)}`;
  if (e.path !== "") line += `,"path":${q(e.path)}`;
  if (e.httpStatus !== 0) line += `,"http_status":${int(e.httpStatus)}`;
  if (e.bytesIn !== 0n) line += `,"bytes_in":"${e.bytesIn}"`;
  if (e.bytesOut !== 0n) line += `,"bytes_out":"${e.bytesOut}"`;
  if (e.durationMicros !== 0n) line += `,"duration_micros":"${e.durationMicros}"`;
  if (e.gapCount !== 0n) line += `,"gap_count":"${e.gapCount}"`;
  return `${line}}\n`;
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
