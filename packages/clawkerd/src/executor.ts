// The executor: every command clawkerd runs, by id. Commands run concurrently; each one's output
// can be watched by any number of readers with backfill (watch()). Finished jobs are kept for a
// while (the newest `retainFinished`) so a late watcher still gets their output, then dropped:
// memory stays bounded by (running + retained) x the output buffer's capacity.
import { ClawkerdError } from "./errors.js";
import { Job, validateShell, type JobOptions, type ShellSpec } from "./job.js";
import type { Logger } from "./log.js";
import type { OutputBufferOptions, WatchOptions, Watcher } from "./output-buffer.js";

/** Executor construction options. */
export interface ExecutorOptions {
  readonly log: Logger;
  /** Environment every stage starts from; default clawkerd's own minus CLAWKERD_* variables. */
  readonly baseEnv?: Readonly<Record<string, string>>;
  readonly output?: OutputBufferOptions;
  /** Finished jobs kept for late watchers; default 32. */
  readonly retainFinished?: number;
  readonly pipeGraceMs?: number;
}

/** Runs and tracks jobs. */
export class Executor {
  readonly #jobs = new Map<string, Job>();
  readonly #finished: string[] = [];
  readonly #retain: number;
  readonly #jobOptions: JobOptions;
  readonly #log: Logger;
  #closed = false;

  constructor(options: ExecutorOptions) {
    this.#log = options.log;
    this.#retain = options.retainFinished ?? 32;
    this.#jobOptions = {
      log: options.log,
      baseEnv: options.baseEnv ?? defaultBaseEnv(),
      ...(options.output === undefined ? {} : { output: options.output }),
      ...(options.pipeGraceMs === undefined ? {} : { pipeGraceMs: options.pipeGraceMs }),
    };
  }

  /** Jobs still running. */
  get running(): number {
    let n = 0;
    for (const j of this.#jobs.values()) if (j.isRunning) n++;
    return n;
  }

  /**
   * Starts a pipeline under `id`. Throws ClawkerdError: invalid_request (bad spec or executor
   * closed), duplicate_command_id (id known). A spawn failure is not thrown: the job is returned
   * with `spawned === false` and `finished` resolves to the spawn_failed error.
   */
  start(id: string, spec: ShellSpec): Job {
    if (this.#closed) throw new ClawkerdError("invalid_request", "clawkerd is shutting down");
    if (this.#jobs.has(id))
      throw new ClawkerdError("duplicate_command_id", `command id ${JSON.stringify(id)} is already in use`);
    validateShell(spec);
    const job = new Job(id, spec, this.#jobOptions);
    this.#jobs.set(id, job);
    this.#log.info(
      { job: id, stages: spec.stages.length, spawned: job.spawned, event: "job_started" },
      "job started",
    );
    void job.finished.then((result) => {
      this.#log.info(
        {
          job: id,
          state: job.state,
          ...(result.kind === "done" ? { exitCode: result.exitCode } : { reason: result.error.reason }),
          bytes: job.output.written,
          stdinPeak: job.stdinPeak,
          event: "job_finished",
        },
        "job finished",
      );
      this.#finished.push(id);
      while (this.#finished.length > this.#retain) this.#jobs.delete(this.#finished.shift()!);
    });
    return job;
  }

  /** The job under `id`, running or retained. */
  get(id: string): Job | undefined {
    return this.#jobs.get(id);
  }

  /** Watches a job's output with backfill; throws unknown_command_id. */
  watch(id: string, options: WatchOptions = {}): Watcher {
    const job = this.#jobs.get(id);
    if (job === undefined) throw new ClawkerdError("unknown_command_id", `no command ${JSON.stringify(id)}`);
    return job.output.watch(options);
  }

  /** The running job under `id`; throws unknown_command_id when there is none. */
  runningJob(id: string): Job {
    const job = this.#jobs.get(id);
    if (job === undefined || !job.isRunning) {
      throw new ClawkerdError("unknown_command_id", `no running command ${JSON.stringify(id)}`);
    }
    return job;
  }

  /** Kills every running job and waits for them to end. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    const running = [...this.#jobs.values()].filter((j) => j.isRunning);
    for (const j of running) j.kill();
    await Promise.all(running.map((j) => j.finished));
  }
}

/** clawkerd's environment without its own CLAWKERD_* settings. */
export function defaultBaseEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env))
    if (v !== undefined && !k.startsWith("CLAWKERD_")) env[k] = v;
  return env;
}
