// Who a pid is: the kernel's start time for it, the boot it belongs to and its command line. A pid
// alone is recycled; a recorded identity matches only the very process it was read from.
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";

/** A process as /proc described it when it was recorded. */
export interface ProcessIdentity {
  readonly pid: number;
  /** Field 22 of /proc/<pid>/stat, clock ticks after boot, kept as the kernel's decimal text. */
  readonly startTime: string;
  /** /proc/sys/kernel/random/boot_id: start times restart at zero with every boot. */
  readonly bootId: string;
  /** argv, as /proc/<pid>/cmdline holds it. */
  readonly cmdline: readonly string[];
}

/** The identity of a running process, or undefined when it is gone or a zombie (no cmdline). */
export function readProcessIdentity(pid: number): ProcessIdentity | undefined {
  try {
    const stat = readStat(pid);
    if (stat === undefined || !stat.live) return undefined;
    const startTime = stat.startTime;
    const raw = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    if (raw === "") return undefined;
    const cmdline = raw.endsWith("\0") ? raw.slice(0, -1).split("\0") : raw.split("\0");
    return { pid, startTime, bootId: bootId(), cmdline };
  } catch {
    return undefined;
  }
}

/** True when `recorded` still names the same live process: same pid, start time, boot and argv. */
export function isSameProcess(recorded: ProcessIdentity): boolean {
  const now = readProcessIdentity(recorded.pid);
  return (
    now !== undefined &&
    now.startTime === recorded.startTime &&
    now.bootId === recorded.bootId &&
    now.cmdline.length === recorded.cmdline.length &&
    now.cmdline.every((arg, i) => arg === recorded.cmdline[i])
  );
}

/**
 * readProcessIdentity of a process that was just spawned: while it execs (a wrapper script turning
 * into its program) the kernel shows an empty cmdline for a moment, the new address space in place
 * and its argv not yet, so a live process that reads that way is asked again, for up to `withinMs`;
 * so is one whose argv[0] is still `wrapper` (a launcher that execs the program, e.g. setpriv).
 */
export async function readSpawnedIdentity(
  pid: number,
  withinMs = 1_000,
  wrapper?: string,
): Promise<ProcessIdentity | undefined> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const identity = readProcessIdentity(pid);
    const settled = identity !== undefined && (wrapper === undefined || identity.cmdline[0] !== wrapper);
    if (settled || readStat(pid)?.live !== true || Date.now() >= deadline) return identity;
    await sleep(1);
  }
}

/**
 * What /proc/<pid>/stat says of a process: whether it still runs (not a zombie) and its start
 * time (field 22); undefined when the pid is gone or the line is not one.
 */
function readStat(pid: number): { live: boolean; startTime: string } | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces and parentheses: fields resume after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const state = fields[0];
  const startTime = fields[19];
  if (state === undefined || state === "" || startTime === undefined) return undefined;
  return { live: state !== "Z" && state !== "X", startTime };
}

/**
 * True once the process `recorded` names has exited: its pid is gone, a zombie, or names a newer
 * process. Not the negation of isSameProcess: a process that is still exiting has already lost its
 * cmdline (exit_mm) while it still holds its files and sockets until exit_notify makes it a zombie.
 */
export function hasExited(recorded: ProcessIdentity): boolean {
  const stat = readStat(recorded.pid);
  return stat === undefined || !stat.live || stat.startTime !== recorded.startTime;
}

/** Parses one recorded identity (from a state file); undefined when it is not one. */
export function parseProcessIdentity(value: unknown): ProcessIdentity | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const v = value as Record<string, unknown>;
  const { pid, startTime, bootId: boot, cmdline } = v;
  if (typeof pid !== "number" || !Number.isInteger(pid) || pid <= 1) return undefined;
  if (typeof startTime !== "string" || !/^\d+$/.test(startTime)) return undefined;
  if (typeof boot !== "string" || boot === "") return undefined;
  if (!Array.isArray(cmdline) || cmdline.length === 0 || !cmdline.every((a) => typeof a === "string")) {
    return undefined;
  }
  return { pid, startTime, bootId: boot, cmdline };
}

let cachedBootId: string | undefined;

function bootId(): string {
  cachedBootId ??= readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  return cachedBootId;
}
