// Starting and stopping the daemon process: resolve its executable, spawn it detached with its
// output appended to a log file, stop it (SIGTERM, then SIGKILL after a grace) only while its pid
// still names the very process that was started.
import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { open, readFile } from "node:fs/promises";
import { delimiter, isAbsolute, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { companionDaemon } from "./companion-daemon.js";
import { DEFAULT_DAEMON } from "./defaults.js";
import { CliError, ExitCode } from "./exit-codes.js";
import { isSameProcess, type ProcessIdentity } from "./process-identity.js";

/** The command that runs the daemon: `file` with `args` before the daemon's own. */
export interface DaemonCommand {
  readonly file: string;
  readonly args: readonly string[];
  /** The resolved daemon entry (the script or executable). */
  readonly entry: string;
}

/**
 * Resolves the daemon: `explicit` (--daemon), else `$CLAWKER_CP_BIN`, else the clawker-cp installed
 * with this CLI (companion-daemon.ts), else `clawker-cp` on PATH.
 * A `.js`/`.mjs` entry runs under this Node (process.execPath); a `.ts` entry under this Node
 * with tsx and the `source` condition (a source checkout without a build).
 */
export function resolveDaemon(
  explicit: string | undefined,
  env: NodeJS.ProcessEnv,
  cwd = process.cwd(),
): DaemonCommand {
  const given = explicit ?? (env["CLAWKER_CP_BIN"] === "" ? undefined : env["CLAWKER_CP_BIN"]);
  const name = given ?? companionDaemon() ?? DEFAULT_DAEMON;
  const entry = name.includes("/") ? (isAbsolute(name) ? name : resolve(cwd, name)) : findOnPath(name, env);
  if (entry === undefined) {
    throw new CliError(
      ExitCode.error,
      `cannot find ${name} on PATH (pass --daemon PATH or set CLAWKER_CP_BIN; in a checkout: npm run build)`,
    );
  }
  try {
    accessSync(entry, constants.R_OK);
  } catch (err) {
    throw new CliError(ExitCode.error, `daemon ${entry} is not readable`, { cause: err });
  }
  if (/\.(c|m)?js$/.test(entry)) return { file: process.execPath, args: [entry], entry };
  if (/\.(c|m)?ts$/.test(entry)) {
    return { file: process.execPath, args: ["--import", "tsx", "--conditions=source", entry], entry };
  }
  return { file: entry, args: [], entry };
}

function findOnPath(name: string, env: NodeJS.ProcessEnv): string | undefined {
  for (const dir of (env["PATH"] ?? "").split(delimiter)) {
    if (dir === "") continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Spawns the daemon detached (own process group), stdout+stderr appended to `logFile`. */
export async function spawnDaemon(
  command: DaemonCommand,
  env: NodeJS.ProcessEnv,
  logFile: string,
): Promise<ChildProcess> {
  const log = await open(logFile, "a", 0o600);
  try {
    await log.write(`--- clawker controlplane up ${new Date().toISOString()}: ${command.entry}\n`);
    const child = spawn(command.file, [...command.args], {
      detached: true,
      stdio: ["ignore", log.fd, log.fd],
      env,
    });
    await new Promise<void>((resolveSpawn, reject) => {
      child.once("spawn", resolveSpawn);
      child.once("error", (err) =>
        reject(new CliError(ExitCode.error, `cannot start ${command.entry}: ${err.message}`, { cause: err })),
      );
    });
    return child;
  } finally {
    // The child holds its own copy of the descriptor.
    await log.close();
  }
}

/** The last `lines` lines of a file (empty when it cannot be read). */
export async function tailOf(path: string, lines = 20): Promise<string[]> {
  try {
    const text = await readFile(path, "utf8");
    return text.trimEnd().split("\n").slice(-lines);
  } catch {
    return [];
  }
}

/** How a stop ended. */
export interface StopResult {
  readonly killed: boolean;
  readonly elapsedMs: number;
}

/**
 * Sends SIGTERM to the process `identity` names, waits up to `timeoutMs` for it to exit, then
 * SIGKILLs it (calling `onKill` first) and waits up to 5 s more. Each signal goes out only while
 * the pid still names that process (same start time and argv): once it has exited, its pid may
 * already belong to someone else. Throws CliError when it will not die.
 */
export async function stopProcess(
  identity: ProcessIdentity,
  timeoutMs: number,
  onKill: () => void = () => {},
): Promise<StopResult> {
  const started = Date.now();
  const { pid } = identity;
  if (!isSameProcess(identity) || !signal(pid, "SIGTERM")) return { killed: false, elapsedMs: 0 };
  if (await waitExit(identity, timeoutMs)) return { killed: false, elapsedMs: Date.now() - started };
  onKill();
  if (!isSameProcess(identity)) return { killed: false, elapsedMs: Date.now() - started };
  signal(pid, "SIGKILL");
  if (await waitExit(identity, 5_000)) return { killed: true, elapsedMs: Date.now() - started };
  throw new CliError(ExitCode.error, `process ${pid} did not exit after SIGKILL`);
}

function signal(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ESRCH") return false;
    throw new CliError(ExitCode.error, `cannot signal process ${pid}: ${code ?? String(err)}`, {
      cause: err,
    });
  }
}

/** True once the process is gone (a zombie counts as gone: it holds nothing and runs nothing). */
async function waitExit(identity: ProcessIdentity, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!isSameProcess(identity)) return true;
    await sleep(50);
  }
  return !isSameProcess(identity);
}
