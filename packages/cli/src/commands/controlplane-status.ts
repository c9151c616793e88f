// `clawker controlplane status`: container or process, /healthz, clock and the firewall, as text or
// JSON.
import { dockerClient } from "@clawker/adminclient";
import type { admin as adminProto } from "@clawker/proto";
import { connectAdmin, formatSkew } from "../admin-connection.js";
import { FORMAT_FLAG, parseAddress, str, type CommandSpec, type FlagValues } from "../command-spec.js";
import {
  defaultAdminAddr,
  defaultDataDir,
  defaultHealthAddr,
  defaultTokenEndpoint,
  defaultTrustDir,
  runtimeFiles,
} from "../defaults.js";
import { findCpContainer } from "../cp-container.js";
import { messageOf } from "../error-report.js";
import { ExitCode } from "../exit-codes.js";
import { describeProbe, healthUrl, probeHealth } from "../health-probe.js";
import type { Io } from "../io.js";
import { pidState, readPidFile, type PidState } from "../pid-file.js";
import { LOCATE_FLAGS, TOKEN_ENDPOINT_FLAG } from "./controlplane-up.js";
import { statusJson, statusLines } from "./firewall-stack.js";

/** The spec of `clawker controlplane status`. */
export const CONTROLPLANE_STATUS: CommandSpec = {
  words: ["controlplane", "status"],
  summary: "Show whether the control plane runs, its /healthz answer, clock skew and firewall.",
  description:
    "Shows the container labelled dev.clawker.purpose=controlplane (when Docker answers) and the host\n" +
    "process of the pid file; `mode` says which one serves. Exit 0 when /healthz answers 200; 3 when\n" +
    "nothing runs or answers; 1 when it answers but is not ready or unhealthy. The clock is read\n" +
    "through GetSystemTime (mTLS, no token); the firewall through FirewallStatus (with the CLI's\n" +
    "token; a failure there is shown, not fatal).",
  flags: { ...LOCATE_FLAGS, "token-endpoint": TOKEN_ENDPOINT_FLAG, format: FORMAT_FLAG },
  examples: [
    "clawker controlplane status",
    "clawker controlplane status --format json | jq .health.body.status",
  ],
};

const PROCESS_TEXT = {
  ours: "alive",
  gone: "not alive (stale pid file)",
  not_ours: "is another process now (stale pid file)",
  unverifiable: "alive, but the pid file records no start time (written by an older clawker)",
} as const satisfies Record<PidState, string>;

/** Runs `controlplane status`. */
export async function controlplaneStatus(values: FlagValues, io: Io): Promise<number> {
  const dataDir = str(values, "data-dir", defaultDataDir(io.env));
  const trustDir = str(values, "trust-dir", defaultTrustDir(io.env));
  const admin = parseAddress("admin", str(values, "admin", defaultAdminAddr(io.env))).text;
  const url = healthUrl(parseAddress("health", str(values, "health", defaultHealthAddr(io.env))));
  const { pidFile } = runtimeFiles(dataDir);

  const contents = await readPidFile(pidFile);
  const pid = contents?.pid;
  const processState: PidState | undefined = contents === undefined ? undefined : pidState(contents);
  // Alive only when the pid is proven to be the daemon `up` started, not merely some live process.
  const alive = processState === "ours";
  const container = await cpContainerStatus(io.env);
  const health = await probeHealth(url, 2000);
  let clock: { skewMs: number; rttMs: number } | { error: string } | undefined;
  let firewall: adminProto.FirewallStatusResult | { error: string } | undefined;
  if (health.reachable) {
    try {
      const { client, skew } = await connectAdmin({
        trustDir,
        admin,
        tokenEndpoint: str(values, "token-endpoint", defaultTokenEndpoint(io.env)),
        deadlineMs: 3000,
      });
      clock = { skewMs: Math.round(skew.skewMs), rttMs: skew.rttMs };
      try {
        firewall = await client.firewallStatus();
      } catch (err) {
        firewall = { error: messageOf(err) };
      } finally {
        await client.close();
      }
    } catch (err) {
      clock = { error: messageOf(err) };
    }
  }
  const code =
    health.httpStatus === 200 ? ExitCode.ok : health.reachable ? ExitCode.error : ExitCode.notRunning;
  const state = code === ExitCode.ok ? "healthy" : health.reachable ? "unhealthy" : "not running";
  if (values["format"] === "json") {
    io.stdout.write(
      JSON.stringify(
        {
          state,
          mode: modeOf(container, alive),
          container,
          process: { pidFile, pid: pid ?? null, alive },
          health,
          admin,
          clock: clock ?? null,
          firewall: firewall === undefined ? null : "error" in firewall ? firewall : statusJson(firewall),
        },
        null,
        2,
      ) + "\n",
    );
    return code;
  }
  const lines = [
    `control plane: ${state}`,
    `  container ${containerText(container)}`,
    `  process  ${pid === undefined ? `no pid file (${pidFile})` : `pid ${pid} ${PROCESS_TEXT[processState ?? "gone"]}`}`,
    `  health   ${url}: ${describeProbe(health)}`,
  ];
  if (clock !== undefined) {
    lines.push(
      `  clock    ${"error" in clock ? `unknown: ${clock.error}` : `${formatSkew(clock.skewMs)} skew (rtt ${clock.rttMs} ms) via ${admin}`}`,
    );
  }
  if (firewall !== undefined) {
    if ("error" in firewall) lines.push(`  firewall unknown: ${firewall.error}`);
    else lines.push(...statusLines(firewall).map((l) => `  ${l}`));
  }
  io.stdout.write(lines.join("\n") + "\n");
  return code;
}

/** The container as status reports it: null when there is none, `error` when Docker did not answer. */
type ContainerStatus =
  | { id: string; name: string; image: string; state: string; health: string | null; startedAt: string }
  | { error: string }
  | null;

async function cpContainerStatus(env: NodeJS.ProcessEnv): Promise<ContainerStatus> {
  try {
    const c = await findCpContainer(dockerClient(env["DOCKER_HOST"]));
    if (c === undefined) return null;
    return {
      id: c.id,
      name: c.name,
      image: c.imageRef ?? c.imageId,
      state: c.state,
      health: c.health ?? null,
      startedAt: c.startedAt,
    };
  } catch (err) {
    return { error: messageOf(err) };
  }
}

function modeOf(container: ContainerStatus, processAlive: boolean): "container" | "process" | "none" {
  if (container !== null && "state" in container && container.state === "running") return "container";
  return processAlive ? "process" : "none";
}

function containerText(c: ContainerStatus): string {
  if (c === null) return "none";
  if ("error" in c) return `unknown (${c.error})`;
  return `${c.name} ${c.id.slice(0, 12)} ${c.state}${c.health === null ? "" : ` (${c.health})`}, image ${c.image}`;
}
