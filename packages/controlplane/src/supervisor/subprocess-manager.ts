// Starts, watches and stops the helper processes (OAuth2 server, Ory, proxy, DNS gate, eBPF manager).
// Fail-fast: the first unexpected exit is reported once through `crashed`; after beginShutdown()
// exits are expected and never reported. Shutdown is in reverse start order. See README.md.
import { spawn, type ChildProcess, type StdioOptions } from "node:child_process";
import type { Duplex } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import {
  HealthAbortedError,
  HealthTimeoutError,
  HelperExitedError,
  HelperNotOursError,
  SpawnError,
  SupervisorError,
} from "./errors.js";
import { readHelperRecords, writeHelperRecords, type HelperRecord } from "./helper-records.js";
import { LineSplitter, DEFAULT_MAX_LINE_CHARS } from "./line-splitter.js";
import { answersInstance, httpGet, ProbeError, type TlsClientOptions } from "./probes.js";
import { findExecutable } from "./find-executable.js";
import { hasExited, isSameProcess, readProcessIdentity, readSpawnedIdentity } from "./process-identity.js";

/** What to run for a helper. `env` is merged over our environment unless `inheritEnv` is false. */
export interface HelperCommand {
  readonly file: string;
  readonly args?: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
  /** Start from our environment (default true); false passes only `env` (plus nothing else). */
  readonly inheritEnv?: boolean;
  readonly cwd?: string;
  /**
   * Give the helper a lifeline: the read end of a socket pair on fd 3 (named in
   * `CLAWKER_LIFELINE_FD`) whose other end only this process holds. EOF on it means we are gone,
   * also after a SIGKILL that runs no exit hook; a helper that watches it exits then.
   */
  readonly lifeline?: boolean;
  /**
   * The lifeline as a channel the caller talks over (the DNS gate's control channel): fd 3 as with
   * `lifeline`, but not drained; `channel(name)` hands out our end, paused until the caller reads,
   * so nothing the helper writes early is lost.
   */
  readonly channel?: boolean;
  /**
   * SIGKILL the helper when this process dies, however it dies (PR_SET_PDEATHSIG, set by util-linux
   * `setpriv`, which then execs the program): for a helper that cannot watch a lifeline (HAProxy).
   * Without `setpriv` on PATH it starts without one and says so (`helper_no_death_signal`).
   */
  readonly dieWithParent?: boolean;
}

/** The environment variable that tells a helper which fd is its lifeline. */
export const LIFELINE_FD_ENV = "CLAWKER_LIFELINE_FD";
/** The lifeline's fd in the helper (the first after stdin, stdout, stderr). */
export const LIFELINE_FD = 3;

/** The first unexpected exit of a helper, as the daemon receives it. */
export interface HelperCrash {
  readonly name: string;
  readonly pid: number;
  /** Exit code, or null when a signal ended it. */
  readonly code: number | null;
  /** The terminating signal, or null. */
  readonly signal: NodeJS.Signals | null;
}

/** How to poll a helper's health endpoint (ARCHITECTURE.md: 200 ms poll, 30 s budget). */
export interface WaitHealthyOptions {
  readonly url: string;
  readonly intervalMs?: number;
  readonly timeoutMs?: number;
  /** Bound on one probe request, so a helper that accepts but never answers cannot stall a poll. */
  readonly attemptTimeoutMs?: number;
  readonly tls?: TlsClientOptions;
  readonly signal?: AbortSignal;
  /**
   * The instance nonce the helper was started with: a 200 whose JSON body does not carry it as
   * `instance` comes from some other process on that address and fails with HelperNotOursError.
   */
  readonly instance?: string;
}

/** Construction options of SubprocessManager. */
export interface SubprocessManagerOptions {
  readonly logger: Logger;
  /** Grace used by close(): SIGTERM, then SIGKILL after this many ms. */
  readonly graceMs?: number;
  /** Longest forwarded log line before it is cut into pieces. */
  readonly maxLineChars?: number;
  /**
   * Where to record the running helpers (pid, start time, argv; 0600) so that the next instance
   * can kill the ones that outlived a SIGKILL of this one (reapLeftovers). None: no record.
   */
  readonly stateFile?: string;
  /** Told the name of every helper that started (a restart of the same name counts again): metrics. */
  readonly onStarted?: (name: string) => void;
}

