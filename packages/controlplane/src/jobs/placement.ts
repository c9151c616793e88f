// The control plane's side of per-job limits on a cgroup v1 (hybrid) host: which agents it places
// jobs for, placing a held job, the job's and the agent's usage, and the reaper that removes a
// job's groups once the job has ended (also groups a previous control plane left behind).
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { agentFullName, errorDetailOf, jobs } from "@clawker/proto";
import type { AgentChannel, Dialer } from "../agents/dialer.js";
import type { Registry } from "../agents/registry.js";
import type { Logger } from "../logging.js";
import {
  JobCgroupsV1,
  placementOf,
  type ContainerGroups,
  type ContainerUsage,
  type MadeGroups,
  type Placement,
  type PreparedGroups,
} from "./cgroups-v1.js";

/** What the placement uses. */
export interface JobPlacementDeps {
  /** The container's init pid on this host (Docker's State.Pid; 0 when not running). */
  readonly initPid: (containerId: string, signal?: AbortSignal) => Promise<number>;
  readonly registry: Pick<Registry, "list">;
  readonly dialer: Pick<Dialer, "readyChannel">;
  readonly log: Logger;
  /** The v1 cgroup reader/writer; default the host's. */
  readonly cgroups?: JobCgroupsV1;
  /** How often ended jobs' groups are looked for; default 2 s. */
  readonly reapIntervalMs?: number;
  /**
   * After a placed start, how long until the agent's next spare gate is reserved and moved into
   * the next job's groups ahead (reserveSoon()); default 100 ms. false: never (every start is
   * held, placed, then opened).
   */
  readonly spareAheadDelayMs?: number | false;
}

/** A spare gate clawkerd set aside for job `uuid`, already moved into that job's groups. */
export interface ReservedSpare {
  readonly uuid: string;
  readonly groups: ContainerGroups;
  readonly made: MadeGroups;
  /** What the move could not do, for the job's note. */
  readonly moveFailed: readonly string[];
}

/** Places jobs in v1 cgroups under their agent's container and removes them after. */
export class JobPlacement {
  readonly #d: JobPlacementDeps;
  readonly #cgroups: JobCgroupsV1;
  readonly #groups = new Map<string, ContainerGroups>();
  /** Jobs between mkdir and the gate's opening: their empty groups are not the reaper's. */
  readonly #placing = new Set<string>();
  /** Per container: its reserved spare, or "pending" while one is being reserved. */
  readonly #reserved = new Map<string, ReservedSpare | "pending">();
  readonly #reserveTimers = new Set<NodeJS.Timeout>();
  /** Per container: the reservation waiting for its delay, the job that asked for it, and what starts it. */
  readonly #due = new Map<string, { readonly after: string; readonly fire: () => void }>();
  #timer: NodeJS.Timeout | undefined;
  #reaping = false;
  #closed = false;

  constructor(deps: JobPlacementDeps) {
    this.#d = deps;
    this.#cgroups = deps.cgroups ?? new JobCgroupsV1();
  }

