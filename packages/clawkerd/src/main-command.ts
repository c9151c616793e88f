// The container's main command, started on AgentReady: the argv clawkerd was given after its own
// options (the image's CMD when clawkerd is the ENTRYPOINT), else the control plane's default_cmd
// through `/bin/sh -c`. It runs with privileges dropped (CLAWKERD_RUN_AS, default 1000:1000 when
// clawkerd is root), in its own process group, with clawkerd's stdio (so `docker logs` shows
// it). SIGTERM/SIGINT to clawkerd are forwarded to its group; its exit ends clawkerd with the
// same code (128 + signal number when a signal killed it, as a shell reports it).
import { spawn, type ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { constants as osConstants } from "node:os";
import { ClawkerdError } from "./errors.js";
import { killGroup } from "./job.js";
import type { Logger } from "./log.js";

/** The uid/gid the main command runs as, or undefined to keep clawkerd's. */
export interface RunAs {
  readonly uid: number;
  readonly gid: number;
}

/** Parses CLAWKERD_RUN_AS (`uid:gid`); undefined/"" picks 1000:1000 as root, else clawkerd's own ids. */
export function parseRunAs(raw: string | undefined, isRoot: boolean): RunAs | undefined {
  if (raw === undefined || raw === "") return isRoot ? { uid: 1000, gid: 1000 } : undefined;
  const m = /^(\d{1,10}):(\d{1,10})$/.exec(raw);
  if (m === null)
    throw new ClawkerdError(
      "bootstrap_malformed",
      `CLAWKERD_RUN_AS must be uid:gid, got ${JSON.stringify(raw)}`,
    );
  return { uid: Number(m[1]), gid: Number(m[2]) };
}

/** Options of the main command. */
export interface MainCommandOptions {
  readonly log: Logger;
  /** argv from clawkerd's command line; empty means use default_cmd. */
  readonly argv: readonly string[];
  readonly runAs: RunAs | undefined;
  readonly env: Readonly<Record<string, string>>;
}

/** The main command's lifecycle. Emits `exit` with the code clawkerd should exit with. */
export class MainCommand extends EventEmitter<{ exit: [number] }> {
  #child: ChildProcess | undefined;
  #exitCode: number | undefined;
  readonly #o: MainCommandOptions;

  constructor(options: MainCommandOptions) {
    super();
    this.#o = options;
  }

  /** True while the main command runs. */
  get isRunning(): boolean {
    return this.#child !== undefined && this.#exitCode === undefined;
  }

  /** True once start() has been accepted (running or exited). */
  get isStarted(): boolean {
    return this.#child !== undefined;
  }

  /**
   * Starts the command once; later calls are no-ops returning false. Resolves true when it runs;
   * rejects ClawkerdError spawn_failed / invalid_request (nothing to run).
   */
  async start(defaultCmd: string): Promise<boolean> {
    if (this.#child !== undefined) return false;
    const argv =
      this.#o.argv.length > 0
        ? [...this.#o.argv]
        : defaultCmd.trim() !== ""
          ? ["/bin/sh", "-c", defaultCmd]
          : [];
    if (argv.length === 0)
      throw new ClawkerdError("invalid_request", "no main command: no argv and an empty default_cmd");
    const runAs = this.#o.runAs;
    let child: ChildProcess;
    try {
      child = spawn(argv[0]!, argv.slice(1), {
        stdio: "inherit",
        env: { ...this.#o.env },
        detached: true,
        ...(runAs === undefined ? {} : { uid: runAs.uid, gid: runAs.gid }),
      });
    } catch (err) {
      throw new ClawkerdError(
        "spawn_failed",
        `cannot run the main command: ${(err as NodeJS.ErrnoException).code ?? "error"}`,
        { cause: err },
      );
    }
    this.#child = child;
    if (child.pid === undefined) {
      const err = await new Promise<Error>((resolve) => child.once("error", resolve));
      this.#exitCode = 127;
      throw new ClawkerdError(
        "spawn_failed",
        `cannot run the main command: ${(err as NodeJS.ErrnoException).code ?? "error"}`,
        { cause: err },
      );
    }
    this.#o.log.info(
      { pid: child.pid, argc: argv.length, runAs, event: "main_started" },
      "main command started",
    );
    child.once("exit", (code, signal) => {
      this.#exitCode = code ?? 128 + (signal === null ? 0 : (osConstants.signals[signal] ?? 0));
      this.#o.log.info(
        { code, signal, exitCode: this.#exitCode, event: "main_exited" },
        "main command exited",
      );
      this.emit("exit", this.#exitCode);
    });
    return true;
  }

  /** Forwards a signal to the main command's process group; false when nothing runs. */
  forward(signal: NodeJS.Signals): boolean {
    const pid = this.#child?.pid;
    if (pid === undefined || !this.isRunning) return false;
    killGroup(pid, osConstants.signals[signal]);
    return true;
  }
}
