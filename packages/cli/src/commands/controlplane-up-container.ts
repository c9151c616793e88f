// `clawker controlplane up --container`: create or adopt the control-plane container, wait for
// /healthz while printing WatchSOS messages, then check clocks.
import { execFile } from "node:child_process";
import { chmod, chown, mkdir } from "node:fs/promises";
import { dirname } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { dockerClient, dockerSocketPath, loadTrustSet } from "@clawker/adminclient";
import {
  connectAdmin,
  formatSkew,
  SKEW_FAIL_MS,
  skewVerdict,
  SYSTEM_ADMIN_SOCKET,
} from "../admin-connection.js";
import { optStr, parseAddress, parseDuration, str, type FlagValues } from "../command-spec.js";
import {
  cgroup2MountPoint,
  cgroupParentDir,
  connectAgentsNetwork,
  containerCreateOptions,
  containerLogTail,
  CP_AGENTS_NETWORK,
  CP_CONTAINER_NAME,
  CP_PUBLISH_NETWORK,
  DEFAULT_CGROUP_PARENT,
  DEFAULT_CP_IMAGE,
  ensureNetwork,
  hostResolvers,
  dockerError,
  findCpContainer,
  imageId,
  inspectCp,
  runningAgents,
  writeContainerConfig,
  type AdminSocketMount,
  type ContainerFirewall,
  type CpContainer,
  type DockerClient,
  type PublishedPorts,
} from "../cp-container.js";
import {
  DEFAULT_ADMIN_GROUP,
  defaultAdminAddr,
  defaultDataDir,
  defaultHealthAddr,
  defaultTokenEndpoint,
  defaultTrustDir,
  runtimeFiles,
} from "../defaults.js";
import { CliError, ExitCode } from "../exit-codes.js";
import { describeProbe, healthUrl, probeHealth, type HealthProbe } from "../health-probe.js";
import type { Io, Output } from "../io.js";
import { pidState, readPidFile } from "../pid-file.js";
import { startProgress } from "../progress.js";

/** Grace for the old container's drain when it is replaced (Docker then SIGKILLs). */
const REPLACE_STOP_S = 30;

function loopbackOnly(flag: string, addr: { host: string; port: number }): { host: string; port: number } {
  // Published ports on anything but loopback would open the admin API to the network.
  if (addr.host !== "127.0.0.1") {
    throw new CliError(ExitCode.usage, `--${flag} must be on 127.0.0.1 with --container, got ${addr.host}`);
  }
  return { host: addr.host, port: addr.port };
}

/** The host side of the published ports, from --admin, --health and --token-endpoint. */
export function publishedPorts(values: FlagValues, env: NodeJS.ProcessEnv): PublishedPorts {
  const admin = loopbackOnly("admin", parseAddress("admin", str(values, "admin", defaultAdminAddr(env))));
  const health = loopbackOnly(
    "health",
    parseAddress("health", str(values, "health", defaultHealthAddr(env))),
  );
  const endpoint = str(values, "token-endpoint", defaultTokenEndpoint(env));
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new CliError(ExitCode.usage, `--token-endpoint must be a URL, got ${JSON.stringify(endpoint)}`);
  }
  if (url.protocol !== "https:" || url.pathname !== "/oauth2/token" || url.port === "") {
    throw new CliError(
      ExitCode.usage,
      `--token-endpoint must be https://127.0.0.1:PORT/oauth2/token with --container, got ${JSON.stringify(endpoint)}`,
    );
  }
  const token = loopbackOnly("token-endpoint", { host: url.hostname, port: Number(url.port) });
  return { admin, health, token, issuer: url.origin };
}

/**
 * The admin socket's path on the host: `--admin-socket` or `$CLAWKER_ADMIN_SOCKET`, else
 * /run/clawker/admin.sock when the CLI runs as root; otherwise none (TCP only), because the
 * directory must be root's (the daemon's uid in the container) and only root can make it so.
 */
