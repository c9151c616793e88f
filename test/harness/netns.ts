// Network namespaces for tests: create/delete them, and run commands or long-running processes
// inside one with `nsenter --net=/run/netns/<name>`. A private dockerd lives in such a netns, so
// a process that `--network host` containers must reach runs there too (HOST-NOTES).
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { stat } from "node:fs/promises";
import { promisify } from "node:util";
import { waitFor } from "./wait-for.js";

const execFileP = promisify(execFile);

/** A netns by name, or anything that carries one (a PrivateDocker). */
export type NetnsRef = string | { readonly netnsName: string };

/** `/run/netns/<name>`: the bind mount `ip netns add` creates. */
export function netnsPath(name: string): string {
  return `/run/netns/${name}`;
}

/** Creates a named netns with `lo` up. */
export async function addNetns(name: string): Promise<void> {
  await execFileP("ip", ["netns", "add", name]);
  try {
    await execFileP("ip", ["-n", name, "link", "set", "lo", "up"]);
  } catch (err) {
    await deleteNetns(name);
    throw err;
  }
}

/** Deletes a named netns if it exists. */
export async function deleteNetns(name: string): Promise<void> {
  if ((await netnsInode(name).catch(() => undefined)) === undefined) return;
  await execFileP("ip", ["netns", "delete", name]);
}

/** The nsfs inode of a named netns: equals the number in a member's `/proc/<pid>/ns/net` link. */
export async function netnsInode(name: string): Promise<number> {
  return (await stat(netnsPath(name))).ino;
}

/** Options for runInNetns. */
export interface RunInNetnsOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

/**
 * Runs a command to completion inside a netns. Resolves with its output; rejects (execFile's
 * error, with `stdout`, `stderr`, `code`) when it exits non-zero or times out.
 */
export async function runInNetns(
  netns: NetnsRef,
  command: string,
  args: readonly string[] = [],
  options: RunInNetnsOptions = {},
): Promise<{ stdout: string; stderr: string }> {
  return execFileP("nsenter", [`--net=${netnsPath(nameOf(netns))}`, command, ...args], {
    encoding: "utf8",
    maxBuffer: 16 * 1024 * 1024,
    ...(options.env === undefined ? {} : { env: options.env }),
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    ...(options.timeoutMs === undefined ? {} : { timeout: options.timeoutMs }),
    ...(options.signal === undefined ? {} : { signal: options.signal }),
  });
}

/** Options for NetnsProcess. */
export interface NetnsProcessOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly cwd?: string;
  /** Time between SIGTERM and SIGKILL on close (default 5 s). */
  readonly stopGraceMs?: number;
}

/** How a process ended. */
export interface ProcessExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

// Output kept per stream; older bytes are dropped.
const MAX_OUTPUT = 1024 * 1024;

/**
 * A long-running process inside a netns (e.g. a server that `--network host` containers dial).
 * Collects stdout/stderr; `close()` sends SIGTERM, then SIGKILL after the grace, and waits.
 */
export class NetnsProcess {
  #child: ChildProcess | undefined;
  #exit: Promise<ProcessExit> | undefined;
  #stdout = "";
  #stderr = "";
  #closing: Promise<void> | undefined;
  readonly #netns: string;
  readonly #command: string;
  readonly #args: readonly string[];
  readonly #options: NetnsProcessOptions;

  constructor(
    netns: NetnsRef,
    command: string,
    args: readonly string[] = [],
    options: NetnsProcessOptions = {},
  ) {
    this.#netns = nameOf(netns);
    this.#command = command;
    this.#args = args;
    this.#options = options;
  }

  /** Everything the process wrote to stdout so far (last 1 MiB). */
  get stdout(): string {
    return this.#stdout;
  }

  /** Everything the process wrote to stderr so far (last 1 MiB). */
  get stderr(): string {
    return this.#stderr;
  }

  /** The process id (nsenter execs the command, so it is the command's pid). */
  get pid(): number {
    const pid = this.#child?.pid;
    if (pid === undefined) throw new Error("NetnsProcess not started");
    return pid;
  }

  /** Resolves when the process has exited. */
  get exited(): Promise<ProcessExit> {
    if (this.#exit === undefined) throw new Error("NetnsProcess not started");
    return this.#exit;
  }

  /** Spawns the process; resolves once it runs. Aborting `signal` later closes it. */
  async start(signal?: AbortSignal): Promise<void> {
    if (this.#child !== undefined) throw new Error("NetnsProcess.start called twice");
    signal?.throwIfAborted();
    const child = spawn("nsenter", [`--net=${netnsPath(this.#netns)}`, this.#command, ...this.#args], {
      stdio: ["ignore", "pipe", "pipe"],
      ...(this.#options.env === undefined ? {} : { env: this.#options.env }),
      ...(this.#options.cwd === undefined ? {} : { cwd: this.#options.cwd }),
    });
    this.#child = child;
    child.stdout
      ?.setEncoding("utf8")
      .on("data", (s: string) => (this.#stdout = (this.#stdout + s).slice(-MAX_OUTPUT)));
    child.stderr
      ?.setEncoding("utf8")
      .on("data", (s: string) => (this.#stderr = (this.#stderr + s).slice(-MAX_OUTPUT)));
    this.#exit = new Promise((resolve) => child.once("exit", (code, sig) => resolve({ code, signal: sig })));
    await new Promise<void>((resolve, reject) => {
      child.once("spawn", resolve);
      child.once("error", reject);
    });
    signal?.addEventListener("abort", () => void this.close(), { once: true });
  }

  /** Waits until stdout matches `pattern` (fails early if the process exits). */
  async waitForOutput(pattern: RegExp, timeoutMs = 10_000): Promise<RegExpMatchArray> {
    let exited = false;
    void this.exited.then(() => (exited = true));
    const match = await waitFor(
      () => {
        const m = this.#stdout.match(pattern);
        if (m !== null) return m;
        if (exited) return "exited" as const;
        return undefined;
      },
      { timeoutMs, what: `output matching ${String(pattern)}` },
    );
    if (match === "exited") {
      throw new Error(
        `process exited before printing ${String(pattern)}; stderr: ${this.#stderr.slice(-2000)}`,
      );
    }
    return match;
  }

  /** Stops the process (SIGTERM, SIGKILL after the grace) and waits for it. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#stop();
    return this.#closing;
  }

  async #stop(): Promise<void> {
    const child = this.#child;
    const exit = this.#exit;
    if (child === undefined || exit === undefined) return;
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    let timer: NodeJS.Timeout | undefined;
    const done = await Promise.race([
      exit.then(() => true),
      new Promise<false>(
        (resolve) => (timer = setTimeout(() => resolve(false), this.#options.stopGraceMs ?? 5_000)),
      ),
    ]);
    clearTimeout(timer);
    if (!done) {
      child.kill("SIGKILL");
      await exit;
    }
  }
}

function nameOf(netns: NetnsRef): string {
  return typeof netns === "string" ? netns : netns.netnsName;
}
