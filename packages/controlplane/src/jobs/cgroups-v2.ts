// An agent container's usage and limits on a cgroup v2 host, read from the container's own group
// (found through its init process's /proc/<pid>/cgroup `0::` line under the cgroup2 mount). What
// `clawker controlplane agents --stats` prints there; on a v1 (hybrid) host JobPlacement reads them.
import { join } from "node:path";
import type { jobs } from "@clawker/proto";
import { findBpfMounts } from "../ebpf/mounts.js";
import type { Logger } from "../logging.js";
import { counter, keyed, readOr } from "./cgroup-files.js";
import type { ContainerUsage } from "./cgroups-v1.js";

/** What the reader uses. */
export interface ContainerUsageV2Deps {
  /** The container's init pid on this host (Docker's State.Pid; 0 when not running). */
  readonly initPid: (containerId: string, signal?: AbortSignal) => Promise<number>;
  readonly log: Logger;
  /** procfs; default /proc. */
  readonly proc?: string;
  /** The cgroup2 mount point; default the first in /proc/mounts. */
  readonly cgroup2?: string;
}

/** Reads agent containers' usage from their cgroup v2 groups. */
export class ContainerUsageV2 {
  readonly #d: ContainerUsageV2Deps;
  readonly #proc: string;
  readonly #mount: string | undefined;

  constructor(deps: ContainerUsageV2Deps) {
    this.#d = deps;
    this.#proc = deps.proc ?? "/proc";
    this.#mount = deps.cgroup2 ?? findBpfMounts().cgroup2;
  }

  /** True when cgroup2 is mounted with the cpu or memory controller (Docker limits through v2). */
  get available(): boolean {
    if (this.#mount === undefined) return false;
    const controllers = readOr(join(this.#mount, "cgroup.controllers")).split(/\s+/);
    return controllers.includes("cpu") || controllers.includes("memory");
  }

  /** The container's group, or undefined when it is not running or its group does not name it. */
  async groupOf(containerId: string): Promise<string | undefined> {
    if (this.#mount === undefined) return undefined;
    const pid = await this.#d.initPid(containerId).catch((err: unknown) => {
      this.#d.log.warn({ err, containerId, event: "agent_cgroup_unknown" }, "cannot find the agent's cgroup");
      return 0;
    });
    if (!Number.isInteger(pid) || pid <= 0) return undefined;
    const path = /^0::(\/.*)$/m.exec(readOr(join(this.#proc, String(pid), "cgroup")))?.[1];
    // Only the container's own group: both Docker drivers name it by the container id. A path
    // outside our cgroup namespace (`/..`, a private one) is not under our mount: not found.
    if (path === undefined || !path.includes(containerId) || path.split("/").includes("..")) return undefined;
    return join(this.#mount, path);
  }

  /** The container's usage and limits; undefined when its group is not found. */
  async usage(containerId: string): Promise<ContainerUsage | undefined> {
    const dir = await this.groupOf(containerId);
    return dir === undefined ? undefined : v2Usage(dir);
  }
}

/** The usage and limits in a v2 group's files (an absent file reads as zero: no controller). */
export function v2Usage(dir: string): ContainerUsage {
  const file = (name: string): string => readOr(join(dir, name));
  const cpu = keyed(file("cpu.stat"));
  const events = keyed(file("memory.events"));
  const io = { rbytes: 0n, wbytes: 0n, rios: 0n, wios: 0n };
  // `<maj:min> rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N` per device.
  for (const line of file("io.stat").split("\n")) {
    for (const field of line.split(" ").slice(1)) {
      const [k, v] = field.split("=");
      if (k !== undefined && k in io && v !== undefined && /^\d+$/.test(v))
        io[k as keyof typeof io] += BigInt(v);
    }
  }
  const stats: jobs.JobStats = {
    cpuUsageUsec: cpu["usage_usec"] ?? 0n,
    cpuUserUsec: cpu["user_usec"] ?? 0n,
    cpuSystemUsec: cpu["system_usec"] ?? 0n,
    cpuNrPeriods: cpu["nr_periods"] ?? 0n,
    cpuNrThrottled: cpu["nr_throttled"] ?? 0n,
    cpuThrottledUsec: cpu["throttled_usec"] ?? 0n,
    memoryCurrentBytes: counter(file("memory.current")),
    memoryPeakBytes: counter(file("memory.peak")),
    memoryEvents: { max: events["max"] ?? 0n, oom: events["oom"] ?? 0n, oom_kill: events["oom_kill"] ?? 0n },
    ioReadBytes: io.rbytes,
    ioWriteBytes: io.wbytes,
    ioReadOps: io.rios,
    ioWriteOps: io.wios,
    pidsCurrent: counter(file("pids.current")),
  };
  // cpu.max is `<quota|max> <period>`; memory.max and pids.max a number or `max`.
  const [quota, period] = file("cpu.max").trim().split(" ");
  const cpuLimitMillis =
    quota !== undefined &&
    /^\d+$/.test(quota) &&
    period !== undefined &&
    /^\d+$/.test(period) &&
    Number(period) > 0
      ? Math.round((Number(quota) * 1000) / Number(period))
      : 0;
  return {
    stats,
    cpuLimitMillis,
    memoryLimitBytes: Number(counter(file("memory.max"))),
    pidsLimit: Number(counter(file("pids.max"))),
  };
}