export function containerAdminSocket(values: FlagValues, env: NodeJS.ProcessEnv): string | undefined {
  const flag = optStr(values, "admin-socket");
  if (process.getuid?.() !== 0) {
    // The variable also steers `agents` and `exec`: only the flag asks for what we cannot do.
    if (flag !== undefined)
      throw new CliError(
        ExitCode.usage,
        "--admin-socket with --container needs root (the directory must be root's)",
      );
    return undefined;
  }
  const given = flag ?? (env["CLAWKER_ADMIN_SOCKET"] || undefined);
  if (given !== undefined && !given.startsWith("/"))
    throw new CliError(ExitCode.usage, `--admin-socket must be an absolute path, got ${given}`);
  return given ?? SYSTEM_ADMIN_SOCKET;
}

/** `--cgroup-parent`: the agents' cgroup parent the container's eBPF enforcement owns. */
export function containerCgroupParent(values: FlagValues): string {
  const name = str(values, "cgroup-parent", DEFAULT_CGROUP_PARENT);
  // The daemon's own rule (ebpf.cgroupParent): one cgroup name, never a path.
  if (!/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(name) || name.endsWith(".slice"))
    throw new CliError(
      ExitCode.usage,
      `--cgroup-parent must be a cgroup name (letters, digits, '_', '-', '.'; no path, no .slice), got ${JSON.stringify(name)}`,
    );
  return name;
}

/** `--resolver ADDR[:PORT]` (repeatable, at most 4), else the host's resolvers. */
export function containerResolvers(values: FlagValues): Array<{ address: string; port: number }> {
  const given = values["resolver"];
  const list = Array.isArray(given) ? given : typeof given === "string" ? [given] : [];
  if (list.length === 0) return hostResolvers();
  if (list.length > 4) throw new CliError(ExitCode.usage, `--resolver: at most 4, got ${list.length}`);
  return list.map((text) => {
    const m = /^(\d{1,3}(?:\.\d{1,3}){3})(?::(\d{1,5}))?$/.exec(text);
    const port = m?.[2] === undefined ? 53 : Number(m[2]);
    const octetsOk = m !== null && m[1]!.split(".").every((o) => Number(o) <= 255);
    if (!octetsOk || port < 1 || port > 65535)
      throw new CliError(
        ExitCode.usage,
        `--resolver must be an IPv4 address with an optional :port, got ${JSON.stringify(text)}`,
      );
    return { address: m[1]!, port };
  });
}

/** The admin group's name: `$CLAWKER_ADMIN_GROUP`, else clawker-admins. */
function adminGroup(env: NodeJS.ProcessEnv): string {
  return env["CLAWKER_ADMIN_GROUP"] || DEFAULT_ADMIN_GROUP;
}

/**
 * Creates the socket's directory on the host root:group 0750 (0700 first, widened only once it is
 * the group's; a group that does not exist leaves it 0700 and the socket 0600). An existing
 * directory is left as it is: the daemon checks it and refuses to start on a wrong one.
 */
async function prepareSocketDir(
  socketPath: string,
  group: string,
  stderr: Output,
): Promise<AdminSocketMount> {
  const hostDir = dirname(socketPath);
  const gid = await groupId(group);
  if (gid === undefined)
    stderr.write(
      `clawker: warning: group ${group} does not exist: the admin socket will be root's alone (0600)\n`,
    );
  try {
    await mkdir(dirname(hostDir), { recursive: true, mode: 0o755 });
    await mkdir(hostDir, { mode: 0o700 });
    if (gid !== undefined) {
      await chown(hostDir, 0, gid);
      await chmod(hostDir, 0o750);
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST")
      throw new CliError(ExitCode.error, `cannot create the admin socket directory ${hostDir}`, {
        cause: err,
      });
  }
  return { hostDir, gid, group };
}

/** A group's gid through NSS (`getent group`), undefined when there is none. */
function groupId(name: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    execFile("getent", ["group", name], { timeout: 5_000 }, (err, stdout) => {
      const gid = Number(stdout.split(":")[2]);
      resolve(err === null && Number.isInteger(gid) ? gid : undefined);
    });
  });
}

