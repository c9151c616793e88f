// A bound on one step of a test that can hang (fsync behind a flood of dirty data, a threadpool
// whose threads are all blocked): the failure names the step and shows what the process was
// waiting on, instead of the runner's bare whole-test timeout.
import { readdirSync, readFileSync } from "node:fs";

/**
 * Runs `fn` and resolves with its value, or rejects once `ms` have passed with an error naming
 * `name`, the libuv resources still pending (process.getActiveResourcesInfo) and, on Linux,
 * each thread of this process with its state and kernel wait channel (a libuv worker in
 * `jbd2_log_wait_commit` is an fsync waiting for the journal). A hang detector, not a figure.
 */
export async function stepWithin<T>(name: string, ms: number, fn: () => Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      reject(new Error(`step "${name}" did not finish within ${ms} ms\n${processSnapshot()}`));
    }, ms);
  });
  try {
    return await Promise.race([fn(), expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** What this process waits on now: pending libuv resources and every thread's state and wchan. */
export function processSnapshot(): string {
  const lines = [`pending resources: ${process.getActiveResourcesInfo().join(", ") || "none"}`];
  let tids: string[];
  try {
    tids = readdirSync("/proc/self/task");
  } catch {
    return lines.join("\n");
  }
  for (const tid of tids) {
    // Synchronous reads on purpose: they need no threadpool thread, which may be the one stuck.
    const read = (file: string): string => {
      try {
        return readFileSync(`/proc/self/task/${tid}/${file}`, "utf8").trim();
      } catch {
        return "?";
      }
    };
    // stat's third field (after the parenthesised name, which may hold spaces) is the state.
    const state = /\)\s+(\S)/.exec(read("stat"))?.[1] ?? "?";
    lines.push(`thread ${tid} ${read("comm")}: state ${state}, wchan ${read("wchan") || "-"}`);
  }
  return lines.join("\n");
}
