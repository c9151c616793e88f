// What /proc says of a process that tests and benchmarks read (Linux only).
import { readFileSync } from "node:fs";

/** Resident memory of a process (VmRSS), MiB. */
export function rssMiB(pid: number): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
  if (kb === undefined) throw new Error(`no VmRSS for ${pid}`);
  return Number(kb) / 1024;
}