/** What up --container did with the container. */
type Action = "created" | "adopted" | "started" | "replaced";

/** Runs `controlplane up --container`. */
export async function controlplaneUpContainer(values: FlagValues, io: Io): Promise<number> {
  if (values["config"] !== undefined || values["daemon"] !== undefined) {
    throw new CliError(
      ExitCode.usage,
      `--${values["config"] !== undefined ? "config" : "daemon"} is for the host process; --container generates the container's config`,
    );
  }
  const dataDir = str(values, "data-dir", defaultDataDir(io.env));
  const trustDir = str(values, "trust-dir", defaultTrustDir(io.env));
  const timeoutMs = parseDuration("timeout", str(values, "timeout", "30s"));
  const image = optStr(values, "image") ?? DEFAULT_CP_IMAGE;
  const force = values["force"] === true;
  const ports = publishedPorts(values, io.env);
  const socketPath = containerAdminSocket(values, io.env);
  const cgroupParent = containerCgroupParent(values);
  const resolvers = containerResolvers(values);
  const admin = `${ports.admin.host}:${ports.admin.port}`;
  const url = healthUrl(ports.health);
  const json = values["format"] === "json";
  const started = Date.now();

  await loadTrustSet(trustDir);
  const dockerSocket = dockerSocketPath(io.env["DOCKER_HOST"]);
  const docker = dockerClient(io.env["DOCKER_HOST"]);
  const wanted = await imageId(docker, image);
  const { pidFile } = runtimeFiles(dataDir);
  const pid = await readPidFile(pidFile);
  if (pid !== undefined && pidState(pid) === "ours") {
    throw new CliError(
      ExitCode.exists,
      `a host control plane is running (pid ${pid.pid}, ${pidFile}); stop it first: clawker controlplane down`,
    );
  }

  let current = await findCpContainer(docker);
  let action: Action;
  if (current === undefined) {
    // Nothing of ours: anything answering /healthz is someone else's control plane.
    const before = await probeHealth(url, 500);
    if (before.reachable) {
      throw new CliError(
        ExitCode.exists,
        `something already answers ${url} (${describeProbe(before)}); is another control plane running?`,
      );
    }
    current = await create(
      docker,
      { dataDir, trustDir, image, dockerSocket, ports, socketPath, cgroupParent, resolvers },
      io,
    );
    action = "created";
  } else if (current.imageId !== wanted) {
    const live = current.state === "running" || current.state === "restarting";
    const agents = live ? await runningAgents(docker) : [];
    if (agents.length > 0 && !force) {
      throw new CliError(
        ExitCode.exists,
        `the control plane container ${current.name} runs another image (${current.imageRef ?? current.imageId.slice(0, 19)}) while ${agents.length} agent(s) run (${agents.join(", ")}); replacing it would leave them without a control plane. Pass --force to replace it anyway`,
      );
    }
    await replace(docker, current, io.stderr);
    current = await create(
      docker,
      { dataDir, trustDir, image, dockerSocket, ports, socketPath, cgroupParent, resolvers },
      io,
    );
    action = "replaced";
  } else if (current.state === "running" || current.state === "restarting") {
    action = "adopted";
  } else {
    await startExisting(docker, current);
    action = "started";
  }

  const last = await waitHealthy(docker, current.id, { url, admin, trustDir, ports, timeoutMs, io });
  const healthyMs = Date.now() - started;
  const { client, skew } = await connectAdmin({
    trustDir,
    admin,
    tokenEndpoint: `${ports.issuer}/oauth2/token`,
  });
  await client.close();
  const verdict = skewVerdict(skew.skewMs);
  if (verdict === "fail") {
    throw new CliError(
      ExitCode.error,
      `clock skew with the control plane is ${formatSkew(skew.skewMs)} (limit ±${SKEW_FAIL_MS / 1000}s): fix the clock; the container is still running (clawker controlplane down)`,
    );
  }
  if (verdict === "warn")
    io.stderr.write(`clawker: warning: clock skew with the control plane is ${formatSkew(skew.skewMs)}\n`);

  const now = await inspectCp(docker, current.id);
  const summary = {
    mode: "container",
    action,
    container: { id: now.id, name: now.name, image, imageId: now.imageId, state: now.state },
    admin,
    health: url,
    healthStatus: last.body,
    tokenEndpoint: `${ports.issuer}/oauth2/token`,
    trustDir,
    adminSocket: socketPath ?? null,
    healthyAfterMs: healthyMs,
    clockSkewMs: Math.round(skew.skewMs),
  };
  if (json) {
    io.stdout.write(JSON.stringify(summary, null, 2) + "\n");
  } else {
    io.stdout.write(
      [
        `control plane container ${now.name} is up (${action}, ${now.id.slice(0, 12)}, healthy after ${(healthyMs / 1000).toFixed(1)}s)`,
        `  image     ${image}`,
        `  admin     ${admin}${socketPath === undefined ? "" : ` and ${socketPath}`}`,
        `  health    ${url}: ${describeProbe(last)}`,
        `  token     ${summary.tokenEndpoint}`,
        `  clock     ${formatSkew(skew.skewMs)} skew`,
        `  logs      docker logs ${now.name}`,
        "next: clawker controlplane agents",
      ].join("\n") + "\n",
    );
  }
  return ExitCode.ok;
}

