// What a benchmark reads about a process from /proc (CPU time, resident memory) and how it pins
// one to cores, so server-side figures are about the server and not the load generator.
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { availableParallelism } from "node:os";

export { cpuMs } from "../test/harness/proc-status.js";

/**
 * CPU time a process's threads have run, in ns, from the scheduler's own accounting
 * (`/proc/<pid>/task/<tid>/schedstat`): every thread alive now, or with `mainThread` the main
 * thread alone. Unlike cpuMs it has no 10 ms tick, so a short stretch of load reads true; a
 * thread that exited meanwhile drops out, so the servers read this way keep theirs (V8's and
 * libuv's pools).
 */
export function cpuNs(pid: number, mainThread = false): number {
  let ns = 0;
  for (const tid of mainThread ? [String(pid)] : readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // The thread exited between the listing and the read.
    }
  }
  return ns;
}

/** CPU time (user + system) of the children a process has reaped (waited for), in ms. */
export function reapedChildrenCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // cutime is field 16, cstime 17.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[13]) + Number(fields[14])) * 10;
}

/**
 * Pins every thread of `pid` to `cpus` (a taskset list) and returns what undoes it. On a
 * one-core machine, or without taskset, nothing is pinned and that is logged.
 */
export function pinToCpus(pid: number, cpus: string, log: (message: string) => void): () => void {
  if (availableParallelism() < 2) {
    log(`not pinning ${pid}: one core`);
    return () => {};
  }
  let before: string;
  try {
    // `pid 123's current affinity list: 0,1`
    before = execFileSync("taskset", ["-p", "-c", String(pid)], { encoding: "utf8" })
      .trim()
      .split(": ")[1]!;
    execFileSync("taskset", ["-a", "-p", "-c", cpus, String(pid)], { stdio: "ignore" });
  } catch (err) {
    log(`not pinning ${pid}: ${String(err)}`);
    return () => {};
  }
  log(`pinned ${pid} to cpu ${cpus} (was ${before})`);
  return () => {
    try {
      execFileSync("taskset", ["-a", "-p", "-c", before, String(pid)], { stdio: "ignore" });
    } catch {
      // The process may have exited already; nothing left to undo.
    }
  };
}
