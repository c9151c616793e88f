// `clawker controlplane up`: start the daemon in the background, wait for /healthz, check clocks.
import { mkdir } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { loadTrustSet } from "@clawker/adminclient";
import { connectAdmin, formatSkew, SKEW_FAIL_MS, skewVerdict } from "../admin-connection.js";
import {
  FORMAT_FLAG,
  optStr,
  parseAddress,
  parseDuration,
  str,
  type CommandSpec,
  type FlagValues,
} from "../command-spec.js";
import { withDaemonTunables } from "../daemon-env.js";
import { resolveDaemon, spawnDaemon, stopProcess, tailOf } from "../daemon-process.js";
import {
  defaultAdminAddr,
  defaultDataDir,
  defaultHealthAddr,
  defaultTokenEndpoint,
  defaultTrustDir,
  runtimeFiles,
} from "../defaults.js";
import { DEFAULT_CP_IMAGE } from "../cp-container.js";
import { CliError, ExitCode } from "../exit-codes.js";
import { describeProbe, healthUrl, probeHealth, type HealthProbe } from "../health-probe.js";
import type { Io } from "../io.js";
import { pidState, readPidFile, removePidFile, writePidFile } from "../pid-file.js";
import { readProcessIdentity, type ProcessIdentity } from "../process-identity.js";
import { startProgress } from "../progress.js";
import { controlplaneUpContainer } from "./controlplane-up-container.js";

/** Flags shared by the controlplane commands that locate a running daemon. */
export const LOCATE_FLAGS = {
  "data-dir": {
    type: "string",
    value: "DIR",
    description:
      "state dir with controlplane.pid and controlplane.log (default $CLAWKER_CP_DATA_DIR or ${XDG_STATE_HOME:-~/.local/state}/clawker/controlplane)",
  },
  "trust-dir": {
    type: "string",
    value: "DIR",
    description:
      "trust dir from `clawker auth init` (default $CLAWKER_CP_TRUST_DIR or ${XDG_CONFIG_HOME:-~/.config}/clawker/trust)",
  },
  admin: {
    type: "string",
    value: "HOST:PORT",
    description: "admin gRPC address (default $CLAWKER_CP_ADMIN_ADDR or 127.0.0.1:7443)",
  },
  health: {
    type: "string",
    value: "HOST:PORT",
    description: "/healthz address (default $CLAWKER_CP_HEALTH_ADDR or 127.0.0.1:7080)",
  },
} as const;

/** `--token-endpoint`, for the commands that get a token (their default: defaultTokenEndpoint). */
export const TOKEN_ENDPOINT_FLAG = {
  type: "string",
  value: "URL",
  description: "token endpoint (default $CLAWKER_TOKEN_ENDPOINT or https://127.0.0.1:4444/oauth2/token)",
} as const;

/** `--admin-socket`: the admin Unix socket to use instead of TCP. */
export const ADMIN_SOCKET_FLAG = {
  type: "string",
  value: "PATH",
  description:
    "admin Unix socket (default $CLAWKER_ADMIN_SOCKET, else <data-dir>/run/admin.sock or /run/clawker/admin.sock when one answers and --admin is not given; else TCP)",
} as const;