/** What `create` makes the container from. */
interface CreateInputs {
  readonly dataDir: string;
  readonly trustDir: string;
  readonly image: string;
  readonly dockerSocket: string;
  readonly ports: PublishedPorts;
  readonly socketPath: string | undefined;
  readonly cgroupParent: string;
  readonly resolvers: ContainerFirewall["resolvers"];
}

async function create(docker: DockerClient, c: CreateInputs, io: Io): Promise<CpContainer> {
  await mkdir(c.dataDir, { recursive: true, mode: 0o700 });
  const adminSocket =
    c.socketPath === undefined
      ? undefined
      : await prepareSocketDir(c.socketPath, adminGroup(io.env), io.stderr);
  const publish = await ensureNetwork(docker, CP_PUBLISH_NETWORK);
  const agents = await ensureNetwork(docker, CP_AGENTS_NETWORK);
  if (c.resolvers.length === 0)
    io.stderr.write(
      "clawker: warning: no upstream resolver found in the host's resolv.conf: the firewall will not come up until --resolver names one\n",
    );
  const configFile = await writeContainerConfig(c.dataDir, c.ports.issuer, adminSocket, {
    agents,
    cgroupParent: c.cgroupParent,
    resolvers: c.resolvers,
  });
  const options = containerCreateOptions({
    image: c.image,
    trustDir: c.trustDir,
    configFile,
    dockerSocket: c.dockerSocket,
    cgroup2: cgroup2MountPoint(),
    cgroupParentDir: cgroupParentDir(c.cgroupParent, await cgroupDriver(docker)),
    ports: c.ports,
    adminSocket,
    publish,
    agents,
  });
  let id: string;
  try {
    id = (await docker.createContainer(options)).id;
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 409) {
      throw new CliError(
        ExitCode.exists,
        `a container named ${CP_CONTAINER_NAME} exists but is not labelled as the control plane; not touching it`,
        { cause: err },
      );
    }
    throw dockerError(`create ${CP_CONTAINER_NAME}`, err);
  }
  try {
    await connectAgentsNetwork(docker, id, agents);
    await docker.getContainer(id).start();
  } catch (err) {
    // A container that never started holds nothing: remove it so the next up starts clean.
    await docker
      .getContainer(id)
      .remove({ force: true })
      .catch(() => undefined);
    throw err instanceof CliError ? err : dockerError(`start ${CP_CONTAINER_NAME}`, err);
  }
  return await inspectCp(docker, id);
}

