// What /proc says of a process that tests and benchmarks read (Linux only).
import { readFileSync } from "node:fs";

/** Resident memory of a process (VmRSS), MiB. */
export function rssMiB(pid: number): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
  if (kb === undefined) throw new Error(`no VmRSS for ${pid}`);
  return Number(kb) / 1024;
}

/**
 * CPU time (user + system) a process has used, in ms (USER_HZ is 100 on Linux): every thread's,
 * or with `mainThread` its main thread's alone (the event loop; the rest is GC and the thread pool).
 */
export function cpuMs(pid: number, mainThread = false): number {
  const stat = readFileSync(mainThread ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`, "utf8");
  // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}
