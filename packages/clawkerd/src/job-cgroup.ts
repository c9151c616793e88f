// Per-job cgroup v2 groups (issue 13 §2): under a cgroup directory delegated to clawkerd (the
// agent's own, or CLAWKERD_JOB_CGROUP), one child per job with its cpu.max, memory.max/high,
// memory.swap.max and io.max, entered by the job's first process before it executes the target
// (agent-jobs.ts holds the process at a gate until it is placed). Without cgroup v2, or without
// the controllers, jobs still run, under the agent's limits only, and say why (`note`).
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** Limits of one job; 0 = none of its own. */
export interface Limits {
  readonly cpuMillis: number;
  readonly memoryMaxBytes: number;
  readonly ioReadBps: number;
  readonly ioWriteBps: number;
  readonly ioReadIops: number;
  readonly ioWriteIops: number;
  readonly pidsMax: number;
}

/** A job's cgroup, or why it has none. */
export interface JobGroup {
  /** The job's cgroup directory; undefined when the job runs in clawkerd's cgroup. */
  readonly dir: string | undefined;
  /** True when the asked-for limits are enforced by `dir`. */
  readonly isLimited: boolean;
  /** Why not limited (empty when limited, or when no limits were asked for and a group exists). */
  readonly note: string;
}

/** cgroup v2 usage of a job's group. */
export interface GroupStats {
  readonly cpu: Readonly<Record<string, number>>;
  readonly memoryCurrent: number;
  readonly memoryPeak: number;
  readonly memoryEvents: Readonly<Record<string, number>>;
  readonly io: { readBytes: number; writeBytes: number; readOps: number; writeOps: number };
  readonly pidsCurrent?: number;
}

/** The seed's memory.high: 75% of memory.max. */
const HIGH_FRACTION = 0.75;
/** cpu.max period. */
const CPU_PERIOD_US = 100_000;

/** Creates, fills, reads and removes per-job cgroups under one delegated root. */
export class JobCgroups {
  readonly #root: string | undefined;
  readonly #why: string;
  readonly #controllers: ReadonlySet<string>;
  readonly #v1View: string;

  /**
   * `root`: a cgroup v2 directory clawkerd may write, or undefined when there is none (`why`).
   * `v1View`: where the container sees its own v1 cgroups (Docker mounts each controller's
   * container directory read-only there), for the groups the control plane places jobs in.
   */
  constructor(root: string | undefined, why = "", v1View = "/sys/fs/cgroup") {
    this.#root = root;
    this.#v1View = v1View;
    this.#why = why;
    let controllers = new Set<string>();
    if (root !== undefined) {
      try {
        controllers = new Set(readFileSync(join(root, "cgroup.controllers"), "utf8").trim().split(/\s+/));
        // Children get the controllers this root enables; a failure leaves them without (noted).
        const want = ["cpu", "memory", "io", "pids"].filter((c) => controllers.has(c));
        if (want.length > 0)
          writeFileSync(join(root, "cgroup.subtree_control"), want.map((c) => `+${c}`).join(" "));
      } catch {
        // a root without controllers still gives placement, cgroup.kill and grouping
      }
      controllers.delete("");
    }
    this.#controllers = controllers;
  }

  /** Where the per-job groups live, if anywhere. */
  get root(): string | undefined {
    return this.#root;
  }