/** Docker's cgroup driver (`cgroupfs` or `systemd`): where the agents' parent lives. */
async function cgroupDriver(docker: DockerClient): Promise<string> {
  try {
    const driver = ((await docker.info()) as { CgroupDriver?: unknown }).CgroupDriver;
    return typeof driver === "string" ? driver : "cgroupfs";
  } catch (err) {
    throw dockerError("docker info", err);
  }
}

async function startExisting(docker: DockerClient, c: CpContainer): Promise<void> {
  try {
    await docker.getContainer(c.id).start();
  } catch (err) {
    // 304: it started meanwhile (its restart policy), which is what we wanted.
    if ((err as { statusCode?: number }).statusCode !== 304) throw dockerError(`start ${c.name}`, err);
  }
}

async function replace(docker: DockerClient, c: CpContainer, stderr: Output): Promise<void> {
  stderr.write(`replacing ${c.name} (${c.imageRef ?? c.imageId.slice(0, 19)}): stopping it (drain)\n`);
  const container = docker.getContainer(c.id);
  try {
    if (c.state === "running" || c.state === "restarting") await container.stop({ t: REPLACE_STOP_S });
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode !== 304) throw dockerError(`stop ${c.name}`, err);
  }
  try {
    await container.remove();
  } catch (err) {
    throw dockerError(`remove ${c.name}`, err);
  }
}

interface WaitOptions {
  readonly url: string;
  readonly admin: string;
  readonly trustDir: string;
  readonly ports: PublishedPorts;
  readonly timeoutMs: number;
  readonly io: Io;
}

async function waitHealthy(docker: DockerClient, id: string, o: WaitOptions): Promise<HealthProbe> {
  const started = Date.now();
  const progress = startProgress(o.io.stderr, `waiting for ${o.url}`);
  const sos = new AbortController();
  const following = followSos(o, sos.signal, (text) =>
    o.io.stderr.write(`\nclawker: control plane SOS: ${text}\n`),
  );
  try {
    for (;;) {
      const last = await probeHealth(o.url, 1000);
      if (last.httpStatus === 200) return last;
      const c = await inspectCp(docker, id);
      if (c.state === "exited" || c.state === "dead") {
        throw new CliError(
          ExitCode.error,
          `the control plane container exited before becoming healthy (exit code ${c.exitCode}); last lines of docker logs ${c.name}:`,
          { details: (await containerLogTail(docker, id)).map((l) => `  ${l}`) },
        );
      }
      if (Date.now() - started > o.timeoutMs) {
        throw new CliError(
          ExitCode.notRunning,
          `the control plane container was not healthy within ${o.timeoutMs / 1000}s (last: ${describeProbe(last)}); it keeps running (clawker controlplane down stops it). Last lines of docker logs ${c.name}:`,
          { details: (await containerLogTail(docker, id)).map((l) => `  ${l}`) },
        );
      }
      progress.update(`waiting for ${o.url}: ${describeProbe(last)}`);
      await sleep(100);
    }
  } finally {
    sos.abort();
    await following;
    progress.stop();
  }
}

/**
 * Follows WatchSOS until `signal` aborts: the daemon streams a recoverable start-up failure (e.g.
 * bpffs not delegated) before /healthz can say more than "not ready". Best effort: until the
 * admin listener and the token endpoint answer, it retries quietly.
 */
async function followSos(o: WaitOptions, signal: AbortSignal, report: (text: string) => void): Promise<void> {
  const seen = new Set<string>();
  while (!signal.aborted) {
    try {
      const { client } = await connectAdmin({
        trustDir: o.trustDir,
        admin: o.admin,
        tokenEndpoint: `${o.ports.issuer}/oauth2/token`,
        deadlineMs: 2000,
      });
      try {
        for await (const s of client.watchSos({ signal })) {
          if (seen.has(s.message)) continue;
          seen.add(s.message);
          report(s.message);
        }
        // A clean end means the daemon reached ready (or cleared the SOS at ready): nothing more comes.
        return;
      } finally {
        await client.close();
      }
    } catch {
      // Not up yet, or the stream ended: try again shortly unless we are done.
    }
    await sleep(250, undefined, { signal }).catch(() => undefined);
  }
}
