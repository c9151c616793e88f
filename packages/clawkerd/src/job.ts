// One ShellCommand as a running pipeline (API.md §3): stage i's stdout feeds stage i+1's stdin,
// the output (last stage's stdout plus every stage's stderr) goes into an OutputBuffer from the
// first byte. State machine as the Telehandler job (seeds/001): running -> completed (last stage
// exited 0) | failed (non-zero, spawn failure, timeout) | stopped (killed by its owner).
import { spawn, type ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { constants as osConstants } from "node:os";
import type { Readable, Writable } from "node:stream";
import { ClawkerdError } from "./errors.js";
import type { Logger } from "./log.js";
import { OutputBuffer, type OutputBufferOptions } from "./output-buffer.js";

/** One process of a pipeline. uid/gid 0/0 from a non-root clawkerd means "inherit" (proto3 default). */
export interface StageSpec {
  readonly argv: readonly string[];
  readonly uid: number;
  readonly gid: number;
  /** Working directory; "" inherits clawkerd's. */
  readonly cwd: string;
  /** Added to (and overriding) the base environment. */
  readonly env: Readonly<Record<string, string>>;
}

/** What to run. */
export interface ShellSpec {
  readonly stages: readonly StageSpec[];
  /** Zero means no timeout. */
  readonly timeoutSeconds: number;
  readonly initialStdin: Buffer;
  /** Also copy the output to clawkerd's stderr (its console; stdout carries JSON logs). */
  readonly printOutput: boolean;
}

/** The job's lifecycle state. */
export type JobState = "running" | "completed" | "failed" | "stopped";

/** How one stage ended: exit code (-1 when a signal killed it) and signal number (0 if none). */
export interface StageExitInfo {
  readonly stageIndex: number;
  readonly exitCode: number;
  readonly signo: number;
}

/** How the job ended: Done with the last stage's code, or an Error. */
export type JobResult =
  | { readonly kind: "done"; readonly exitCode: number }
  | { readonly kind: "error"; readonly error: ClawkerdError };

/** Construction options shared by every job of an executor. */
export interface JobOptions {
  readonly log: Logger;
  /** The environment every stage starts from (clawkerd's own, minus CLAWKERD_*). */
  readonly baseEnv: Readonly<Record<string, string>>;
  readonly output?: OutputBufferOptions;
  /**
   * After the last stage exits, how long to wait for the output pipes to reach EOF (a background
   * grandchild may hold them open) before closing them; default 1000 ms.
   */
  readonly pipeGraceMs?: number;
}

const MAX_STAGES = 64;

/** Checks a ShellSpec's shape; throws ClawkerdError("invalid_request"). */
export function validateShell(spec: ShellSpec): void {
  if (spec.stages.length === 0)
    throw new ClawkerdError("invalid_request", "a shell needs at least one stage");
  if (spec.stages.length > MAX_STAGES)
    throw new ClawkerdError("invalid_request", `at most ${MAX_STAGES} stages`);
  spec.stages.forEach((s, i) => {
    if (s.argv.length === 0 || s.argv[0] === "") {
      throw new ClawkerdError("invalid_request", `stage ${i}: argv must not be empty`);
    }
    if (s.argv.some((a) => a.includes("\0")))
      throw new ClawkerdError("invalid_request", `stage ${i}: NUL in argv`);
  });
  if (!Number.isInteger(spec.timeoutSeconds) || spec.timeoutSeconds < 0) {
    throw new ClawkerdError("invalid_request", "timeout_seconds must be a non-negative integer");
  }
}

/**
 * A running (or finished) pipeline. Emits `stageExit` for each stage as it exits, and
 * `stdinWritten` with a byte count whenever stdin bytes leave its queue (handed to stage 0's pipe,
 * or dropped because that pipe is gone), so a sender can be paced by what stage 0 really reads.
 */
export class Job extends EventEmitter<{ stageExit: [StageExitInfo]; stdinWritten: [number] }> {
  /** The combined output; watch it with `output.watch()`. */
  readonly output: OutputBuffer;
  /** Resolves once when every stage has exited and the output is closed; never rejects. */
  readonly finished: Promise<JobResult>;
  /** Stage exits so far, in the order they happened. */
  readonly stageExits: StageExitInfo[] = [];
  #state: JobState = "running";
  #spawned = false;
  #children: ChildProcess[] = [];
  #stdin: Writable | undefined;
  #stdinQueued = 0;
  #stdinPeak = 0;
  #readers: Readable[] = [];
  #openReaders = 0;
  #exited = 0;
  #timedOut = false;
  #stopped = false;
  #timer: NodeJS.Timeout | undefined;
  #graceTimer: NodeJS.Timeout | undefined;
  #settle!: (r: JobResult) => void;
  #settled = false;
  readonly #log: Logger;
  readonly #graceMs: number;

  constructor(
    readonly id: string,
    readonly spec: ShellSpec,
    options: JobOptions,
  ) {
    super();
    this.#log = options.log;
    this.#graceMs = options.pipeGraceMs ?? 1000;
    this.output = new OutputBuffer(options.output);
    this.finished = new Promise((resolve) => (this.#settle = resolve));
    this.#spawn(options.baseEnv);
  }

  /** The lifecycle state. */
  get state(): JobState {
    return this.#state;
  }

  /** True when every stage was spawned (then `Started` is due); false after a spawn failure. */
  get spawned(): boolean {
    return this.#spawned;
  }

  /** True until the job has finished. */
  get isRunning(): boolean {
    return !this.#settled;
  }

  /**
   * True while the first stage's process has not been reaped: its pid still names it (a pid is
   * free for reuse only once its parent, clawkerd, has waited for it).
   */
  get isFirstUnreaped(): boolean {
    const c = this.#children[0];
    return c?.pid !== undefined && c.exitCode === null && c.signalCode === null;
  }

  /** Process ids of the stages (each leads its own process group). */
  get pids(): number[] {
    return this.#children.map((c) => c.pid).filter((p): p is number => p !== undefined);
  }

  /** Stdin bytes accepted but not yet handed to stage 0's pipe. */
  get stdinQueued(): number {
    return this.#stdinQueued;
  }

  /** The most stdin bytes ever queued at once (the memory the job's stdin cost). */
  get stdinPeak(): number {
    return this.#stdinPeak;
  }

  /**
   * Feeds bytes to stage 0's stdin (dropped silently once it has exited or closed). They count as
   * queued until the pipe took them; then (or when dropped) `stdinWritten` reports them.
   */
  writeStdin(data: Buffer): void {
    if (data.length === 0) return;
    const stdin = this.#stdin;
    if (stdin === undefined || stdin.destroyed || stdin.writableEnded) {
      this.emit("stdinWritten", data.length);
      return;
    }
    this.#stdinQueued += data.length;
    this.#stdinPeak = Math.max(this.#stdinPeak, this.#stdinQueued);
    // Called exactly once: when the pipe took the bytes, or with an error when it went away.
    stdin.write(data, () => {
      this.#stdinQueued -= data.length;
      this.emit("stdinWritten", data.length);
    });
  }

  /** Closes stage 0's stdin. */
  closeStdin(): void {
    const stdin = this.#stdin;
    if (stdin !== undefined && !stdin.writableEnded) stdin.end();
  }

  /** Sends `signo` to every stage's process group. */
  signal(signo: number): void {
    for (const pid of this.pids) killGroup(pid, signo);
  }

  /** Kills every stage (SIGKILL to each process group); the job ends `stopped`. */
  kill(): void {
    if (this.#settled) return;
    this.#stopped = true;
    this.signal(osConstants.signals.SIGKILL);
  }

  #spawn(baseEnv: Readonly<Record<string, string>>): void {
    const { stages } = this.spec;
    let failure: ClawkerdError | undefined;
    let pendingError: Promise<ClawkerdError> | undefined;
    let prevOut: Readable | undefined;
    const myUid = process.getuid?.() ?? 0;
    const myGid = process.getgid?.() ?? 0;
    for (let i = 0; i < stages.length; i++) {
      const s = stages[i]!;
      const ids: { uid?: number; gid?: number } = {};
      const inherit = myUid !== 0 && s.uid === 0 && s.gid === 0;
      if (!inherit && (s.uid !== myUid || s.gid !== myGid)) {
        ids.uid = s.uid;
        ids.gid = s.gid;
      }
      let child: ChildProcess;
      try {
        child = spawn(s.argv[0]!, s.argv.slice(1), {
          stdio: [i === 0 ? "pipe" : prevOut!, "pipe", "pipe"],
          env: { ...baseEnv, ...s.env },
          ...(s.cwd === "" ? {} : { cwd: s.cwd }),
          ...ids,
          // Own session and process group: signals and kills reach the stage's descendants too.
          detached: true,
        });
      } catch (err) {
        failure = spawnError(i, s.argv[0]!, err);
        break;
      }
      this.#children.push(child);
      if (child.pid === undefined) {
        // ENOENT, EACCES, ...: reported on the next tick as 'error'.
        pendingError = new Promise((resolve) =>
          child.once("error", (err) => resolve(spawnError(i, s.argv[0]!, err))),
        );
        break;
      }
      child.once("error", (err) =>
        this.#log.warn({ err, stage: i, event: "stage_error" }, "stage process error"),
      );
      prevOut = child.stdout!;
    }
    // The parent's copies of the intermediate pipes must go, or an early-exiting reader would
    // never give its writer SIGPIPE (`yes | head -1`). Same tick as spawn: nothing was read yet.
    for (let i = 0; i < this.#children.length - 1; i++) this.#children[i]!.stdout?.destroy();

    if (failure !== undefined || pendingError !== undefined) {
      this.#state = "failed";
      for (const c of this.#children) {
        c.stdin?.destroy();
        c.stdout?.destroy();
        c.stderr?.destroy();
        if (c.pid !== undefined) killGroup(c.pid, osConstants.signals.SIGKILL);
      }
      const started = this.#children.filter((c) => c.pid !== undefined);
      const exits = Promise.all(
        started.map((c) =>
          c.exitCode !== null || c.signalCode !== null
            ? Promise.resolve()
            : new Promise<void>((r) => c.once("exit", () => r())),
        ),
      );
      const why = failure !== undefined ? Promise.resolve(failure) : pendingError!;
      void Promise.all([why, exits]).then(([error]) => {
        this.output.close();
        this.#finish({ kind: "error", error });
      });
      return;
    }

    this.#spawned = true;
    const first = this.#children[0]!;
    const last = this.#children[this.#children.length - 1]!;
    this.#stdin = first.stdin!;
    this.#stdin.on("error", (err) => this.#log.debug({ err, event: "stdin_error" }, "stage 0 stdin closed"));
    this.writeStdin(this.spec.initialStdin);

    this.#readers = [last.stdout!, ...this.#children.map((c) => c.stderr!)];
    this.#openReaders = this.#readers.length;
    this.output.setFlowControl({
      pause: () => this.#readers.forEach((r) => r.pause()),
      resume: () => this.#readers.forEach((r) => r.resume()),
    });
    const print = this.spec.printOutput;
    for (const r of this.#readers) {
      r.on("data", (d: Buffer) => {
        this.output.write(d);
        if (print) process.stderr.write(d);
      });
      r.on("error", (err) => this.#log.debug({ err, event: "output_error" }, "output pipe error"));
      r.once("close", () => {
        this.#openReaders--;
        this.#maybeFinish();
      });
    }
    this.#children.forEach((c, i) => {
      c.once("exit", (code, signal) => {
        const signo = signal === null ? 0 : (osConstants.signals[signal] ?? 0);
        const info: StageExitInfo = { stageIndex: i, exitCode: code ?? -1, signo };
        this.stageExits.push(info);
        this.#exited++;
        this.emit("stageExit", info);
        if (i === 0) this.#stdin?.destroy();
        this.#maybeFinish();
      });
    });
    if (this.spec.timeoutSeconds > 0) {
      this.#timer = setTimeout(() => {
        this.#timedOut = true;
        this.signal(osConstants.signals.SIGKILL);
      }, this.spec.timeoutSeconds * 1000);
    }
  }

  #maybeFinish(): void {
    if (this.#settled || this.#exited < this.#children.length) return;
    if (this.#openReaders > 0) {
      // Every stage exited but a pipe is still open: a background descendant holds it, or the
      // reader is paused by backpressure (then the bytes are ours to deliver: wait longer).
      if (this.#graceTimer === undefined) {
        const arm = (): void => {
          this.#graceTimer = setTimeout(() => {
            if (this.#openReaders === 0 || this.#settled) return;
            if (this.output.paused) return arm();
            this.#log.info(
              { job: this.id, event: "pipe_grace_expired" },
              "output pipes held open after exit; closing",
            );
            for (const r of this.#readers) r.destroy();
          }, this.#graceMs);
          this.#graceTimer.unref();
        };
        arm();
      }
      return;
    }
    this.output.close();
    const lastExit = this.stageExits.find((e) => e.stageIndex === this.#children.length - 1)!;
    if (this.#timedOut) {
      this.#state = "failed";
      this.#finish({
        kind: "error",
        error: new ClawkerdError(
          "timeout",
          `timed out after ${this.spec.timeoutSeconds} s; every stage was killed`,
        ),
      });
      return;
    }
    this.#state = this.#stopped ? "stopped" : lastExit.exitCode === 0 ? "completed" : "failed";
    this.#finish({ kind: "done", exitCode: lastExit.exitCode });
  }

  #finish(result: JobResult): void {
    if (this.#settled) return;
    this.#settled = true;
    clearTimeout(this.#timer);
    clearTimeout(this.#graceTimer);
    this.#settle(result);
  }
}

function spawnError(stage: number, program: string, err: unknown): ClawkerdError {
  const code = (err as NodeJS.ErrnoException).code ?? "error";
  return new ClawkerdError("spawn_failed", `stage ${stage}: cannot run ${JSON.stringify(program)}: ${code}`, {
    cause: err,
  });
}

/** Sends a signal to a process group (falling back to the process); a gone target is ignored. */
export function killGroup(pid: number, signo: number): void {
  try {
    process.kill(-pid, signo);
  } catch {
    try {
      process.kill(pid, signo);
    } catch {
      // already gone
    }
  }
}
