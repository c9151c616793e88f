// Jobs in this agent (issue 13): pipelines that outlive the client that started them, named
// `agents/<agent>/jobs/<uuid>`, with the seed's states RUNNING -> COMPLETED | FAILED | STOPPED.
// Each job has a directory under `<stateDir>/jobs/<uuid>/` (0700): `job.json` (0600, the record,
// rewritten atomically at start and end) and its output log (job-log.ts). A clawkerd that starts
// and finds a record still RUNNING lost that job with its previous life: it is FAILED with reason
// `clawkerd_restarted`. The first process is held at a gate (`read` on its stdin, in /bin/sh)
// until it has been placed in its cgroup, then executes the target: no instant runs unlimited.
// Where clawkerd cannot write cgroups (v1/hybrid hosts: the container sees them read-only) the
// control plane places it: the job starts `hold`, answering the gate's pid, and `openGate` lets
// it run once the control plane has moved it (or ends it when the control plane could not).
import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { constants as osConstants } from "node:os";
import { join } from "node:path";
import { ClawkerdError } from "./errors.js";
import { Job, killGroup } from "./job.js";
import type { GroupStats, JobCgroups, Limits } from "./job-cgroup.js";
import { JobLog, type JobLogOptions, type LogWatcher } from "./job-log.js";
import type { Logger } from "./log.js";
import { JobTimeline } from "./job-timeline.js";
import { SpareGate, endSpare } from "./spare-gate.js";

/** A job's lifecycle state. */
export type AgentJobState = "running" | "completed" | "failed" | "stopped";

/** The persistent record of one job (job.json). */
export interface JobRecord {
  readonly uuid: string;
  readonly name: string;
  readonly argv: readonly string[];
  state: AgentJobState;
  exitCode: number;
  signo: number;
  reason: string;
  /** Unix nanoseconds, as a decimal string (JSON has no 64-bit integers). */
  readonly startedAtNs: string;
  endedAtNs: string;
  readonly limits: Limits;
  isLimited: boolean;
  limitsNote: string;
}

/** What to start. */
export interface JobStart {
  readonly argv: readonly string[];
  readonly cwd: string;
  readonly env: Readonly<Record<string, string>>;
  readonly limits: Limits;
  /** Hold the first process at its gate until openGate (the control plane places it). */
  readonly hold?: boolean;
  /**
   * With `hold`: the job's uuid, chosen by the control plane so it can make the job's cgroups
   * while the job starts. Empty or absent: a new one.
   */
  readonly uuid?: string;
  /**
   * With `hold` and `uuid`: the control plane already moved the spare it reserved for that uuid
   * (reserveSpare()) into the job's cgroups, placed as this says; the job runs at once. A job
   * that cannot use it is held as without it.
   */
  readonly placedSpare?: { readonly isLimited: boolean; readonly note: string };
}

/** A started job; `heldPid` is the gate's pid while it waits for openGate (0 otherwise). */
export interface Started {
  readonly record: JobRecord;
  readonly heldPid: number;
}

/** Construction options. */
export interface AgentJobsOptions {
  /** The agent's full name, for job names. */
  readonly agent: string;
  /** `<stateDir>/jobs` holds one directory per job. */
  readonly stateDir: string;
  readonly cgroups: JobCgroups;
  readonly log: Logger;
  readonly baseEnv: Readonly<Record<string, string>>;
  /** uid/gid jobs run as. */
  readonly runAs: { readonly uid: number; readonly gid: number };
  readonly output?: JobLogOptions;
  /** Finished jobs kept (records and output); default 64. */
  readonly retainFinished?: number;
  /** The agent's own limits (agentLimitsOf()); a job asking for more is refused. 0: none. */
  readonly agentLimits?: Pick<Limits, "cpuMillis" | "memoryMaxBytes">;
  /** How long a held job waits for openGate before it ends FAILED; default 30 s. */
  readonly holdTimeoutMs?: number;
}