/** How shutdown() went: helpers that had to be SIGKILLed, and any that not even SIGKILL removed. */
export interface ShutdownReport {
  readonly forced: readonly string[];
  readonly survived: readonly string[];
}

/** What reapLeftovers() found: helpers of a previous instance it killed, and records it left alone. */
export interface ReapReport {
  readonly killed: readonly HelperRecord[];
  /** Records whose pid is gone or now names another process (recycled): nothing was signalled. */
  readonly skipped: readonly HelperRecord[];
}

/** Default SIGTERM grace for close(). */
export const DEFAULT_GRACE_MS = 8_000;
/** How long to wait for the kernel after SIGKILL before giving up on a process (D state). */
const KILL_WAIT_MS = 1_000;
/** The same for leftovers of a previous instance: not our children, and nothing else waits yet. */
const REAP_WAIT_MS = 5_000;

interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

interface Child {
  readonly name: string;
  readonly proc: ChildProcess;
  /** Undefined when spawn(2) failed. */
  readonly pid: number | undefined;
  /** What /proc said about it right after spawn (for the record file). */
  record: HelperRecord | undefined;
  /** Set once the process exited (or failed to spawn). */
  exit: Exit | undefined;
  /** Set by stop(): its exit is expected, not a crash. */
  stopping: boolean;
  /** Our end of fd 3 when started with `channel`. */
  readonly channel: Duplex | undefined;
  /** Resolves when the process is gone (reaped) or never started. */
  readonly exited: Promise<Exit>;
  /** Resolves once spawn(2) succeeded or failed. */
  readonly spawned: Promise<void>;
  /** Called on every line of output: a waitHealthy() poll asks again at once. */
  readonly onOutput: Set<() => void>;
}

type Level = "trace" | "debug" | "info" | "warn" | "error";

const PINO_LEVELS: readonly [number, Level][] = [
  [50, "error"],
  [40, "warn"],
  [30, "info"],
  [20, "debug"],
  [0, "trace"],
];

const NAMED_LEVELS: Readonly<Record<string, Level>> = {
  trace: "trace",
  debug: "debug",
  info: "info",
  notice: "info",
  warn: "warn",
  warning: "warn",
  error: "error",
  err: "error",
  fatal: "error",
  panic: "error",
  critical: "error",
  crit: "error",
};

/** Supervises helper processes: spawn, log forwarding, crash reporting, health waits, ordered stop. */
export class SubprocessManager {
  /** Resolves with the first unexpected exit of any helper; never rejects; resolves at most once. */
  readonly crashed: Promise<HelperCrash>;

  readonly #log: Logger;
  readonly #graceMs: number;
  readonly #maxLineChars: number;
  readonly #stateFile: string | undefined;
  readonly #children = new Map<string, Child>();
  /** Start order; shutdown walks it backwards. */
  readonly #order: Child[] = [];
  #reportCrash: (crash: HelperCrash) => void;
  #crashReported = false;
  #shuttingDown = false;
  #shutdown: Promise<ShutdownReport> | undefined;
  readonly #onProcessExit = (): void => this.#killAllNow();
  readonly #onStarted: ((name: string) => void) | undefined;
  #exitHookInstalled = false;

