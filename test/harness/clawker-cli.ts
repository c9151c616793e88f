// Runs the real `clawker` CLI (from source, through tsx) as a process, optionally inside a network
// namespace (to reach a control plane that runs there).
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { join } from "node:path";
import { REPO_ROOT } from "./images.js";

/** What a CLI run printed and how it exited. */
export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Options for clawker(). */
export interface CliOptions {
  readonly env?: NodeJS.ProcessEnv;
  /** Run inside this network namespace (nsenter --net). */
  readonly netns?: string;
}

/**
 * Refuses `controlplane up --container` without an admin socket of the caller's: as root its
 * default is the system's /run/clawker/admin.sock, which every other test's CLI dials first when
 * it answers (a CI run's compose test sent its calls to such a control plane: token_inactive).
 */
export function assertPrivateAdminSocket(args: readonly string[], env: NodeJS.ProcessEnv): void {
  const isUpContainer = args[0] === "controlplane" && args[1] === "up" && args.includes("--container");
  if (!isUpContainer || args.includes("--admin-socket") || (env["CLAWKER_ADMIN_SOCKET"] ?? "") !== "") return;
  throw new Error(
    "controlplane up --container in a test needs CLAWKER_ADMIN_SOCKET (or --admin-socket) under the test's own dir, never the system's /run/clawker/admin.sock",
  );
}

/** Runs `clawker <args>` to completion. */
export function clawker(args: readonly string[], options: CliOptions = {}): Promise<CliResult> {
  return clawkerUntil(args, Infinity, options);
}

/**
 * Runs `clawker <args>` and, once `chars` characters of its stdout have arrived, closes the pipe's
 * read end as `| head -c` does (later writes fail EPIPE). Resolves when it has exited.
 */
export function clawkerUntil(
  args: readonly string[],
  chars: number,
  options: CliOptions = {},
): Promise<CliResult> {
  assertPrivateAdminSocket(args, options.env ?? process.env);
  const argv = [
    process.execPath,
    "--import",
    import.meta.resolve("tsx"),
    "--conditions=source",
    join(REPO_ROOT, "packages/cli/src/main.ts"),
    ...args,
  ];
  const [file, ...rest] =
    options.netns === undefined ? argv : ["nsenter", `--net=/run/netns/${options.netns}`, ...argv];
  return new Promise((resolve, reject) => {
    const child = spawn(file!, rest, { env: options.env ?? process.env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => {
      stdout += c;
      if (stdout.length >= chars) child.stdout.destroy();
    });
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/** A `clawker` process still running (e.g. `--follow`): its stdout lines as they come. */
export interface RunningCli {
  readonly child: ChildProcess;
  /** Complete stdout lines so far. */
  readonly lines: string[];
  stderr(): string;
  /** Resolves with the exit code once it has exited. */
  readonly exited: Promise<number | null>;
  /** SIGTERM, and waits for the exit. Idempotent. */
  stop(): Promise<void>;
}

/** Starts `clawker <args>` and leaves it running. */
export function spawnClawker(args: readonly string[], options: CliOptions = {}): RunningCli {
  assertPrivateAdminSocket(args, options.env ?? process.env);
  const argv = [
    "--import",
    import.meta.resolve("tsx"),
    "--conditions=source",
    join(REPO_ROOT, "packages/cli/src/main.ts"),
    ...args,
  ];
  const child = spawn(process.execPath, argv, {
    env: options.env ?? process.env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  let stderr = "";
  createInterface({ input: child.stdout }).on("line", (l) => lines.push(l));
  child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
  const exited = new Promise<number | null>((resolve) => child.once("close", (code) => resolve(code)));
  return {
    child,
    lines,
    stderr: () => stderr,
    exited,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        // A stopped process must run again to take the SIGTERM.
        child.kill("SIGCONT");
        child.kill("SIGTERM");
      }
      await exited;
    },
  };
}