/** The spec of `clawker controlplane up`. */
export const CONTROLPLANE_UP: CommandSpec = {
  words: ["controlplane", "up"],
  summary: "Start the control plane daemon in the background and wait until it is healthy.",
  description:
    "Runs clawker-cp detached on embedded defaults (the embedded OAuth2 server, no Ory binaries),\n" +
    "appends its output to <data-dir>/controlplane.log and records its pid in <data-dir>/controlplane.pid.\n" +
    "Waits for /healthz to answer 200, then compares clocks through GetSystemTime (warns above 1 s of\n" +
    "skew, fails above 30 s). --admin/--health are passed to the daemon as CLAWKER_CP_ADMIN_ADDR and\n" +
    "CLAWKER_CP_HEALTH_ADDR; with --config, give them too if the file moves the listeners.\n" +
    "--container runs the image instead (docker/README.md): only CAP_SYS_ADMIN and CAP_NET_ADMIN, bpffs,\n" +
    "cgroup2 and the Docker socket bound, the host cgroup namespace, six trust files read-only (never\n" +
    "the CA key), ports published on 127.0.0.1 (--admin, --health, --token-endpoint give the host side),\n" +
    "restart on-failure, on the networks clawker-cp and clawker-agents (created or adopted) at .2 of each,\n" +
    "with the eBPF enforcement on and the firewall's proxy and DNS gate on its clawker-agents address. A\n" +
    "container running another image is replaced, but not while agents run unless --force.",
  flags: {
    config: {
      type: "string",
      value: "FILE",
      description: "daemon config file (YAML or JSON), passed as CLAWKER_CP_CONFIG",
    },
    ...LOCATE_FLAGS,
    "token-endpoint": TOKEN_ENDPOINT_FLAG,
    "admin-socket": {
      type: "string",
      value: "PATH",
      description:
        "the daemon's admin Unix socket (default $CLAWKER_ADMIN_SOCKET; host process: <data-dir>/run/admin.sock; --container as root: /run/clawker/admin.sock, bound into the container with the group's gid)",
    },
    daemon: {
      type: "string",
      value: "PATH",
      description:
        "daemon executable or script (default $CLAWKER_CP_BIN, else the clawker-cp installed with this CLI, else clawker-cp on PATH)",
    },
    timeout: { type: "string", value: "DURATION", description: "budget to become healthy (default 30s)" },
    container: {
      type: "boolean",
      description:
        "run it as the Docker container clawker-controlplane (create, or adopt the one labelled dev.clawker.purpose=controlplane)",
    },
    image: {
      type: "string",
      value: "REF",
      description: `with --container: the control-plane image (default ${DEFAULT_CP_IMAGE}); never pulled`,
    },
    force: {
      type: "boolean",
      description: "with --container: replace a container running another image even while agents run",
    },
    "cgroup-parent": {
      type: "string",
      value: "NAME",
      description:
        "with --container: the agents' cgroup parent its eBPF enforcement owns (default clawker; pins in /sys/fs/bpf/NAME); give clawker run the same",
    },
    resolver: {
      type: "string",
      multiple: true,
      value: "ADDR[:PORT]",
      description:
        "with --container: an upstream DNS resolver of the firewall (default: the host's resolv.conf nameservers that are not loopback)",
    },
    format: FORMAT_FLAG,
  },
  examples: [
    "clawker controlplane up",
    "clawker auth init && clawker controlplane up --timeout 60s --data-dir /tmp/cp",
    "clawker controlplane up --config ./cp.yaml --format json",
    "clawker controlplane up --container --trust-dir /etc/clawker/trust",
  ],
};

