// Per-job cgroups on a cgroup v1 (or hybrid) host, made by the control plane (issue 13 §2). Docker
// limits containers through the v1 controllers there, and the container sees its cgroups
// read-only, so clawkerd cannot make a job's group itself. The control plane (root) creates
// `job-<uuid>` under the agent container's own directory in each v1 controller it needs (v1 allows
// a populated parent), writes the job's limits, and moves the job's held first process into it
// (found by its pid in the agent's pid namespace: the container's cgroup.procs and each process's
// NSpid). Only processes of that container can be moved, and only deeper into its own tree.
import { existsSync, mkdirSync, readdirSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { jobs } from "@clawker/proto";
import { counter, keyed, readOr } from "./cgroup-files.js";

/** The v1 controllers a job's group lives in. */
export const V1_CONTROLLERS = ["cpu", "cpuacct", "memory", "blkio", "pids"] as const;
/** One of V1_CONTROLLERS. */
export type V1Controller = (typeof V1_CONTROLLERS)[number];

/** An agent container's own v1 directories, and the depth of its pid namespace. */
export interface ContainerGroups {
  readonly dirs: Readonly<Partial<Record<V1Controller, string>>>;
  /** Index of the container's pid namespace in a process's NSpid list. */
  readonly nsLevel: number;
}

/** What placing a job achieved. */
export interface Placement {
  /** The job's first process is in its groups and every asked-for limit is written. */
  readonly isLimited: boolean;
  /** What is not limited, and why; empty when isLimited (or nothing was asked). */
  readonly note: string;
}

/** A job's groups made and limited, not yet entered by its process (prepare(), then enter()). */
export interface PreparedGroups {
  /** The job's directory per controller that could be made. */
  readonly made: Readonly<Partial<Record<V1Controller, string>>>;
  /** Controllers asked for that the container has no group in. */
  readonly missing: readonly string[];
  /** What could not be made or written, for the note. */
  readonly failed: readonly string[];
  /** True when the job asked for any limit. */
  readonly anyAsked: boolean;
  /** Non-empty: nothing was made, and this is the whole note. */
  readonly refusal: string;
}

/** A job's groups made without limits (make()), for limit() to write them. */
export interface MadeGroups {
  /** The job's directory per controller that could be made. */
  readonly made: Readonly<Partial<Record<V1Controller, string>>>;
  /** Controllers whose directory could not be made, with the error code. */
  readonly unmade: Readonly<Partial<Record<V1Controller, string>>>;
  /** Controllers the container has no group in. */
  readonly absent: readonly V1Controller[];
  /** Non-empty: nothing was made, and this is the whole note. */
  readonly refusal: string;
}

/** What placing into `prepared` achieved, with the move's own failures. */
export function placementOf(prepared: PreparedGroups, moveFailed: readonly string[]): Placement {
  if (prepared.refusal !== "") return { isLimited: false, note: prepared.refusal };
  const failed = [...prepared.failed, ...moveFailed];
  const notes = [
    ...(prepared.missing.length > 0 ? [`no v1 ${prepared.missing.join(", ")} controller for the agent`] : []),
    ...(failed.length > 0 ? [`cannot set ${failed.join(", ")}`] : []),
  ];
  if (notes.length === 0) return { isLimited: prepared.anyAsked, note: "" };
  return { isLimited: false, note: `${notes.join("; ")}: the job runs under the agent's limits for those` };
}

/** An agent container's usage and limits, read from its own groups. */
export interface ContainerUsage {
  readonly stats: jobs.JobStats;
  readonly cpuLimitMillis: number;
  readonly memoryLimitBytes: number;
  readonly pidsLimit: number;
}

/** Where the host's filesystems are; tests point them elsewhere. */
export interface V1Paths {
  /** procfs; default /proc. */
  readonly proc?: string;
  /** The text of the control plane's mount table; default /proc/self/mounts. */
  readonly mounts?: string;
}

/** cfs period, µs. */
const CPU_PERIOD_US = 100_000;
/** cpuacct.stat counts USER_HZ ticks (100 per second on Linux). */
const USEC_PER_TICK = 10_000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The v1 mount point of each controller we use, from a mount table. */
export function v1Mounts(mountsText: string): Partial<Record<V1Controller, string>> {
  const out: Partial<Record<V1Controller, string>> = {};
  for (const line of mountsText.split("\n")) {
    const [, where, type, options] = line.split(" ");
    if (type !== "cgroup" || where === undefined || options === undefined) continue;
    for (const opt of options.split(","))
      if ((V1_CONTROLLERS as readonly string[]).includes(opt)) out[opt as V1Controller] ??= unescape(where);
  }
  return out;
}

/** Reads and changes job groups under agent containers' v1 directories. */
export class JobCgroupsV1 {
  readonly #proc: string;
  readonly #mounts: Partial<Record<V1Controller, string>>;

  constructor(paths: V1Paths = {}) {
    this.#proc = paths.proc ?? "/proc";
    this.#mounts = v1Mounts(paths.mounts ?? readOr("/proc/self/mounts"));
  }

  /** True when the host mounts the v1 cpu or memory controller (Docker limits through v1 here). */
  get available(): boolean {
    return this.#mounts.cpu !== undefined || this.#mounts.memory !== undefined;
  }

  /** The container's v1 directories, from its init process (`initPid` on this host). */
  containerGroups(initPid: number): ContainerGroups | undefined {
    if (!Number.isInteger(initPid) || initPid <= 0) return undefined;
    const cgroupText = readOr(join(this.#proc, String(initPid), "cgroup"));
    const nsPid = nsPids(readOr(join(this.#proc, String(initPid), "status")));
    if (cgroupText === "" || nsPid.length === 0) return undefined;
    const dirs: Partial<Record<V1Controller, string>> = {};
    for (const line of cgroupText.split("\n")) {
      const m = /^\d+:([^:]*):(\/.*)$/.exec(line);
      if (m === null) continue;
      for (const c of m[1]!.split(",")) {
        const mount = this.#mounts[c as V1Controller];
        if (mount !== undefined) dirs[c as V1Controller] = join(mount, m[2]!);
      }
    }
    if (Object.keys(dirs).length === 0) return undefined;
    return { dirs, nsLevel: nsPid.length - 1 };
  }

  /**
   * The host pid of the process that is `nsPid` in the container's pid namespace, looked for only
   * among the processes directly in the container's own group; undefined when there is none.
   */
  hostPid(groups: ContainerGroups, nsPid: number): number | undefined {
    const dir = groups.dirs.pids ?? groups.dirs.memory ?? groups.dirs.cpu;
    if (dir === undefined || !Number.isInteger(nsPid) || nsPid <= 0) return undefined;
    for (const p of readOr(join(dir, "cgroup.procs")).split("\n")) {
      if (p === "") continue;
      const ids = nsPids(readOr(join(this.#proc, p, "status")));
      if (ids.length === groups.nsLevel + 1 && ids[groups.nsLevel] === nsPid) return Number(p);
    }
    return undefined;
  }

  /**
   * Creates job `uuid`'s groups under the container's, writes `limits`, then moves `hostPid` into
   * them. Never throws: whatever could not be done is in the note, and the job then runs under
   * the agent's limits (or some of its own).
   */
  place(
    groups: ContainerGroups,
    uuid: string,
    hostPid: number,
    limits: jobs.JobLimits | undefined,
  ): Placement {
    return this.enter(this.prepare(groups, uuid, limits), hostPid);
  }

  /**
   * Creates job `uuid`'s groups under the container's and writes `limits`, before its process
   * exists (the control plane does this while clawkerd starts the job). Never throws: what could
   * not be done is carried to enter()'s note.
   */
  prepare(groups: ContainerGroups, uuid: string, limits: jobs.JobLimits | undefined): PreparedGroups {
    return this.limit(this.make(groups, uuid), limits);
  }

  /**
   * Creates job `uuid`'s groups under the container's without limits (limit() writes them later:
   * a reserved spare gate waits in them before its job is asked for).
   */
  make(groups: ContainerGroups, uuid: string): MadeGroups {
    if (!UUID.test(uuid)) return { made: {}, unmade: {}, absent: [], refusal: "malformed job id" };
    const made: Partial<Record<V1Controller, string>> = {};
    const unmade: Partial<Record<V1Controller, string>> = {};
    const absent: V1Controller[] = [];
    for (const c of V1_CONTROLLERS) {
      const parent = groups.dirs[c];
      if (parent === undefined) {
        absent.push(c);
        continue;
      }
      const dir = join(parent, `job-${uuid}`);
      try {
        mkdirSync(dir);
        made[c] = dir;
      } catch (err) {
        unmade[c] = code(err);
      }
    }
    return { made, unmade, absent, refusal: "" };
  }

  /** Writes `limits` into groups make() made (empty or not). Never throws, as prepare(). */
  limit(groups: MadeGroups, limits: jobs.JobLimits | undefined): PreparedGroups {
    const { made, refusal } = groups;
    if (refusal !== "") return { made, missing: [], failed: [], anyAsked: false, refusal };
    const asked = {
      cpu: (limits?.cpuMillis ?? 0) > 0,
      memory: (limits?.memoryMaxBytes ?? 0n) > 0n,
      blkio:
        (limits?.ioReadBps ?? 0n) > 0n ||
        (limits?.ioWriteBps ?? 0n) > 0n ||
        (limits?.ioReadIops ?? 0) > 0 ||
        (limits?.ioWriteIops ?? 0) > 0,
      pids: (limits?.pidsMax ?? 0) > 0,
    };
    const isAsked = (c: V1Controller): boolean => c !== "cpuacct" && asked[c];
    const missing: string[] = groups.absent.filter(isAsked);
    const failed: string[] = (Object.entries(groups.unmade) as Array<[V1Controller, string]>)
      .filter(([c]) => isAsked(c))
      .map(([c, why]) => `${c} (${why})`);
    const write = (c: V1Controller, file: string, value: string): void => {
      const dir = made[c];
      if (dir === undefined) return;
      try {
        writeFileSync(join(dir, file), value);
      } catch (err) {
        failed.push(`${c} ${file} (${code(err)})`);
      }
    };
    if (limits !== undefined) {
      if (asked.cpu) {
        write("cpu", "cpu.cfs_period_us", String(CPU_PERIOD_US));
        write("cpu", "cpu.cfs_quota_us", String(Math.max(1000, Math.round(limits.cpuMillis * 100))));
      }
      if (asked.memory) {
        const max = limits.memoryMaxBytes;
        write("memory", "memory.limit_in_bytes", String(max));
        // No swap: memsw (memory + swap) equal to the memory max, when swap accounting exists.
        if (made.memory !== undefined && existsSync(join(made.memory, "memory.memsw.limit_in_bytes")))
          write("memory", "memory.memsw.limit_in_bytes", String(max));
        // The seed's high mark: a soft limit at 75% of the max.
        write("memory", "memory.soft_limit_in_bytes", String((max * 75n) / 100n));
      }
      if (asked.blkio) {
        const devices = blockDevices(this.#proc);
        if (devices.length === 0) failed.push("blkio (no block device found)");
        const rules: Array<[string, bigint | number]> = [
          ["blkio.throttle.read_bps_device", limits.ioReadBps],
          ["blkio.throttle.write_bps_device", limits.ioWriteBps],
          ["blkio.throttle.read_iops_device", limits.ioReadIops],
          ["blkio.throttle.write_iops_device", limits.ioWriteIops],
        ];
        for (const [file, value] of rules) {
          if (BigInt(value) === 0n || made.blkio === undefined) continue;
          // A device without a request queue refuses a rule; enough that one disk takes it.
          const took = devices.filter((dev) => {
            try {
              writeFileSync(join(made.blkio!, file), `${dev} ${value}`);
              return true;
            } catch {
              return false;
            }
          });
          if (took.length === 0 && devices.length > 0) failed.push(`blkio ${file} (no device took it)`);
        }
      }
      if (asked.pids) write("pids", "pids.max", String(limits.pidsMax));
    }
    return { made, missing, failed, anyAsked: Object.values(asked).some(Boolean), refusal: "" };
  }

  /** Moves `hostPid` into prepared groups: last, once every limit is in place. */
  enter(prepared: PreparedGroups, hostPid: number): Placement {
    if (prepared.refusal !== "") return { isLimited: false, note: prepared.refusal };
    return placementOf(prepared, this.move(prepared.made, hostPid));
  }

  /** Moves `hostPid` into each of `made`; what failed, for the note. */
  move(made: Readonly<Partial<Record<V1Controller, string>>>, hostPid: number): string[] {
    const failed: string[] = [];
    for (const c of V1_CONTROLLERS) {
      const dir = made[c];
      if (dir === undefined) continue;
      try {
        writeFileSync(join(dir, "cgroup.procs"), String(hostPid));
      } catch (err) {
        failed.push(`${c} placement (${code(err)})`);
      }
    }
    return failed;
  }

  /** The uuids of the job groups under the container's directories. */
  jobIds(groups: ContainerGroups): string[] {
    const out = new Set<string>();
    for (const dir of Object.values(groups.dirs)) {
      let names: string[] = [];
      try {
        names = readdirSync(dir);
      } catch {
        // the container is gone
      }
      for (const n of names) if (n.startsWith("job-") && UUID.test(n.slice(4))) out.add(n.slice(4));
    }
    return [...out];
  }

  /** True when no process is left in any of the job's groups. */
  isEmpty(groups: ContainerGroups, uuid: string): boolean {
    return Object.values(groups.dirs).every(
      (d) => readOr(join(d, `job-${uuid}`, "cgroup.procs")).trim() === "",
    );
  }

  /** Removes the job's (empty) groups; true when none is left. */
  remove(groups: ContainerGroups, uuid: string): boolean {
    let gone = true;
    for (const d of Object.values(groups.dirs)) {
      const dir = join(d, `job-${uuid}`);
      try {
        rmdirSync(dir);
      } catch (err) {
        if (code(err) !== "ENOENT") gone = false;
      }
    }
    return gone;
  }

  /** The job's usage; undefined when it has no groups. */
  jobStats(groups: ContainerGroups, uuid: string): jobs.JobStats | undefined {
    const sub = (c: V1Controller): string | undefined => {
      const d = groups.dirs[c];
      return d === undefined ? undefined : join(d, `job-${uuid}`);
    };
    const probe = sub("memory") ?? sub("cpu");
    if (probe === undefined || !existsSync(probe)) return undefined;
    return statsOf({
      cpu: sub("cpu"),
      cpuacct: sub("cpuacct"),
      memory: sub("memory"),
      blkio: sub("blkio"),
      pids: sub("pids"),
    });
  }

  /** The container's own usage and limits. */
  containerUsage(groups: ContainerGroups): ContainerUsage {
    const d = groups.dirs;
    const quota = Number(readOr(join(d.cpu ?? "/nonexistent", "cpu.cfs_quota_us")).trim() || -1);
    const period = Number(readOr(join(d.cpu ?? "/nonexistent", "cpu.cfs_period_us")).trim() || CPU_PERIOD_US);
    const mem = Number(readOr(join(d.memory ?? "/nonexistent", "memory.limit_in_bytes")).trim() || 0);
    const pids = readOr(join(d.pids ?? "/nonexistent", "pids.max")).trim();
    return {
      stats: statsOf(d),
      cpuLimitMillis: quota > 0 ? Math.round((quota * 1000) / period) : 0,
      // v1 writes "no limit" as a page-rounded 2^63-1.
      memoryLimitBytes: mem > 0 && mem < 2 ** 62 ? mem : 0,
      pidsLimit: /^\d+$/.test(pids) ? Number(pids) : 0,
    };
  }
}

/** A v1 group set's usage (missing files read as zero). */
function statsOf(d: Readonly<Partial<Record<V1Controller, string | undefined>>>): jobs.JobStats {
  const file = (c: V1Controller, name: string): string => {
    const dir = d[c];
    return dir === undefined ? "" : readOr(join(dir, name));
  };
  const cpuStat = keyed(file("cpu", "cpu.stat"));
  const acct = keyed(file("cpuacct", "cpuacct.stat"));
  const oom = keyed(file("memory", "memory.oom_control"));
  const bytes = blkioSums(file("blkio", "blkio.throttle.io_service_bytes"));
  const ops = blkioSums(file("blkio", "blkio.throttle.io_serviced"));
  return {
    cpuUsageUsec: counter(file("cpuacct", "cpuacct.usage")) / 1000n,
    cpuUserUsec: (acct["user"] ?? 0n) * BigInt(USEC_PER_TICK),
    cpuSystemUsec: (acct["system"] ?? 0n) * BigInt(USEC_PER_TICK),
    cpuNrPeriods: cpuStat["nr_periods"] ?? 0n,
    cpuNrThrottled: cpuStat["nr_throttled"] ?? 0n,
    cpuThrottledUsec: (cpuStat["throttled_time"] ?? 0n) / 1000n,
    memoryCurrentBytes: counter(file("memory", "memory.usage_in_bytes")),
    memoryPeakBytes: counter(file("memory", "memory.max_usage_in_bytes")),
    memoryEvents: {
      max: counter(file("memory", "memory.failcnt")),
      oom: oom["under_oom"] ?? 0n,
      oom_kill: oom["oom_kill"] ?? 0n,
    },
    ioReadBytes: bytes.read,
    ioWriteBytes: bytes.write,
    ioReadOps: ops.read,
    ioWriteOps: ops.write,
    pidsCurrent: counter(file("pids", "pids.current")),
  };
}

// `<maj:min> Read N` / `Write N` lines per device (the `Total` lines have no device).
function blkioSums(text: string): { read: bigint; write: bigint } {
  let read = 0n;
  let write = 0n;
  for (const line of text.split("\n")) {
    const [dev, op, n] = line.split(" ");
    if (dev === undefined || !dev.includes(":") || n === undefined || !/^\d+$/.test(n)) continue;
    if (op === "Read") read += BigInt(n);
    else if (op === "Write") write += BigInt(n);
  }
  return { read, write };
}

function nsPids(status: string): number[] {
  const line = /^NSpid:\s*(.*)$/m.exec(status)?.[1];
  return line === undefined ? [] : line.trim().split(/\s+/).map(Number);
}

// Whole disks (blk-throttle takes a disk, not a partition), from the host's /proc/partitions.
function blockDevices(proc: string): string[] {
  const out: string[] = [];
  for (const line of readOr(join(proc, "partitions")).split("\n").slice(2)) {
    const [major, minor, , name] = line.trim().split(/\s+/);
    if (major === undefined || minor === undefined || name === undefined) continue;
    if (/^(nvme\d+n\d+|mmcblk\d+|loop\d+)$/.test(name) || !/\d$/.test(name)) out.push(`${major}:${minor}`);
  }
  return out;
}

// /proc/self/mounts escapes space, tab, newline and backslash as octal.
function unescape(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

function code(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? "error";
}