  /** Creates the job's group with its limits. Never throws: a failure is a note. */
  create(id: string, limits: Limits): JobGroup {
    const asked = Object.values(limits).some((v) => v > 0);
    if (this.#root === undefined) return { dir: undefined, isLimited: false, note: asked ? this.#why : "" };
    const dir = join(this.#root, `job-${id}`);
    try {
      mkdirSync(dir, { mode: 0o755 });
    } catch (err) {
      return { dir: undefined, isLimited: false, note: `cannot create the job's cgroup: ${code(err)}` };
    }
    if (!asked) return { dir, isLimited: false, note: "" };
    const missing: string[] = [];
    const need = (c: string): boolean => {
      if (this.#controllers.has(c)) return true;
      missing.push(c);
      return false;
    };
    try {
      if (limits.cpuMillis > 0 && need("cpu")) {
        writeFileSync(
          join(dir, "cpu.max"),
          `${Math.max(1000, Math.round((limits.cpuMillis * CPU_PERIOD_US) / 1000))} ${CPU_PERIOD_US}`,
        );
      }
      if (limits.memoryMaxBytes > 0 && need("memory")) {
        writeFileSync(join(dir, "memory.max"), String(limits.memoryMaxBytes));
        writeFileSync(join(dir, "memory.high"), String(Math.floor(limits.memoryMaxBytes * HIGH_FRACTION)));
        if (existsSync(join(dir, "memory.swap.max"))) writeFileSync(join(dir, "memory.swap.max"), "0");
      }
      const io = [
        ["rbps", limits.ioReadBps],
        ["wbps", limits.ioWriteBps],
        ["riops", limits.ioReadIops],
        ["wiops", limits.ioWriteIops],
      ].filter(([, v]) => (v as number) > 0);
      if (io.length > 0 && need("io")) {
        const spec = io.map(([k, v]) => `${k}=${v}`).join(" ");
        for (const dev of blockDevices()) writeFileSync(join(dir, "io.max"), `${dev} ${spec}`);
      }
      if (limits.pidsMax > 0 && need("pids")) writeFileSync(join(dir, "pids.max"), String(limits.pidsMax));
    } catch (err) {
      return { dir, isLimited: false, note: `cannot write the job's limits: ${code(err)}` };
    }
    if (missing.length > 0) {
      return {
        dir,
        isLimited: false,
        note: `cgroup v2 controllers not delegated to the agent: ${missing.join(", ")}; the job runs under the agent's limits only`,
      };
    }
    return { dir, isLimited: true, note: "" };
  }

  /** Moves process `pid` into the job's group (before it executes the target). */
  place(dir: string, pid: number): void {
    writeFileSync(join(dir, "cgroup.procs"), String(pid));
  }

  /** Kills every process in the group (cgroup.kill, kernel 5.14+); false when unavailable. */
  kill(dir: string): boolean {
    try {
      writeFileSync(join(dir, "cgroup.kill"), "1");
      return true;
    } catch {
      return false;
    }
  }

  /** True when no process is left in the group. */
  isEmpty(dir: string): boolean {
    try {
      return readFileSync(join(dir, "cgroup.procs"), "utf8").trim() === "";
    } catch {
      return true;
    }
  }

  /** The group's usage; undefined when it is gone. */
  stats(dir: string): GroupStats | undefined {
    if (!existsSync(dir)) return undefined;
    const io = { readBytes: 0, writeBytes: 0, readOps: 0, writeOps: 0 };
    for (const line of readOr(join(dir, "io.stat")).split("\n")) {
      const kv = keyValues(line.split(" ").slice(1));
      io.readBytes += kv["rbytes"] ?? 0;
      io.writeBytes += kv["wbytes"] ?? 0;
      io.readOps += kv["rios"] ?? 0;
      io.writeOps += kv["wios"] ?? 0;
    }
    return {
      cpu: flatKeyed(readOr(join(dir, "cpu.stat"))),
      memoryCurrent: Number(readOr(join(dir, "memory.current")).trim() || 0),
      memoryPeak: Number(readOr(join(dir, "memory.peak")).trim() || 0),
      memoryEvents: flatKeyed(readOr(join(dir, "memory.events"))),
      io,
      pidsCurrent: Number(readOr(join(dir, "pids.current")).trim() || 0),
    };
  }

  /** OOM kills counted in the v1 memory group the control plane placed job `id` in; 0 if none. */
  placedOomKills(id: string): number {
    const text = readOr(join(this.#v1View, "memory", `job-${id}`, "memory.oom_control"));
    return flatKeyed(text)["oom_kill"] ?? 0;
  }

  /** The cgroup.procs of the v1 group the control plane placed job `id` in, when visible. */
  placedProcsFile(id: string): string | undefined {
    for (const c of ["pids", "memory", "cpu"]) {
      const f = join(this.#v1View, c, `job-${id}`, "cgroup.procs");
      if (existsSync(f)) return f;
    }
    return undefined;
  }

  /** Removes the (empty) group. */
  remove(dir: string): void {
    try {
      rmdirSync(dir);
    } catch {
      // busy or gone: a later start-up sweep retries
    }
  }

  /** Removes groups of jobs a previous clawkerd left behind (after killing what is in them). */
  sweep(): void {
    if (this.#root === undefined) return;
    let names: string[];
    try {
      names = readdirSync(this.#root).filter((n) => n.startsWith("job-"));
    } catch {
      return;
    }
    for (const n of names) {
      const dir = join(this.#root, n);
      this.kill(dir);
      this.remove(dir);
    }
  }
}

/**
 * The delegated root for job groups: CLAWKERD_JOB_CGROUP when set, else clawkerd's own cgroup v2
 * directory when it is writable and clawkerd is not alone in its root (a leaf the control plane
 * made). Returns the root or the reason there is none.
 */
export function findJobCgroupRoot(env: NodeJS.ProcessEnv): { root?: string; why: string } {
  const explicit = env["CLAWKERD_JOB_CGROUP"];
  if (explicit !== undefined && explicit !== "") {
    if (!existsSync(join(explicit, "cgroup.procs")))
      return { why: `CLAWKERD_JOB_CGROUP ${explicit} is not a cgroup v2 directory` };
    return { root: explicit, why: "" };
  }
  const mount = cgroup2Mount();
  if (mount === undefined) {
    return {
      why: "no cgroup v2 in the agent (the host uses cgroup v1 or hybrid): jobs run under the agent's limits only",
    };
  }
  let own = "";
  try {
    own = /^0::(.*)$/m.exec(readFileSync("/proc/self/cgroup", "utf8"))?.[1] ?? "";
  } catch {
    // no procfs entry
  }
  const parent = join(mount, own, "..", "jobs");
  if (existsSync(join(parent, "cgroup.procs"))) return { root: parent, why: "" };
  return {
    why: "no cgroup v2 delegation for jobs in this agent (no writable jobs cgroup beside clawkerd's): jobs run under the agent's limits only",
  };
}

function cgroup2Mount(): string | undefined {
  try {
    for (const line of readFileSync("/proc/self/mounts", "utf8").split("\n")) {
      const [, where, type] = line.split(" ");
      if (type === "cgroup2" && where !== undefined) return where;
    }
  } catch {
    // no procfs
  }
  return undefined;
}

function blockDevices(): string[] {
  const out: string[] = [];
  try {
    for (const line of readFileSync("/proc/partitions", "utf8").split("\n").slice(2)) {
      const [major, minor, , name] = line.trim().split(/\s+/);
      // Whole disks only: io.max takes devices, not partitions (a partition's write fails).
      if (major !== undefined && minor !== undefined && name !== undefined && !/\d$/.test(name))
        out.push(`${major}:${minor}`);
      else if (name !== undefined && /^(nvme\d+n\d+|loop\d+)$/.test(name)) out.push(`${major}:${minor}`);
    }
  } catch {
    // no procfs
  }
  return out;
}

function readOr(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

function flatKeyed(text: string): Record<string, number> {
  return keyValues(text.split("\n").map((l) => l.replace(" ", "=")));
}

function keyValues(parts: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const p of parts) {
    const at = p.indexOf("=");
    if (at <= 0) continue;
    const v = Number(p.slice(at + 1));
    if (Number.isFinite(v)) out[p.slice(0, at)] = v;
  }
  return out;
}

function code(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? "error";
}

/**
 * The agent's own CPU and memory limits, read from the cgroup clawkerd runs in (cgroup v2
 * `cpu.max`/`memory.max`, or the v1 mounts Docker gives a container: `cpu.cfs_quota_us` and
 * `memory.limit_in_bytes`); 0 where there is none. A job may not ask for more than these.
 */
export function agentLimitsOf(): Pick<Limits, "cpuMillis" | "memoryMaxBytes"> {
  const v2 = cgroup2Mount();
  let own = "";
  try {
    own = /^0::(.*)$/m.exec(readFileSync("/proc/self/cgroup", "utf8"))?.[1] ?? "";
  } catch {
    // no procfs entry
  }
  if (v2 !== undefined && own !== "") {
    const dir = join(v2, own);
    const [quota, period] = readOr(join(dir, "cpu.max")).trim().split(" ");
    const mem = readOr(join(dir, "memory.max")).trim();
    return {
      cpuMillis:
        quota === undefined || quota === "max" || quota === ""
          ? 0
          : Math.round((Number(quota) * 1000) / Number(period)),
      memoryMaxBytes: mem === "" || mem === "max" ? 0 : Number(mem),
    };
  }
  const quota = Number(readOr("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").trim() || -1);
  const period = Number(readOr("/sys/fs/cgroup/cpu/cpu.cfs_period_us").trim() || 100_000);
  const mem = Number(readOr("/sys/fs/cgroup/memory/memory.limit_in_bytes").trim() || 0);
  return {
    cpuMillis: quota > 0 ? Math.round((quota * 1000) / period) : 0,
    // v1 writes "no limit" as a page-rounded 2^63-1.
    memoryMaxBytes: mem > 0 && mem < 2 ** 62 ? mem : 0,
  };
}