  constructor(options: SubprocessManagerOptions) {
    this.#log = options.logger.child({ component: "supervisor" });
    this.#graceMs = options.graceMs ?? DEFAULT_GRACE_MS;
    this.#maxLineChars = options.maxLineChars ?? DEFAULT_MAX_LINE_CHARS;
    this.#stateFile = options.stateFile;
    this.#onStarted = options.onStarted;
    let report!: (crash: HelperCrash) => void;
    this.crashed = new Promise<HelperCrash>((resolve) => (report = resolve));
    this.#reportCrash = report;
    if (process.pid === 1) {
      // Node reaps only the children it spawned (libuv waits per pid); see README.md, "PID 1".
      this.#log.warn(
        { event: "pid1_without_init" },
        "running as PID 1: orphaned grandchildren are not reaped; run the container with --init",
      );
    }
  }

  /** True once beginShutdown() (or shutdown/close) was called. */
  get isShuttingDown(): boolean {
    return this.#shuttingDown;
  }

  /** Pids of the helpers still running, by name. */
  running(): Map<string, number> {
    const out = new Map<string, number>();
    for (const c of this.#order) if (c.exit === undefined && c.pid !== undefined) out.set(c.name, c.pid);
    return out;
  }

  /**
   * Spawns a helper in its own process group and resolves with its pid once it runs. Rejects with
   * SpawnError (reason executable_not_found / spawn_failed) when it cannot be spawned.
   */
  async start(name: string, command: HelperCommand): Promise<number> {
    if (this.#shuttingDown) {
      throw new SupervisorError("shutting_down", name, `cannot start helper ${name}: shutting down`);
    }
    if (this.#children.has(name)) {
      throw new SupervisorError("duplicate_helper", name, `helper ${name} was already started`);
    }
    const env: NodeJS.ProcessEnv =
      command.inheritEnv === false ? { ...command.env } : { ...process.env, ...(command.env ?? {}) };
    const stdio: StdioOptions = ["ignore", "pipe", "pipe"];
    const wantsChannel = command.channel === true;
    if (command.lifeline === true || wantsChannel) {
      // A socket pair: libuv marks our end close-on-exec, so no other child inherits it and the
      // kernel closes it when we die, however we die. The helper sees EOF.
      stdio.push("pipe");
      env[LIFELINE_FD_ENV] = String(LIFELINE_FD);
    } else {
      delete env[LIFELINE_FD_ENV];
    }
    // detached: its own process group, so a terminal's Ctrl-C reaches only us and we stop helpers
    // in order; it also lets us signal the helper together with whatever it spawned.
    const launch = this.#launchOf(name, command, env);
    let proc: ChildProcess;
    try {
      proc = spawn(launch.file, launch.args, {
        stdio,
        detached: true,
        env,
        ...(command.cwd === undefined ? {} : { cwd: command.cwd }),
      });
    } catch (err) {
      throw new SpawnError(name, command.file, err as NodeJS.ErrnoException);
    }
    let markExited!: (exit: Exit) => void;
    let markSpawned!: () => void;
    // A socket pair end (a Duplex at runtime, whatever the stdio typing says).
    const lifeline = proc.stdio[LIFELINE_FD] as Duplex | null | undefined;
    const child: Child = {
      name,
      proc,
      pid: proc.pid,
      record: undefined,
      exit: undefined,
      stopping: false,
      channel: wantsChannel ? (lifeline ?? undefined) : undefined,
      exited: new Promise<Exit>((resolve) => (markExited = resolve)),
      spawned: new Promise<void>((resolve) => (markSpawned = resolve)),
      onOutput: new Set(),
    };
    // Registered before 'spawn' so a shutdown that starts meanwhile still stops it.
    this.#children.set(name, child);
    this.#order.push(child);
    this.#installExitHook();
    this.#forward(child, "stdout");
    this.#forward(child, "stderr");
    // A bare lifeline is never written to and whatever the helper sends on it is dropped; a channel
    // stays paused for its caller.
    lifeline?.on("error", () => undefined);
    if (!wantsChannel) lifeline?.resume();
    proc.once("exit", (code, signal) => {
      if (child.exit !== undefined) return; // spawn failed: already settled, not a crash
      child.exit = { code, signal };
      lifeline?.destroy();
      // Whatever the helper left in its group dies with it (the leader was reaped just now).
      this.#signalGroup(child, "SIGKILL");
      this.#onExit(child, code, signal);
      this.#saveRecords();
      markExited(child.exit);
    });

    try {
      await new Promise<void>((resolve, reject) => {
        proc.once("spawn", resolve);
        proc.once("error", reject);
      });
    } catch (err) {
      child.exit = { code: null, signal: null };
      markExited(child.exit);
      markSpawned();
      // A failed start leaves no trace: the name may be used again.
      this.#children.delete(name);
      this.#order.splice(this.#order.indexOf(child), 1);
      const spawnError = new SpawnError(name, command.file, err as NodeJS.ErrnoException);
      this.#log.error({ helper: name, file: command.file, err: spawnError }, "helper spawn failed");
      throw spawnError;
    }
    markSpawned();
    const pid = proc.pid!;
    proc.on("error", (err) => this.#log.warn({ helper: name, pid, err }, "helper process error"));
    this.#log.info({ helper: name, pid, file: command.file, args: command.args ?? [] }, "helper started");
    this.#onStarted?.(name);
    if (this.#stateFile !== undefined) {
      // 'spawn' fires after execve succeeded, so /proc already shows the helper's own argv (or,
      // for a wrapper script that execs its program right away, one of the two).
      const identity = await readSpawnedIdentity(pid, undefined, launch.wrapper);
      if (identity !== undefined) child.record = { name, ...identity };
      // A helper we cannot find again after a SIGKILL of ours is one we do not run.
      try {
        this.#saveRecords(true);
      } catch (err) {
        this.#signalGroup(child, "SIGKILL");
        await child.exited;
        throw new SupervisorError(
          "record_failed",
          name,
          `cannot record helper ${name} in ${this.#stateFile}`,
          {
            cause: err,
          },
        );
      }
    }
    return pid;
  }

  /**
   * What to exec for `command`: itself, or for `dieWithParent` `setpriv --pdeathsig KILL --` and
   * the program's full path (found here, so a missing program is still executable_not_found).
   */
  #launchOf(
    name: string,
    command: HelperCommand,
    env: NodeJS.ProcessEnv,
  ): { file: string; args: string[]; wrapper?: string } {
    const args = [...(command.args ?? [])];
    if (command.dieWithParent !== true) return { file: command.file, args };
    const wrapper = findExecutable("setpriv", env);
    if (wrapper === undefined) {
      this.#log.warn(
        { helper: name, event: "helper_no_death_signal" },
        "setpriv (util-linux) not on PATH: the helper would outlive a SIGKILL of this process",
      );
      return { file: command.file, args };
    }
    const program = findExecutable(command.file, env);
    if (program === undefined) {
      const cause = Object.assign(new Error(`${command.file}: not found`), { code: "ENOENT" });
      throw new SpawnError(name, command.file, cause);
    }
    return { file: wrapper, args: ["--pdeathsig", "KILL", "--", program, ...args], wrapper };
  }

  /**
   * Our end of a helper's fd 3 when it was started with `channel` (a socket pair: newline-delimited
   * or any protocol the two agree on); undefined otherwise or once the name is gone. It ends when
   * the helper exits.
   */
  channel(name: string): Duplex | undefined {
    return this.#children.get(name)?.channel;
  }

  /**
   * Kills the helpers a previous instance recorded in the state file and left running (it was
   * SIGKILLed): only a process whose pid, start time, boot and argv all still match its record, so a
   * recycled pid is never signalled. Call it before the first start(). Each kill is logged
   * (`leftover_killed`); resolves once they are gone (bounded) and the record is cleared.
   */
  async reapLeftovers(): Promise<ReapReport> {
    if (this.#stateFile === undefined) return { killed: [], skipped: [] };
    if (this.#order.length > 0) {
      throw new SupervisorError("already_started", "", "reapLeftovers() must run before any helper starts");
    }
    const file = this.#stateFile;
    const { records, problem } = readHelperRecords(file);
    if (problem !== undefined) {
      this.#log.warn(
        { event: "helper_record_unreadable", file, problem },
        "helper record unreadable; not used",
      );
    }
    const killed: HelperRecord[] = [];
    const skipped: HelperRecord[] = [];
    for (const record of records) {
      if (!isSameProcess(record)) {
        skipped.push(record);
        continue;
      }
      // It leads its own group (spawned detached), and while it lives no other group can have its
      // pid as id: the group signal reaches it and whatever it spawned, nothing else.
      if (!signalPid(-record.pid, "SIGKILL")) signalPid(record.pid, "SIGKILL");
      killed.push(record);
      this.#log.warn(
        { event: "leftover_killed", helper: record.name, pid: record.pid, file },
        "killed a helper left running by a previous instance",
      );
    }
    if (skipped.length > 0) {
      this.#log.info(
        { event: "leftover_skipped", helpers: skipped.map((r) => ({ helper: r.name, pid: r.pid })) },
        "recorded helpers are gone or their pids now name other processes; nothing signalled",
      );
    }
    const deadline = Date.now() + REAP_WAIT_MS;
    // Until each is a zombie or gone, not merely unlike its record: an exiting process has lost its
    // argv but still holds its sockets, and the helper started next may need the same port.
    while (killed.some((r) => !hasExited(r)) && Date.now() < deadline) await sleep(20);
    const stuck = killed.filter((r) => !hasExited(r));
    if (stuck.length > 0) {
      throw new SupervisorError(
        "leftover_survived",
        stuck.map((r) => r.name).join(","),
        `helpers of a previous instance survived SIGKILL: ${stuck.map((r) => `${r.name} (pid ${r.pid})`).join(", ")}`,
      );
    }
    writeHelperRecords(file, []);
    return { killed, skipped };
  }

  /** From now on helper exits are expected: nothing more is reported through `crashed`. Idempotent. */
  beginShutdown(): void {
    if (this.#shuttingDown) return;
    this.#shuttingDown = true;
    this.#log.info({ event: "supervisor_shutdown" }, "helper exits are expected from now on");
  }

  /**
   * Stops every helper in reverse start order: SIGTERM to its process group, SIGKILL to whichever
   * has not exited when the one deadline (`timeoutMs` from now, shared by all helpers) passes.
   * Resolves, once all are gone, with the helpers that needed SIGKILL. Later calls share the first.
   */
  shutdown(timeoutMs: number = this.#graceMs): Promise<ShutdownReport> {
    this.beginShutdown();
    this.#shutdown ??= this.#stopAll(Date.now() + timeoutMs);
    return this.#shutdown;
  }

  /**
   * Stops one helper while the others keep running (the egress proxy on FirewallRemove): SIGTERM
   * to its process group, SIGKILL when it has not exited after `graceMs`. Its exit is expected,
   * never a crash, and once it is gone the name may be started again. Resolves with how it ended
   * (`stopped` on SIGTERM, `killed`, or `survived` even SIGKILL); an unknown name is `stopped`.
   */
  async stop(name: string, graceMs: number = this.#graceMs): Promise<"stopped" | "killed" | "survived"> {
    const child = this.#children.get(name);
    if (child === undefined) return "stopped";
    child.stopping = true;
    const outcome = await this.#stop(child, Date.now() + graceMs);
    if (outcome !== "survived" && this.#children.get(name) === child) {
      this.#children.delete(name);
      this.#order.splice(this.#order.indexOf(child), 1);
    }
    return outcome;
  }

  /** Idempotent close: shutdown with the configured grace. */
  async close(): Promise<void> {
    await this.shutdown(this.#graceMs);
  }

  /**
   * Sends `signal` to every running helper's process group (e.g. SIGHUP to reload). A helper that
   * dies of it before beginShutdown() is a crash like any other exit.
   */
  forwardSignal(signal: NodeJS.Signals): void {
    for (const child of this.#order) {
      if (child.exit === undefined && child.pid !== undefined) {
        this.#log.info({ helper: child.name, pid: child.pid, signal }, "forwarding signal");
        this.#signalGroup(child, signal);
      }
    }
  }

  /**
   * Polls `url` until it answers 200. Rejects with HelperExitedError when the helper exits first,
   * HealthTimeoutError when the budget runs out, HealthAbortedError when `signal` aborts, and
   * HelperNotOursError when `instance` is given and a 200 does not carry it.
   */
  async waitHealthy(name: string, options: WaitHealthyOptions): Promise<void> {
    const child = this.#children.get(name);
    if (child === undefined) throw new SupervisorError("unknown_helper", name, `no helper named ${name}`);
    const { url, intervalMs = 200, timeoutMs = 30_000, tls, signal, instance } = options;
    const attemptTimeoutMs = options.attemptTimeoutMs ?? Math.min(timeoutMs, 2_000);
    if (signal?.aborted === true) throw new HealthAbortedError(name, signal.reason);
    if (child.exit !== undefined) throw new HelperExitedError(name, child.exit.code, child.exit.signal);

    const stop = new AbortController();
    let attempts = 0;
    let lastError: unknown;
    let budget: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const failure = new Promise<never>((_, reject) => {
      void child.exited.then((e) => reject(new HelperExitedError(name, e.code, e.signal)));
      budget = setTimeout(
        () => reject(new HealthTimeoutError(name, timeoutMs, attempts, lastError)),
        timeoutMs,
      );
      onAbort = () => reject(new HealthAbortedError(name, signal?.reason));
      signal?.addEventListener("abort", onAbort, { once: true });
    });
    const poll = async (): Promise<void> => {
      for (;;) {
        attempts++;
        let answer;
        try {
          const attemptSignal = AbortSignal.any([stop.signal, AbortSignal.timeout(attemptTimeoutMs)]);
          answer = await httpGet(url, { tls, signal: attemptSignal });
        } catch (err) {
          if (stop.signal.aborted) return;
          lastError = err;
        }
        if (answer?.status === 200) {
          // Another process on the address (an orphan of a previous instance) would pass a bare 200.
          if (instance === undefined || answersInstance(answer.body, instance)) return;
          throw new HelperNotOursError(name, url);
        }
        if (answer !== undefined) {
          lastError = new ProbeError("unexpected_status", `GET ${url} answered ${answer.status}`);
        }
        // Helpers log when they start listening: a line of output asks again at once, so the
        // wait ends when the helper is up, not up to a poll interval later.
        if (!(await this.#pauseUntilOutput(child, intervalMs, stop.signal))) return;
      }
    };
    try {
      await Promise.race([failure, poll()]);
      this.#log.info({ helper: name, attempts }, "helper healthy");
      this.#refreshRecord(child);
    } finally {
      stop.abort();
      clearTimeout(budget);
      if (onAbort !== undefined) signal?.removeEventListener("abort", onAbort);
    }
  }

  /** Waits `ms` or until the helper writes a line, whichever is first; false once `signal` aborted. */
  async #pauseUntilOutput(child: Child, ms: number, signal: AbortSignal): Promise<boolean> {
    const woken = new AbortController();
    const wake = (): void => woken.abort();
    child.onOutput.add(wake);
    try {
      await sleep(ms, undefined, { signal: AbortSignal.any([signal, woken.signal]) });
    } catch {
      // Woken by output, or stopped: which one is told by `signal`.
    } finally {
      child.onOutput.delete(wake);
    }
    return !signal.aborted;
  }

  #onExit(child: Child, code: number | null, signal: NodeJS.Signals | null): void {
    const pid = child.pid;
    if (this.#shuttingDown || child.stopping) {
      this.#log.info({ helper: child.name, pid, code, signal }, "helper stopped");
      return;
    }
    if (this.#crashReported) {
      this.#log.error(
        { helper: child.name, pid, code, signal },
        "helper exited unexpectedly (not the first)",
      );
      return;
    }
    this.#crashReported = true;
    this.#log.error(
      { helper: child.name, pid, code, signal, event: "helper_crash" },
      "helper exited unexpectedly",
    );
    this.#reportCrash({ name: child.name, pid: pid ?? -1, code, signal });
  }

  async #stopAll(deadline: number): Promise<ShutdownReport> {
    const forced: string[] = [];
    const survived: string[] = [];
    for (const child of [...this.#order].reverse()) {
      const outcome = await this.#stop(child, deadline);
      if (outcome !== "stopped") forced.push(child.name);
      if (outcome === "survived") survived.push(child.name);
    }
    this.#removeExitHook();
    return { forced, survived };
  }

  async #stop(child: Child, deadline: number): Promise<"stopped" | "killed" | "survived"> {
    await child.spawned; // a start() still in flight
    if (child.exit !== undefined || child.pid === undefined) return "stopped";
    this.#signalGroup(child, "SIGTERM");
    if (await settlesWithin(child.exited, Math.max(0, deadline - Date.now()))) return "stopped";
    this.#log.warn(
      { helper: child.name, pid: child.pid, event: "helper_forced_kill" },
      "helper ignored SIGTERM until the deadline; sending SIGKILL",
    );
    this.#signalGroup(child, "SIGKILL");
    if (await settlesWithin(child.exited, KILL_WAIT_MS)) return "killed";
    this.#log.error({ helper: child.name, pid: child.pid }, "helper survived SIGKILL (uninterruptible?)");
    return "survived";
  }

  /**
   * Records the argv the helper runs under now: a wrapper that exec()s the real program (a shell
   * script around an Ory binary) changed it after spawn; the program that answers health is the
   * one a later reapLeftovers must recognise. Same pid and start time: still the same process.
   */
  #refreshRecord(child: Child): void {
    const before = child.record;
    if (before === undefined || child.exit !== undefined) return;
    const now = readProcessIdentity(before.pid);
    if (now === undefined || now.startTime !== before.startTime || now.bootId !== before.bootId) return;
    if (now.cmdline.join("\0") === before.cmdline.join("\0")) return;
    child.record = { name: child.name, ...now };
    this.#saveRecords();
  }

  /** Rewrites the record file with the helpers still running; `strict` rethrows a failed write. */
  #saveRecords(strict = false): void {
    if (this.#stateFile === undefined) return;
    const records = this.#order.flatMap((c) =>
      c.exit === undefined && c.record !== undefined ? [c.record] : [],
    );
    try {
      writeHelperRecords(this.#stateFile, records);
    } catch (err) {
      if (strict) throw err;
      this.#log.error(
        { err, event: "helper_record_failed", file: this.#stateFile },
        "cannot update the helper record",
      );
    }
  }

  /** Signals the helper's process group (it leads one: detached), falling back to the pid alone. */
  #signalGroup(child: Child, signal: NodeJS.Signals): void {
    if (child.pid === undefined) return;
    try {
      process.kill(-child.pid, signal);
    } catch {
      try {
        if (child.exit === undefined) process.kill(child.pid, signal);
      } catch {
        // Already gone: nothing to signal.
      }
    }
  }

  #forward(child: Child, stream: "stdout" | "stderr"): void {
    const source = child.proc[stream];
    if (source === null) return;
    const log = this.#log.child({ helper: child.name, stream });
    const splitter = new LineSplitter((line, truncated) => {
      logLine(log, line, truncated);
      for (const wake of child.onOutput) wake();
    }, this.#maxLineChars);
    source.on("data", (chunk: Buffer) => splitter.push(chunk));
    source.once("end", () => splitter.end());
    source.on("error", () => undefined);
  }

  /** Last resort when our process exits without a drain: no helper may outlive us unsupervised. */
  #killAllNow(): void {
    for (const child of this.#order) if (child.exit === undefined) this.#signalGroup(child, "SIGKILL");
  }

  #installExitHook(): void {
    if (this.#exitHookInstalled) return;
    this.#exitHookInstalled = true;
    process.on("exit", this.#onProcessExit);
  }

  #removeExitHook(): void {
    if (!this.#exitHookInstalled) return;
    this.#exitHookInstalled = false;
    process.off("exit", this.#onProcessExit);
  }
}

/** Sends `signal` to a pid (negative: a process group); false when there was nothing to signal. */
function signalPid(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** True if `p` settles within `ms` (the timer never keeps the loop alive past the settle). */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([p.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Forwards one line of helper output. A line holding a JSON object (Hydra, Kratos, pino helpers)
 * is nested under `line` with its own message and level; anything else becomes the message.
 */
function logLine(log: Logger, line: string, truncated: boolean): void {
  const extra = truncated ? { truncated: true } : {};
  if (line.startsWith("{")) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      parsed = undefined;
    }
    if (typeof parsed === "object" && parsed !== null && !Array.isArray(parsed)) {
      const record = parsed as Record<string, unknown>;
      const msg = record["msg"] ?? record["message"];
      log[levelOf(record["level"])](
        { line: record, ...extra },
        typeof msg === "string" ? msg : "helper output",
      );
      return;
    }
  }
  log.info(extra, line);
}

/** Maps a child's level (pino number or logrus/zap name) to ours; unknown means info. */
function levelOf(level: unknown): Level {
  if (typeof level === "number") return PINO_LEVELS.find(([min]) => level >= min)?.[1] ?? "info";
  if (typeof level === "string") return NAMED_LEVELS[level.toLowerCase()] ?? "info";
  return "info";
}
