// How many connections each listener may hold, sized from the process's open-file limit so that
// strangers can never take the descriptors the CLI, the agents and the daemon itself need (issue
// 10 §2: 1,100 idle sockets under `ulimit -n 1024` made every new admin and health connection
// fail). Node raises the soft RLIMIT_NOFILE to the hard limit when it starts; /proc says what we got.
import { readFileSync } from "node:fs";

/** RLIMIT_NOFILE as /proc/self/limits reports it; `Infinity` for "unlimited". */
export interface OpenFileLimit {
  readonly soft: number;
  readonly hard: number;
}

/** Connection caps per listener, all derived from one open-file limit. */
export interface ListenerCaps {
  /** The soft limit the caps were sized from. */
  readonly openFiles: number;
  /** Descriptors left for the daemon's own use (helpers, sqlite, Docker, introspection, dialer). */
  readonly reserved: number;
  /** Unauthenticated connections still in their TLS handshake, per gRPC listener. */
  readonly handshakes: number;
  /** /healthz connections (plain HTTP: nobody is authenticated there). */
  readonly healthz: number;
  /** Admin connections that presented the CLI's certificate. */
  readonly admin: number;
  /** Admin connections that presented the control plane's own leaf (its /healthz probe). */
  readonly probe: number;
  /** Agent connections that presented an agent leaf (all agents together). */
  readonly agent: number;
}

/** Below this soft limit the daemon warns at start: the caps get small. */
export const RECOMMENDED_OPEN_FILES = 4096;
/** Assumed when /proc/self/limits cannot be read: the most common default soft limit. */
const FALLBACK_OPEN_FILES = 1024;

/** Parses the "Max open files" row of /proc/<pid>/limits; undefined when it is absent or garbled. */
export function parseOpenFileLimit(text: string): OpenFileLimit | undefined {
  const row = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)\s+files\s*$/m.exec(text);
  if (row === null) return undefined;
  const value = (s: string): number => (s === "unlimited" ? Infinity : Number(s));
  return { soft: value(row[1]!), hard: value(row[2]!) };
}

/** This process's RLIMIT_NOFILE, or undefined where /proc is not readable. */
export function readOpenFileLimit(path = "/proc/self/limits"): OpenFileLimit | undefined {
  try {
    return parseOpenFileLimit(readFileSync(path, "utf8"));
  } catch {
    return undefined;
  }
}

const clamp = (n: number, lo: number, hi: number): number => Math.max(lo, Math.min(hi, Math.floor(n)));

/**
 * The caps for a soft limit. A quarter (128 to 1024) is reserved for the daemon itself; of the
 * rest, each gRPC listener's handshakes and the CLI get an eighth, /healthz a sixteenth and the
 * agents a quarter, so the caps together stay under ~70% of what is left whatever the limit.
 * Authenticated connections have their own caps, apart from the handshakes strangers can fill.
 */
export function listenerCaps(softLimit: number): ListenerCaps {
  const openFiles = Number.isFinite(softLimit) && softLimit > 0 ? Math.floor(softLimit) : 1 << 20;
  const reserved = clamp(openFiles / 4, 128, 1024);
  const rest = Math.max(0, openFiles - reserved);
  return {
    openFiles,
    reserved,
    handshakes: clamp(rest / 8, 8, 1024),
    healthz: clamp(rest / 16, 4, 256),
    admin: clamp(rest / 8, 8, 1024),
    probe: 4,
    agent: clamp(rest / 4, 8, 4096),
  };
}

/** The caps for this process, with the limit they came from (fallback 1024 when unreadable). */
export function processListenerCaps(): {
  readonly limit: OpenFileLimit | undefined;
  readonly caps: ListenerCaps;
} {
  const limit = readOpenFileLimit();
  return { limit, caps: listenerCaps(limit?.soft ?? FALLBACK_OPEN_FILES) };
}

/** The sum of every connection cap (two gRPC listeners' handshakes): what strangers and peers can hold. */
export function totalConnections(caps: ListenerCaps): number {
  return 2 * caps.handshakes + caps.healthz + caps.admin + caps.probe + caps.agent;
}