/** No limits of the job's own. */
export const NO_LIMITS: Limits = Object.freeze({
  cpuMillis: 0,
  memoryMaxBytes: 0,
  ioReadBps: 0,
  ioWriteBps: 0,
  ioReadIops: 0,
  ioWriteIops: 0,
  pidsMax: 0,
});

/** Default StopJob grace. */
export const DEFAULT_STOP_GRACE_MS = 10_000;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
// The gate: wait for one line on stdin (written once the process is in its cgroup), then become
// the target. EOF without the line (placement failed) exits 125 and runs nothing.
const GATE = 'IFS= read -r _ || exit 125; exec "$@" </dev/null';
const NEWLINE = Buffer.from("\n");

interface Live {
  readonly record: JobRecord;
  readonly log: JobLog;
  readonly dir: string;
  readonly group: string | undefined;
  /** Held at the gate for the control plane: the timer that ends the wait. */
  hold: NodeJS.Timeout | undefined;
  job: Job | undefined;
  ended: Promise<void>;
  stopRequested: boolean;
  /** Killed because clawkerd itself went down: FAILED (clawkerd_stopped), not STOPPED. */
  lost: boolean;
  /** Where the start's time went (debug log `job_timeline`). */
  readonly timeline: JobTimeline;
  /** What opens the gate: a newline, or a spare gate's line naming the target. */
  gateLine: Buffer;
}

/** Every job of this agent: start, stop, status, list, watch. */
export class AgentJobs {
  readonly #o: AgentJobsOptions;
  readonly #root: string;
  readonly #jobs = new Map<string, Live>();
  readonly #finished: string[] = [];
  readonly #spare: SpareGate;
  #closed = false;

  constructor(options: AgentJobsOptions) {
    this.#o = options;
    this.#root = join(options.stateDir, "jobs");
    this.#spare = new SpareGate({ log: options.log, baseEnv: options.baseEnv, runAs: options.runAs });
  }

  /** The spare gate's pid while one waits (tests). */
  get spareGatePid(): number | undefined {
    return this.#spare.pid;
  }

  /** The prefix of every job name here: `agents/<agent>/jobs/`. */
  get prefix(): string {
    return `agents/${this.#o.agent}/jobs/`;
  }