  /** Starts the reaper (a first pass at once: leftovers of a previous run). */
  start(signal?: AbortSignal): void {
    if (this.#closed || this.#timer !== undefined || !this.#cgroups.available) return;
    signal?.addEventListener("abort", () => this.close(), { once: true });
    const tick = (): void => {
      if (this.#reaping) return;
      this.#reaping = true;
      void this.reap()
        .catch((err: unknown) =>
          this.#d.log.warn({ err, event: "job_reap_failed" }, "job cgroup reaping failed"),
        )
        .finally(() => (this.#reaping = false));
    };
    this.#timer = setInterval(tick, this.#d.reapIntervalMs ?? 2000);
    this.#timer.unref();
    tick();
  }

  /** Stops the reaper and the reservations ahead. Idempotent. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#timer);
    for (const t of this.#reserveTimers) clearTimeout(t);
    this.#reserveTimers.clear();
    this.#due.clear();
  }

  /**
   * In `spareAheadDelayMs`, or as soon as job `after`'s first output reached a watcher
   * (firstOutput()), whichever comes first, reserves the container's next spare gate through
   * `reserve` (clawkerd's ReserveSpareGate for a new uuid: the spare's pid in the agent's
   * namespace, 0 for none) and moves it into that job's groups, made without limits;
   * takeReserved() hands it to a start. One per container: nothing happens while one is ready or
   * on its way.
   */
  reserveSoon(
    containerId: string,
    groups: ContainerGroups,
    reserve: (uuid: string) => Promise<number>,
    after = "",
  ): void {
    const delay = this.#d.spareAheadDelayMs ?? 100;
    if (delay === false || this.#closed || this.#reserved.has(containerId)) return;
    this.#reserved.set(containerId, "pending");
    let fired = false;
    const fire = (): void => {
      if (fired || this.#closed) return;
      fired = true;
      clearTimeout(timer);
      this.#reserveTimers.delete(timer);
      if (this.#due.get(containerId)?.fire === fire) this.#due.delete(containerId);
      void this.#reserveAhead(containerId, groups, reserve);
    };
    const timer = setTimeout(fire, delay);
    timer.unref();
    this.#reserveTimers.add(timer);
    if (after !== "") this.#due.set(containerId, { after, fire });
  }

  /**
   * Job `uuid`'s first output went to a watcher: a reservation its start asked for (reserveSoon's
   * `after`) begins now instead of at its delay, so a next start soon after finds the spare; not
   * before that output is out, so the reservation's work never delays it. Once the pending I/O is
   * flushed (setImmediate), the relayed bytes go first.
   */
  firstOutput(uuid: string): void {
    for (const [containerId, due] of this.#due) {
      if (due.after !== uuid) continue;
      this.#due.delete(containerId);
      setImmediate(due.fire);
      return;
    }
  }

  /** The container's reserved spare, handed over once; undefined when none is ready. */
  takeReserved(containerId: string): ReservedSpare | undefined {
    const r = this.#reserved.get(containerId);
    if (r === undefined || r === "pending") return undefined;
    this.#reserved.delete(containerId);
    return r;
  }

  /**
   * Writes the job's limits into its reserved spare's groups, before clawkerd is asked for the
   * job: the placement its StartJob carries, and the groups for enter() if the job is held anyway.
   */
  limitReserved(
    r: ReservedSpare,
    limits: jobs.JobLimits | undefined,
  ): { prepared: PreparedGroups; placed: Placement } {
    const prepared = this.#cgroups.limit(r.made, limits);
    return { prepared, placed: placementOf(prepared, r.moveFailed) };
  }

  /** The job `uuid` runs in the groups a reserved spare was moved into: they are the reaper's again. */
  ran(uuid: string): void {
    this.#placing.delete(uuid);
  }

  async #reserveAhead(
    containerId: string,
    groups: ContainerGroups,
    reserve: (uuid: string) => Promise<number>,
  ): Promise<void> {
    const uuid = randomUUID();
    const made = this.#cgroups.make(groups, uuid);
    this.#placing.add(uuid);
    let ready: ReservedSpare | undefined;
    try {
      const nsPid = await reserve(uuid).catch(() => 0);
      // Only a process directly in the container's own group is moved (hostPid()), as for a held job.
      const hostPid = nsPid === 0 || this.#closed ? undefined : this.#cgroups.hostPid(groups, nsPid);
      if (hostPid !== undefined)
        ready = { uuid, groups, made, moveFailed: this.#cgroups.move(made.made, hostPid) };
    } finally {
      if (ready === undefined) {
        this.abandon(groups, uuid);
        this.#reserved.delete(containerId);
      } else this.#reserved.set(containerId, ready);
    }
  }

  /** The container's v1 groups when the control plane places its jobs; undefined: it does not. */
  async groupsOf(containerId: string): Promise<ContainerGroups | undefined> {
    if (!this.#cgroups.available) return undefined;
    const known = this.#groups.get(containerId);
    const probe = known?.dirs.memory ?? known?.dirs.cpu;
    // Cached while the container's group exists (its path carries the id, so a restart keeps it).
    if (known !== undefined && probe !== undefined && existsSync(probe)) return known;
    const pid = await this.#d.initPid(containerId).catch((err: unknown) => {
      this.#d.log.warn({ err, containerId, event: "job_cgroups_unknown" }, "cannot find the agent's cgroups");
      return 0;
    });
    const groups = this.#cgroups.containerGroups(pid);
    // Only the container's own group: both Docker drivers name it by the container id.
    if (groups === undefined || !Object.values(groups.dirs).some((d) => d.includes(containerId)))
      return undefined;
    this.#groups.set(containerId, groups);
    return groups;
  }

  /** Places the held process `nsPid` of job `uuid` in its groups under the container's. */
  place(groups: ContainerGroups, uuid: string, nsPid: number, limits: jobs.JobLimits | undefined): Placement {
    return this.enter(groups, uuid, this.prepare(groups, uuid, limits), nsPid);
  }

  /**
   * Makes job `uuid`'s groups with their limits before its process exists (while clawkerd starts
   * it); the reaper leaves them alone until enter() or abandon().
   */
  prepare(groups: ContainerGroups, uuid: string, limits: jobs.JobLimits | undefined): PreparedGroups {
    this.#placing.add(uuid);
    return this.#cgroups.prepare(groups, uuid, limits);
  }

  /**
   * Moves the held process `nsPid` of job `uuid` into its prepared groups. A pid that is not
   * directly in the container's own group moves nothing: the groups go, the note says so.
   */
  enter(groups: ContainerGroups, uuid: string, prepared: PreparedGroups, nsPid: number): Placement {
    try {
      const hostPid = this.#cgroups.hostPid(groups, nsPid);
      if (hostPid === undefined) {
        this.#cgroups.remove(groups, uuid);
        return {
          isLimited: false,
          note: "the job's process was not found in the agent's cgroup: it runs under the agent's limits only",
        };
      }
      return this.#cgroups.enter(prepared, hostPid);
    } finally {
      this.#placing.delete(uuid);
    }
  }

  /** Removes prepared groups whose job never started. */
  abandon(groups: ContainerGroups, uuid: string): void {
    this.#placing.delete(uuid);
    this.#cgroups.remove(groups, uuid);
  }

  /** The job's usage from its groups; undefined when it has none (any more). */
  stats(containerId: string, uuid: string): jobs.JobStats | undefined {
    const groups = this.#groups.get(containerId);
    return groups === undefined ? undefined : this.#cgroups.jobStats(groups, uuid);
  }

  /** The container's own usage and limits; undefined when its groups are not found. */
  async usage(containerId: string): Promise<ContainerUsage | undefined> {
    const groups = await this.groupsOf(containerId);
    return groups === undefined ? undefined : this.#cgroups.containerUsage(groups);
  }

  /** Removes job `uuid`'s groups if no process is left in them. */
  removeIfEmpty(containerId: string, uuid: string): boolean {
    const groups = this.#groups.get(containerId);
    if (groups === undefined || this.#placing.has(uuid) || !this.#cgroups.isEmpty(groups, uuid)) return false;
    const gone = this.#cgroups.remove(groups, uuid);
    if (gone) this.#d.log.info({ containerId, uuid, event: "job_cgroup_removed" }, "job cgroups removed");
    return gone;
  }

  /**
   * One pass: every job group under a registered agent with no process left whose job clawkerd
   * reports ended (or cannot be asked: no ready session) is removed. The job record is written
   * before its groups go, so clawkerd has read the OOM count first.
   */
  async reap(): Promise<void> {
    for (const row of this.#d.registry.list()) {
      if (this.#closed) return;
      const groups = await this.groupsOf(row.containerId);
      if (groups === undefined) continue;
      for (const uuid of this.#cgroups.jobIds(groups)) {
        if (this.#placing.has(uuid) || !this.#cgroups.isEmpty(groups, uuid)) continue;
        const name = `agents/${agentFullName(row.project, row.agentName)}/jobs/${uuid}`;
        const channel = this.#d.dialer.readyChannel(row.containerId);
        if (channel !== undefined && (await isRunning(channel, name))) continue;
        this.removeIfEmpty(row.containerId, uuid);
      }
    }
  }
}

// True while clawkerd says the job runs, or when it cannot say (left for the next pass).
function isRunning(channel: AgentChannel, name: string): Promise<boolean> {
  const client = new jobs.JobServiceClient("unused:0", grpc.credentials.createInsecure(), {
    channelOverride: channel,
  });
  return new Promise((resolve) =>
    client.getJobStatus({ name }, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (err, res) => {
      if (err === null) resolve(res.job?.state === jobs.JobState.JOB_STATE_RUNNING);
      else resolve(errorDetailOf(err)?.reason !== "not_found");
    }),
  );
}
