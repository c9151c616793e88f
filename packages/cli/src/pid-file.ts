// The daemon's pid file: its pid on the first line (what `kill $(head -1 ...)` expects) and, on
// the second, the identity /proc gave that process when it was started (start time, boot id,
// argv), so that a stale file never gets an unrelated process signalled.
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { readFile, rename, unlink, writeFile } from "node:fs/promises";
import { isSameProcess, parseProcessIdentity, type ProcessIdentity } from "./process-identity.js";

/** What a pid file holds: the pid and, unless an older clawker wrote it, the process's identity. */
export interface PidFileContents {
  readonly pid: number;
  readonly identity: ProcessIdentity | undefined;
}

/**
 * What the pid names now: our daemon (`ours`), nothing (`gone`), another process that got the pid
 * (`not_ours`), or something we cannot tell because the file records no identity (`unverifiable`).
 */
export type PidState = "ours" | "gone" | "not_ours" | "unverifiable";

/** Reads a pid file; undefined when absent or when its first line is not a positive integer. */
export async function readPidFile(path: string): Promise<PidFileContents | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  const [first = "", second = ""] = text.split("\n");
  const pid = Number(first.trim());
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  let identity: ProcessIdentity | undefined;
  try {
    identity = parseProcessIdentity({ pid, ...(JSON.parse(second) as object) });
  } catch {
    identity = undefined;
  }
  return { pid, identity };
}

/** Writes a pid file atomically (temp file + rename), mode 0600, for the process `identity` names. */
export async function writePidFile(path: string, identity: ProcessIdentity): Promise<void> {
  const tmp = `${path}.${randomBytes(4).toString("hex")}.tmp`;
  const { startTime, bootId, cmdline } = identity;
  await writeFile(tmp, `${identity.pid}\n${JSON.stringify({ startTime, bootId, cmdline })}\n`, {
    mode: 0o600,
    flag: "wx",
  });
  await rename(tmp, path);
}

/** Removes a pid file; absent is fine. */
export async function removePidFile(path: string): Promise<void> {
  await unlink(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== "ENOENT") throw err;
  });
}

/** What the pid file's pid names now; see PidState. */
export function pidState(contents: PidFileContents): PidState {
  if (!isAlive(contents.pid)) return "gone";
  if (contents.identity === undefined) return "unverifiable";
  return isSameProcess(contents.identity) ? "ours" : "not_ours";
}

/** True when `pid` names a live (not zombie) process. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
  // A zombie still answers kill(0); /proc says whether it is one (field 3 of stat is the state).
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return true;
  }
}
