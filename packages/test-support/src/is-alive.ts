// Process liveness for tests that check what a supervisor, a teardown or a signal left running.
import { readFileSync } from "node:fs";

/**
 * True while `pid` runs. A zombie (exited, waiting for its parent's wait()) and a dead task count
 * as gone; a process of another user (EPERM) counts as alive.
 */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
  // A zombie still answers signal 0. The state is the field after the command name, which may
  // itself hold spaces and parentheses, so look after the last ')' (proc(5)).
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    // /proc/<pid> went away between the signal and the read: the process is gone.
    return false;
  }
}