  /** Reads the records a previous run left; RUNNING ones become FAILED (clawkerd_restarted). */
  load(): void {
    mkdirSync(this.#root, { recursive: true, mode: 0o700 });
    this.#o.cgroups.sweep();
    const found: Live[] = [];
    for (const uuid of readdirSync(this.#root)) {
      if (!UUID.test(uuid)) continue;
      const dir = join(this.#root, uuid);
      let record: JobRecord;
      try {
        record = JSON.parse(readFileSync(join(dir, "job.json"), "utf8")) as JobRecord;
      } catch (err) {
        this.#o.log.warn({ err, uuid, event: "job_record_unreadable" }, "job record unreadable; removed");
        rmSync(dir, { recursive: true, force: true });
        continue;
      }
      if (record.state === "running") {
        record.state = "failed";
        record.reason = "clawkerd_restarted";
        record.exitCode = -1;
        record.endedAtNs = nowNs();
        writeRecord(dir, record);
        this.#o.log.warn({ job: record.name, event: "job_lost" }, "job lost with clawkerd's previous run");
      }
      const log = new JobLog(dir, this.#o.output, true);
      found.push({
        record,
        log,
        dir,
        group: undefined,
        hold: undefined,
        job: undefined,
        ended: Promise.resolve(),
        stopRequested: false,
        lost: false,
        timeline: new JobTimeline(),
        gateLine: NEWLINE,
      });
    }
    found.sort((a, b) => (BigInt(a.record.startedAtNs) < BigInt(b.record.startedAtNs) ? -1 : 1));
    for (const l of found) {
      this.#jobs.set(l.record.uuid, l);
      this.#retire(l.record.uuid);
    }
    this.#spare.start();
  }

  /**
   * Starts a job; returns its record once its process runs (or failed to start), or, with
   * `hold`, once its first process waits at the gate (its pid in `heldPid`).
   */
  async start(spec: JobStart): Promise<Started> {
    const timeline = new JobTimeline();
    if (this.#closed) throw new ClawkerdError("invalid_request", "clawkerd is shutting down");
    if (spec.argv.length === 0 || spec.argv[0] === "")
      throw new ClawkerdError("invalid_request", "argv must not be empty");
    if (spec.argv.some((a) => a.includes("\0"))) throw new ClawkerdError("invalid_request", "NUL in argv");
    checkWithinAgent(spec.limits, this.#o.agentLimits);
    const hold = spec.hold === true;
    const uuid = this.#newUuid(spec.uuid ?? "", hold);
    const dir = join(this.#root, uuid);
    const log = new JobLog(dir, this.#o.output);
    const target = { argv: spec.argv, cwd: spec.cwd, env: spec.env };
    // The spare the control plane reserved for this uuid and moved into its groups: no hold.
    const reserved =
      hold && spec.placedSpare !== undefined ? this.#spare.takeReserved(uuid, target) : undefined;
    const placed = reserved === undefined ? undefined : spec.placedSpare;
    const group =
      placed !== undefined
        ? { dir: undefined, isLimited: placed.isLimited, note: placed.isLimited ? "" : placed.note }
        : hold
          ? { dir: undefined, isLimited: false, note: "awaiting placement by the control plane" }
          : this.#o.cgroups.create(uuid, spec.limits);
    const record: JobRecord = {
      uuid,
      name: this.prefix + uuid,
      argv: [...spec.argv],
      state: "running",
      exitCode: 0,
      signo: 0,
      reason: "",
      startedAtNs: nowNs(),
      endedAtNs: "0",
      limits: { ...spec.limits },
      isLimited: group.isLimited,
      limitsNote: group.note,
    };
    try {
      writeRecord(dir, record);
    } catch (err) {
      if (reserved !== undefined) endSpare(reserved.job);
      throw err;
    }
    const live: Live = {
      record,
      log,
      dir,
      group: group.dir,
      hold: undefined,
      job: undefined,
      ended: Promise.resolve(),
      stopRequested: false,
      lost: false,
      timeline,
      gateLine: NEWLINE,
    };
    this.#jobs.set(uuid, live);
    const spare = reserved ?? this.#spare.take(target);
    if (spare !== undefined) live.gateLine = spare.line;
    const job =
      spare?.job ??
      new Job(
        uuid,
        {
          stages: [
            {
              argv: ["/bin/sh", "-c", GATE, "clawker-job", ...spec.argv],
              uid: this.#o.runAs.uid,
              gid: this.#o.runAs.gid,
              cwd: spec.cwd,
              env: spec.env,
            },
          ],
          timeoutSeconds: 0,
          initialStdin: Buffer.alloc(0),
          printOutput: false,
        },
        { log: this.#o.log, baseEnv: this.#o.baseEnv },
      );
    live.job = job;
    timeline.mark("spawned");
    // The job's output goes to disk as fast as it comes; the in-memory buffer is only a hop.
    const copier = job.output.watch({ blocking: true });
    const copied = (async () => {
      for await (const ev of copier) {
        if (ev.type !== "data") continue;
        timeline.mark("firstByte");
        log.write(ev.data);
        timeline.mark("logWritten");
      }
    })().catch((err: unknown) => {
      this.#o.log.error({ err, job: record.name, event: "job_output_failed" }, "cannot keep job output");
      void copier.return();
    });
    let heldPid = 0;
    if (job.spawned && hold && placed === undefined) {
      heldPid = job.pids[0]!;
      // A control plane that never answers must not leave the job waiting: it ends FAILED.
      live.hold = setTimeout(() => {
        live.hold = undefined;
        this.#o.log.warn({ job: record.name, event: "job_hold_expired" }, "job never placed; ended");
        job.closeStdin();
      }, this.#o.holdTimeoutMs ?? 30_000);
    } else if (job.spawned) {
      const pid = job.pids[0]!;
      try {
        if (group.dir !== undefined) this.#o.cgroups.place(group.dir, pid);
        job.writeStdin(live.gateLine);
        timeline.mark("gateOpened");
      } catch (err) {
        this.#o.log.error(
          { err, job: record.name, event: "job_place_failed" },
          "cannot place job in its cgroup",
        );
        killGroup(pid, osConstants.signals.SIGKILL);
      }
      job.closeStdin();
    }
    live.ended = job.finished.then(async (result) => {
      clearTimeout(live.hold);
      live.hold = undefined;
      await copied;
      log.close();
      const exit = job.stageExits[0];
      record.endedAtNs = nowNs();
      if (result.kind === "error") {
        record.state = "failed";
        record.reason = result.error.reason;
        record.exitCode = -1;
      } else {
        record.exitCode = exit?.exitCode ?? result.exitCode;
        record.signo = exit?.signo ?? 0;
        const oom =
          group.dir === undefined
            ? this.#o.cgroups.placedOomKills(uuid)
            : (this.#o.cgroups.stats(group.dir)?.memoryEvents["oom_kill"] ?? 0);
        if (live.lost) [record.state, record.reason] = ["failed", "clawkerd_stopped"];
        else if (live.stopRequested) [record.state, record.reason] = ["stopped", "stopped"];
        else if (record.exitCode === 0) [record.state, record.reason] = ["completed", "exited"];
        else if (oom > 0) [record.state, record.reason] = ["failed", "oom_killed"];
        else if (record.signo !== 0) [record.state, record.reason] = ["failed", "signalled"];
        // The gate's exit codes: 125 placement failed; 126/127 the shell could not exec the target.
        else if (record.exitCode === 125)
          [record.state, record.reason] = ["failed", "cgroup_placement_failed"];
        else if (record.exitCode === 126 || record.exitCode === 127)
          [record.state, record.reason] = ["failed", "spawn_failed"];
        else [record.state, record.reason] = ["failed", "exit_non_zero"];
      }
      if (group.dir !== undefined) {
        this.#o.cgroups.kill(group.dir);
        this.#o.cgroups.remove(group.dir);
      }
      try {
        writeRecord(dir, record);
      } catch (err) {
        this.#o.log.error({ err, job: record.name, event: "job_record_failed" }, "cannot write job record");
      }
      this.#o.log.info(
        {
          job: record.name,
          state: record.state,
          reason: record.reason,
          exitCode: record.exitCode,
          bytes: log.written,
          event: "job_ended",
        },
        "job ended",
      );
      this.#logTimeline(live);
      // The process and its in-memory output hop (up to 1 MiB) go; the record and the files stay.
      live.job = undefined;
      this.#retire(uuid);
    });
    const logStarted = (): void =>
      this.#o.log.info(
        {
          job: record.name,
          isLimited: group.isLimited,
          spawned: job.spawned,
          held: hold && placed === undefined,
          spareGate: spare !== undefined,
          placedAhead: placed !== undefined,
          event: "job_started",
        },
        "job started",
      );
    if (!job.spawned) {
      logStarted();
      await live.ended;
      return { record, heldPid: 0 };
    }
    // After the caller's answer went out (its write is flushed before the next immediates): the
    // line's write wakes whatever reads clawkerd's log, which on a busy host can take the CPU from
    // clawkerd before the answer left. The job's end comes no sooner than the next I/O turn.
    setImmediate(logStarted);
    return { record, heldPid };
  }

  /**
   * Opens a held job's gate: with `run` the first process executes the target (the control plane
   * placed it; `isLimited`/`note` say how well), without it the job ends FAILED
   * `cgroup_placement_failed` having run nothing. A job not held is refused (invalid_request).
   */
  openGate(name: string, run: boolean, isLimited: boolean, note: string): Promise<JobRecord> | JobRecord {
    const l = this.#live(name);
    if (l.hold === undefined || l.job === undefined)
      throw new ClawkerdError("invalid_request", `job ${JSON.stringify(name)} is not waiting at its gate`);
    clearTimeout(l.hold);
    l.hold = undefined;
    l.record.isLimited = run && isLimited;
    l.record.limitsNote = run ? (isLimited ? "" : note) : note;
    writeRecord(l.dir, l.record);
    if (!run) {
      l.job.closeStdin();
      return l.ended.then(() => l.record);
    }
    l.job.writeStdin(l.gateLine);
    l.job.closeStdin();
    l.timeline.mark("gateOpened");
    return l.record;
  }

  /**
   * Sets the waiting spare gate aside for the control plane's next placed job `uuid` (a new
   * lowercase UUID); its pid in this pid namespace, 0 when no spare can wait here.
   */
  reserveSpare(uuid: string): number {
    if (this.#closed) throw new ClawkerdError("invalid_request", "clawkerd is shutting down");
    // Named by the control plane, never picked here: "" is refused like any malformed uuid.
    this.#newUuid(uuid === "" ? "-" : uuid, true);
    return this.#spare.reserve(uuid) ?? 0;
  }

  /** Notes that the first output chunk of job `name` went to a watcher (the timeline's end). */
  firstChunkSent(name: string): void {
    const l = this.#live(name);
    l.timeline.mark("firstChunkSent");
    this.#logTimeline(l);
  }

  /** The job named `name`; throws ClawkerdError("not_found") for an unknown or malformed name. */
  get(name: string): JobRecord {
    return this.#live(name).record;
  }

  /** Output bytes written and dropped so far. */
  output(name: string): { written: number; dropped: number } {
    const l = this.#live(name);
    return { written: l.log.written, dropped: l.log.dropped };
  }

  /** The job's cgroup usage, when it runs in a group of its own. */
  stats(name: string): GroupStats | undefined {
    const l = this.#live(name);
    return l.group === undefined || l.record.state !== "running" ? undefined : this.#o.cgroups.stats(l.group);
  }

  /** Every job, oldest first, optionally of one state. */
  list(state?: AgentJobState): JobRecord[] {
    return [...this.#jobs.values()]
      .map((l) => l.record)
      .filter((r) => state === undefined || r.state === state);
  }

  /** A watcher of the job's output from the oldest byte kept. */
  watch(name: string): LogWatcher {
    const l = this.#live(name);
    l.timeline.mark("watchAttached");
    return l.log.watch();
  }

  /**
   * Stops a running job: SIGTERM to its process group (and everything in its cgroup), SIGKILL to
   * both after `graceMs`. Resolves with the ended record; a finished job is returned unchanged.
   */
  async stop(name: string, graceMs = DEFAULT_STOP_GRACE_MS): Promise<JobRecord> {
    const l = this.#live(name);
    const job = l.job;
    if (job === undefined || !job.isRunning) {
      await l.ended;
      return l.record;
    }
    l.stopRequested = true;
    this.#signal(l, osConstants.signals.SIGTERM);
    const timer = setTimeout(() => {
      this.#signal(l, osConstants.signals.SIGKILL);
      if (l.group !== undefined) this.#o.cgroups.kill(l.group);
    }, graceMs);
    try {
      await l.ended;
    } finally {
      clearTimeout(timer);
    }
    return l.record;
  }

  /** Stops every running job (SIGKILL, as clawkerd goes down), waits for their records. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#spare.close();
    const running = [...this.#jobs.values()].filter((l) => l.job?.isRunning === true);
    for (const l of running) {
      l.lost = true;
      this.#signal(l, osConstants.signals.SIGKILL);
      if (l.group !== undefined) this.#o.cgroups.kill(l.group);
    }
    await Promise.all(running.map((l) => l.ended));
    for (const l of this.#jobs.values()) l.log.release();
  }

  #signal(l: Live, signo: number): void {
    l.job?.signal(signo);
    // A descendant that left the process group (setsid) is still in the cgroup (clawkerd's own, or
    // the one the control plane placed it in, which clawkerd can read).
    const procs =
      l.group !== undefined ? join(l.group, "cgroup.procs") : this.#o.cgroups.placedProcsFile(l.record.uuid);
    if (procs !== undefined) {
      try {
        for (const pid of readFileSync(procs, "utf8").split("\n").filter(Boolean))
          killGroup(Number(pid), signo);
      } catch {
        // the group is gone
      }
    }
  }

  #logTimeline(l: Live): void {
    this.#spare.refillSoon();
    if (l.timeline.takeLog())
      this.#o.log.debug(
        { job: l.record.name, t0UnixMs: l.timeline.t0UnixMs, ...l.timeline.marks, event: "job_timeline" },
        "job start timeline",
      );
  }

  // A control plane's uuid (held jobs only: it makes the cgroups under that name meanwhile) must be
  // well formed and new; anything else is refused before anything is written. Without hold the
  // field is not ours to read (a client that omits it may encode it as "undefined").
  #newUuid(asked: string, hold: boolean): string {
    if (!hold || asked === "") return randomUUID();
    if (!UUID.test(asked))
      throw new ClawkerdError("invalid_request", `malformed job uuid ${JSON.stringify(asked)}`);
    if (this.#jobs.has(asked) || existsSync(join(this.#root, asked)))
      throw new ClawkerdError("invalid_request", `job uuid ${asked} is taken`);
    return asked;
  }

  #live(name: string): Live {
    const uuid = name.startsWith(this.prefix) ? name.slice(this.prefix.length) : "";
    const l = UUID.test(uuid) ? this.#jobs.get(uuid) : undefined;
    if (l === undefined) throw new ClawkerdError("not_found", `no job ${JSON.stringify(name)}`);
    return l;
  }

  // Keeps the newest `retainFinished` finished jobs; older ones lose their record and output.
  #retire(uuid: string): void {
    this.#finished.push(uuid);
    while (this.#finished.length > (this.#o.retainFinished ?? 64)) {
      const old = this.#finished.shift()!;
      const l = this.#jobs.get(old);
      this.#jobs.delete(old);
      l?.log.release();
      if (l !== undefined) rmSync(l.dir, { recursive: true, force: true });
    }
  }
}

/** Refuses job limits above the agent's own (invalid_request, naming both). */
export function checkWithinAgent(
  limits: Limits,
  agent: Pick<Limits, "cpuMillis" | "memoryMaxBytes"> | undefined,
): void {
  if (agent === undefined) return;
  if (agent.cpuMillis > 0 && limits.cpuMillis > agent.cpuMillis) {
    throw new ClawkerdError(
      "invalid_request",
      `cpu limit ${limits.cpuMillis / 1000} CPUs is above the agent's ${agent.cpuMillis / 1000}`,
    );
  }
  if (agent.memoryMaxBytes > 0 && limits.memoryMaxBytes > agent.memoryMaxBytes) {
    throw new ClawkerdError(
      "invalid_request",
      `memory limit ${limits.memoryMaxBytes} bytes is above the agent's ${agent.memoryMaxBytes}`,
    );
  }
}

function writeRecord(dir: string, record: JobRecord): void {
  const tmp = join(dir, "job.json.tmp");
  writeFileSync(tmp, JSON.stringify(record) + "\n", { mode: 0o600 });
  renameSync(tmp, join(dir, "job.json"));
}

function nowNs(): string {
  return (BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) * 1000n).toString();
}
