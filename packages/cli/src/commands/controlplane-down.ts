// `clawker controlplane down`: stop the daemon by its pid file, only once the pid is proven to
// still name the process `up` started; idempotent.
import { FORMAT_FLAG, parseDuration, str, type CommandSpec, type FlagValues } from "../command-spec.js";
import { dockerClient } from "@clawker/adminclient";
import {
  dockerError,
  findCpContainer,
  inspectCp,
  type CpContainer,
  type DockerClient,
} from "../cp-container.js";
import { stopProcess } from "../daemon-process.js";
import { defaultDataDir, runtimeFiles } from "../defaults.js";
import { CliError, ExitCode } from "../exit-codes.js";
import type { Io } from "../io.js";
import { pidState, readPidFile, removePidFile } from "../pid-file.js";
import { LOCATE_FLAGS } from "./controlplane-up.js";

/** The spec of `clawker controlplane down`. */
export const CONTROLPLANE_DOWN: CommandSpec = {
  words: ["controlplane", "down"],
  summary: "Stop the control plane started by `clawker controlplane up` (a host process or the container).",
  description:
    "A running container labelled dev.clawker.purpose=controlplane is stopped with docker stop (SIGTERM,\n" +
    "drain, SIGKILL after --timeout) and kept for the next `up --container`; exit 1 if it did not exit 0.\n" +
    "Otherwise the host process:\n" +
    "Sends SIGTERM to the pid in <data-dir>/controlplane.pid and waits for the daemon to drain and exit;\n" +
    "after --timeout it sends SIGKILL (with a warning). Not running is not an error (exit 0). The pid\n" +
    "file records the daemon's start time and command line: when the pid now names another process\n" +
    "(or the file records neither), nothing is signalled, the stale file is removed, exit 1.",
  flags: {
    "data-dir": LOCATE_FLAGS["data-dir"],
    timeout: { type: "string", value: "DURATION", description: "grace before SIGKILL (default 30s)" },
    format: FORMAT_FLAG,
  },
  examples: ["clawker controlplane down", "clawker controlplane down --timeout 5s"],
};

/** Runs `controlplane down`. */
export async function controlplaneDown(values: FlagValues, io: Io): Promise<number> {
  const dataDir = str(values, "data-dir", defaultDataDir(io.env));
  const timeoutMs = parseDuration("timeout", str(values, "timeout", "30s"));
  const { pidFile } = runtimeFiles(dataDir);
  const json = values["format"] === "json";
  const container = await liveCpContainer(io.env);
  if (container !== undefined) return await stopContainer(container, timeoutMs, json, io);
  const contents = await readPidFile(pidFile);
  const report = (result: Record<string, unknown>, text: string): number => {
    io.stdout.write(
      json ? JSON.stringify({ mode: "process", pidFile, ...result }, null, 2) + "\n" : `${text}\n`,
    );
    return ExitCode.ok;
  };
  if (contents === undefined)
    return report({ wasRunning: false }, `the control plane is not running (no ${pidFile})`);
  const { pid, identity } = contents;
  const state = pidState(contents);
  if (state === "gone") {
    await removePidFile(pidFile);
    return report(
      { wasRunning: false, stalePid: pid },
      `the control plane is not running (removed stale pid file for ${pid})`,
    );
  }
  if (state !== "ours" || identity === undefined) {
    // Never signal what we cannot prove is ours: a pid is recycled, a stale file is not a proof.
    await removePidFile(pidFile);
    const why =
      state === "not_ours"
        ? `pid ${pid} now belongs to another process (its start time or command line differs from the daemon's)`
        : `${pidFile} records no start time for pid ${pid} (written by an older clawker), so it cannot be verified`;
    throw new CliError(
      ExitCode.error,
      `${why}; not signalling it. Removed the stale pid file; if a control plane still runs, stop it by hand`,
    );
  }
  const result = await stopProcess(identity, timeoutMs, () =>
    io.stderr.write(
      `clawker: warning: pid ${pid} did not exit within ${timeoutMs / 1000}s of SIGTERM; sending SIGKILL\n`,
    ),
  );
  await removePidFile(pidFile);
  return report(
    { wasRunning: true, pid, killed: result.killed, elapsedMs: result.elapsedMs },
    `stopped the control plane (pid ${pid}) in ${(result.elapsedMs / 1000).toFixed(1)}s${result.killed ? " with SIGKILL" : ""}`,
  );
}

/**
 * The running control-plane container, if Docker answers and there is one. Docker unreachable is
 * not an error here: a host-process user may have no Docker at all, and the pid file still works.
 */
async function liveCpContainer(
  env: NodeJS.ProcessEnv,
): Promise<{ docker: DockerClient; container: CpContainer } | undefined> {
  let docker: DockerClient;
  try {
    docker = dockerClient(env["DOCKER_HOST"]);
  } catch {
    return undefined;
  }
  try {
    const container = await findCpContainer(docker);
    return container !== undefined && (container.state === "running" || container.state === "restarting")
      ? { docker, container }
      : undefined;
  } catch (err) {
    if (err instanceof CliError && /cannot reach Docker/.test(err.message)) return undefined;
    throw err;
  }
}

async function stopContainer(
  found: { docker: DockerClient; container: CpContainer },
  timeoutMs: number,
  json: boolean,
  io: Io,
): Promise<number> {
  const { docker, container } = found;
  const started = Date.now();
  // docker stop: SIGTERM through docker-init, the drain, then SIGKILL after the grace.
  try {
    await docker.getContainer(container.id).stop({ t: Math.max(1, Math.ceil(timeoutMs / 1000)) });
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode !== 304) throw dockerError(`stop ${container.name}`, err);
  }
  const after = await inspectCp(docker, container.id);
  const elapsedMs = Date.now() - started;
  // 137 is SIGKILL: the drain outlived the grace.
  const killed = after.exitCode === 137;
  if (killed) {
    io.stderr.write(
      `clawker: warning: ${container.name} did not exit within ${timeoutMs / 1000}s of SIGTERM; Docker sent SIGKILL\n`,
    );
  }
  const result = {
    mode: "container",
    wasRunning: true,
    container: { id: container.id, name: container.name },
    exitCode: after.exitCode,
    killed,
    elapsedMs,
  };
  io.stdout.write(
    json
      ? JSON.stringify(result, null, 2) + "\n"
      : `stopped the control plane container ${container.name} in ${(elapsedMs / 1000).toFixed(1)}s (exit code ${after.exitCode})\n`,
  );
  return after.exitCode === 0 ? ExitCode.ok : ExitCode.error;
}