/** Runs `controlplane up`. */
export async function controlplaneUp(values: FlagValues, io: Io): Promise<number> {
  if (values["container"] === true) return await controlplaneUpContainer(values, io);
  for (const flag of ["image", "force", "cgroup-parent", "resolver"]) {
    if (values[flag] !== undefined) throw new CliError(ExitCode.usage, `--${flag} needs --container`);
  }
  const dataDir = str(values, "data-dir", defaultDataDir(io.env));
  const trustDir = str(values, "trust-dir", defaultTrustDir(io.env));
  const admin = parseAddress("admin", str(values, "admin", defaultAdminAddr(io.env)));
  const health = parseAddress("health", str(values, "health", defaultHealthAddr(io.env)));
  const tokenEndpoint = str(values, "token-endpoint", defaultTokenEndpoint(io.env));
  const timeoutMs = parseDuration("timeout", str(values, "timeout", "30s"));
  const config = optStr(values, "config");
  const { pidFile, logFile } = runtimeFiles(dataDir);
  const url = healthUrl(health);
  const json = values["format"] === "json";

  // Fail before spawning anything when the daemon could not possibly start.
  await loadTrustSet(trustDir);
  const daemon = resolveDaemon(optStr(values, "daemon"), io.env);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const existing = await readPidFile(pidFile);
  if (existing !== undefined && pidState(existing) === "ours") {
    throw new CliError(
      ExitCode.exists,
      `the control plane is already running (pid ${existing.pid}, ${pidFile})`,
    );
  }
  // Stale (gone, another process, or unverifiable): the /healthz probe below still catches a daemon.
  if (existing !== undefined) await removePidFile(pidFile);
  const before = await probeHealth(url, 500);
  if (before.reachable) {
    throw new CliError(
      ExitCode.exists,
      `something already answers ${url} (${describeProbe(before)}); is another control plane running?`,
    );
  }

  const env: NodeJS.ProcessEnv = withDaemonTunables({
    ...io.env,
    CLAWKER_CP_DATA_DIR: dataDir,
    CLAWKER_CP_TRUST_DIR: trustDir,
    ...(config === undefined ? {} : { CLAWKER_CP_CONFIG: config }),
    ...(values["admin"] === undefined ? {} : { CLAWKER_CP_ADMIN_ADDR: admin.text }),
    ...(values["admin-socket"] === undefined
      ? {}
      : { CLAWKER_CP_ADMIN_SOCKET: str(values, "admin-socket", "") }),
    ...(values["health"] === undefined ? {} : { CLAWKER_CP_HEALTH_ADDR: health.text }),
  });
  const started = Date.now();
  const child = await spawnDaemon(daemon, env, logFile);
  const pid = child.pid!;
  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  child.once("exit", (code, signal) => (exit = { code, signal }));
  // Undefined only when it has already exited: the loop below reports that.
  let identity: ProcessIdentity | undefined = readProcessIdentity(pid);
  if (identity !== undefined) await writePidFile(pidFile, identity);

  const progress = startProgress(io.stderr, `waiting for ${url}`);
  let last: HealthProbe | undefined;
  try {
    for (;;) {
      last = await probeHealth(url, 1000);
      if (last.httpStatus === 200) break;
      if (exit !== undefined) {
        await removePidFile(pidFile);
        const how = exit.signal === null ? `exit code ${exit.code}` : `signal ${exit.signal}`;
        throw new CliError(
          ExitCode.error,
          `the control plane exited before becoming healthy (${how}); last lines of ${logFile}:`,
          {
            details: (await tailOf(logFile)).map((l) => `  ${l}`),
          },
        );
      }
      if (Date.now() - started > timeoutMs) {
        progress.update("not healthy in time: stopping it");
        if (identity !== undefined) await stopProcess(identity, 5_000);
        await removePidFile(pidFile);
        throw new CliError(
          ExitCode.notRunning,
          `the control plane was not healthy within ${timeoutMs / 1000}s (last: ${describeProbe(last)}); stopped it. Last lines of ${logFile}:`,
          { details: (await tailOf(logFile)).map((l) => `  ${l}`) },
        );
      }
      progress.update(`waiting for ${url}: ${describeProbe(last)}`);
      await sleep(200);
    }
  } finally {
    progress.stop();
  }
  const healthyMs = Date.now() - started;
  // A daemon started through a script (`#!/usr/bin/env node`) may have shown the interpreter's
  // argv when it was first read; record the argv it serves under, for `down` to check against.
  const now = readProcessIdentity(pid);
  if (now === undefined || (identity !== undefined && now.startTime !== identity.startTime)) {
    await removePidFile(pidFile);
    throw new CliError(ExitCode.error, `the control plane (pid ${pid}) exited right after becoming healthy`);
  }
  if (identity === undefined || now.cmdline.join("\0") !== identity.cmdline.join("\0")) {
    identity = now;
    await writePidFile(pidFile, identity);
  }
  child.unref();

  const { client, skew } = await connectAdmin({ trustDir, admin: admin.text, tokenEndpoint });
  await client.close();
  const verdict = skewVerdict(skew.skewMs);
  if (verdict === "fail") {
    throw new CliError(
      ExitCode.error,
      `clock skew with the control plane is ${formatSkew(skew.skewMs)} (limit ±${SKEW_FAIL_MS / 1000}s): fix the clock; the daemon is still running (clawker controlplane down)`,
    );
  }
  if (verdict === "warn")
    io.stderr.write(`clawker: warning: clock skew with the control plane is ${formatSkew(skew.skewMs)}\n`);

  const summary = {
    pid,
    admin: admin.text,
    health: url,
    healthStatus: last.body,
    tokenEndpoint,
    dataDir,
    trustDir,
    logFile,
    pidFile,
    daemon: daemon.entry,
    healthyAfterMs: healthyMs,
    clockSkewMs: Math.round(skew.skewMs),
  };
  if (json) {
    io.stdout.write(JSON.stringify(summary, null, 2) + "\n");
  } else {
    io.stdout.write(
      [
        `control plane is up (pid ${pid}, healthy after ${(healthyMs / 1000).toFixed(1)}s)`,
        `  admin     ${admin.text}`,
        `  health    ${url}: ${describeProbe(last)}`,
        `  clock     ${formatSkew(skew.skewMs)} skew`,
        `  log       ${logFile}`,
        `  data dir  ${dataDir}`,
        `  trust dir ${trustDir}`,
        "next: clawker controlplane agents",
      ].join("\n") + "\n",
    );
  }
  return ExitCode.ok;
}
