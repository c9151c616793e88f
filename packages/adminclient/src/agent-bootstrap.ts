// Agent bootstrap, the CLI side (ARCHITECTURE.md "Agent identity"): create the agent container
// (not started), mint its leaf for the container's id and a single-use client assertion, copy the
// five bootstrap files in with Docker's archive API, then start it. Nothing half-made is left:
// a failure after the create removes the container. Also the matching removal.
import { X509Certificate, createHash } from "node:crypto";
import { isIP } from "node:net";
import Docker from "dockerode";
import {
  BOOTSTRAP_DIR,
  BOOTSTRAP_FILES,
  CLAWKERD_NODE_FLAGS,
  FIREWALL_CA_ENV,
  FIREWALL_CA_FILE,
  LABELS,
  agentFullName,
  type AgentBootstrapConfig,
} from "@clawker/proto";
import { importSigningKey, signClientAssertion } from "./client-assertion.js";
import { issueAgentLeaf, type TrustSet } from "./trust/bootstrap.js";
import { writeUstar, type UstarEntry } from "./ustar.js";

/** The agent image's entrypoint: clawkerd under node with its heap settings (the CMD becomes its main command). */
export const DEFAULT_AGENT_ENTRYPOINT: readonly string[] = Object.freeze([
  "node",
  ...CLAWKERD_NODE_FLAGS,
  "/opt/clawker/clawkerd.mjs",
]);
/** The user-defined bridge network agents join by default. */
export const DEFAULT_AGENT_NETWORK = "clawker-agents";
/** The control plane's agents cgroup parent by default (its config `ebpf.cgroupParent`). */
export const DEFAULT_AGENT_CGROUP_PARENT = "clawker";
/** The OAuth2 client agents authenticate as. */
export const AGENT_CLIENT_ID = "clawker-agent";
/** Lifetime of an agent's bootstrap assertion: it is exchanged once, right after start. */
export const AGENT_ASSERTION_LIFETIME_S = 600;
/** Longest agent or project name (the identity gate's limit). */
export const MAX_AGENT_NAME_LENGTH = 64;
/** Seconds `removeAgentContainer` gives the container to stop before Docker kills it. */
export const DEFAULT_STOP_TIMEOUT_S = 10;

// The identity gate's rule (controlplane agents/identity-gate.ts): no dot, so full names split.
const NAME = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;

/** Why an agent container operation failed; stable strings, safe to match on. */
export type AgentBootstrapReason =
  | "invalid_argument" // a name, address, URL or command we refuse before touching Docker
  | "invalid_trust" // the CLI signing key does not import
  | "docker_unavailable" // the Docker socket does not answer
  | "name_conflict" // a container of that name exists
  | "image_not_found" // the image is not on the engine (nothing is pulled)
  | "create_failed" // Docker refused the create for another reason
  | "bootstrap_failed" // minting or copying the bootstrap material failed (container removed)
  | "start_failed" // the start failed, e.g. no such network (container removed)
  | "not_found" // rm: no container of that name
  | "not_managed" // rm: the container is not a managed agent container of that name
  | "remove_failed"; // rm: Docker refused the stop or the removal

/** An agent container operation's failure; `containerId` names a container left behind, if any. */
export class AgentBootstrapError extends Error {
  override readonly name = "AgentBootstrapError";
  readonly reason: AgentBootstrapReason;
  /** Set when a created container could not be removed after the failure. */
  readonly leftoverContainerId: string | undefined;

  constructor(
    reason: AgentBootstrapReason,
    message: string,
    options: { cause?: unknown; leftoverContainerId?: string } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.reason = reason;
    this.leftoverContainerId = options.leftoverContainerId;
  }
}

/** Options of createAgentContainer. */
export interface AgentContainerOptions {
  /** Short agent name (`dev`): `[A-Za-z0-9][A-Za-z0-9_-]{0,63}`. */
  readonly agent: string;
  /** Project, same alphabet; "" or absent for none. */
  readonly project?: string;
  readonly image: string;
  /** The main command clawkerd starts on AgentReady (the container's Cmd, clawkerd's argv). */
  readonly cmd?: readonly string[];
  /** Default DEFAULT_AGENT_ENTRYPOINT (imported images have no config of their own). */
  readonly entrypoint?: readonly string[];
  /** Extra `KEY=VALUE` environment entries. */
  readonly env?: readonly string[];
  /** Docker network to join (default DEFAULT_AGENT_NETWORK). */
  readonly network?: string;
  /** The control plane's agents cgroup parent (`--cgroup-parent`); Docker's default when absent. */
  readonly cgroupParent?: string;
  /** Resource limits through Docker's host config (issue 13 §2); absent fields: none. */
  readonly limits?: AgentLimits;
  /** The CA that signs the agent leaf and the CLI's ES256 signing key. */
  readonly trust: Pick<TrustSet, "ca" | "signingKey">;
  /** The control plane's agent listener as the container reaches it, `host:port`. */
  readonly controlPlaneAddr: string;
  /** The token endpoint URL the container reaches; the assertion's audience. */
  readonly tokenEndpoint: string;
  /** Name the control plane's server certificate is checked against (e.g. `localhost`). */
  readonly serverName: string;
  /**
   * The firewall's interception CA certificate (PEM, from FirewallStatus): copied to
   * FIREWALL_CA_FILE with NODE_EXTRA_CA_CERTS and SSL_CERT_FILE set, so the agent trusts it for
   * intercepted names. Absent or "": the agent is made without it. Anything but one CA
   * certificate (a key above all) is refused.
   */
  readonly firewallCaPem?: string;
  /** Start the container after the copy (default true). */
  readonly start?: boolean;
  /** Clock in milliseconds (assertion times, file mtimes). */
  readonly now?: () => number;
}

/** A created agent container. */
export interface AgentContainer {
  /** The full 64-hex container id (the leaf's container SAN). */
  readonly containerId: string;
  /** The container name, `clawker.<project>.<agent>` or `clawker.<agent>`. */
  readonly name: string;
  /** The agent's full name as the leaf's agent SAN carries it (`<project>.<agent>`). */
  readonly fullName: string;
  /** Lowercase hex SHA-256 of the leaf's DER (the registry's key). */
  readonly thumbprint: string;
  /** SHA-256 fingerprint (lowercase hex) of the firewall CA copied in, or undefined when none was. */
  readonly firewallCaFingerprint: string | undefined;
  /** Leaf expiry (ISO 8601). */
  readonly certNotAfter: string;
  readonly started: boolean;
}

/** Checks agent and project names exactly as the control plane's identity gate does. */
export function checkAgentNames(agent: string, project: string): void {
  checkName("agent", agent, false);
  checkName("project", project, true);
}

function checkName(field: string, value: string, mayBeEmpty: boolean): void {
  const bad = (why: string): AgentBootstrapError =>
    new AgentBootstrapError("invalid_argument", `${field} name ${JSON.stringify(value)} ${why}`);
  if (value === "") {
    if (mayBeEmpty) return;
    throw new AgentBootstrapError("invalid_argument", `${field} name is empty`);
  }
  if (value.length > MAX_AGENT_NAME_LENGTH) throw bad(`is longer than ${MAX_AGENT_NAME_LENGTH} characters`);
  if (!NAME.test(value)) {
    throw bad("must start with a letter or digit and contain only letters, digits, '_' and '-'");
  }
}

/** The container name of an agent: `clawker.<project>.<agent>`, or `clawker.<agent>` without a project. */
export function agentContainerName(project: string, agent: string): string {
  return `clawker.${agentFullName(project, agent)}`;
}

/** Checks the addresses clawkerd will read (the same forms clawkerd's own check accepts). */
export function checkBootstrapConfig(config: AgentBootstrapConfig): void {
  const problems: string[] = [];
  if (!/^(\[[0-9a-fA-F:.]+\]|[^:\s[\]]+):\d{1,5}$/.test(config.controlPlaneAddr)) {
    problems.push(`control plane address must be host:port, got ${JSON.stringify(config.controlPlaneAddr)}`);
  } else if (Number(config.controlPlaneAddr.slice(config.controlPlaneAddr.lastIndexOf(":") + 1)) > 65535) {
    problems.push(`control plane address has a port above 65535: ${config.controlPlaneAddr}`);
  }
  if (!URL.canParse(config.tokenEndpoint) || new URL(config.tokenEndpoint).protocol !== "https:") {
    problems.push(`token endpoint must be an https URL, got ${JSON.stringify(config.tokenEndpoint)}`);
  }
  if (
    config.serverName === "" ||
    (isIP(config.serverName) === 0 && !/^[A-Za-z0-9.-]+$/.test(config.serverName))
  ) {
    problems.push(
      `server name must be a DNS name or an IP address, got ${JSON.stringify(config.serverName)}`,
    );
  }
  if (problems.length > 0) throw new AgentBootstrapError("invalid_argument", problems.join("; "));
}

/**
 * Checks that `pem` is exactly one CA certificate and nothing else (no key, no second block);
 * returns it with one trailing newline. Throws AgentBootstrapError `invalid_argument`.
 */
export function checkFirewallCa(pem: string): string {
  const blocks = pem.match(/-----BEGIN [^-]+-----/g) ?? [];
  const bad = (why: string): AgentBootstrapError =>
    new AgentBootstrapError("invalid_argument", `the firewall CA ${why}`);
  if (blocks.length !== 1 || blocks[0] !== "-----BEGIN CERTIFICATE-----") {
    throw bad("must be exactly one PEM certificate (never a key)");
  }
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(pem);
  } catch (err) {
    throw new AgentBootstrapError("invalid_argument", "the firewall CA does not parse as a certificate", {
      cause: err,
    });
  }
  if (!cert.ca) throw bad("is not a CA certificate");
  return `${pem.trim()}\n`;
}

/**
 * The bootstrap material as a tar for `putArchive` at `/`: dirs 0500, files 0400, all root; with
 * `firewallCa`, also FIREWALL_CA_FILE (0444 in a 0755 dir: the agent's user reads it).
 */
export function bootstrapArchive(
  files: {
    ca: string;
    cert: string;
    key: string;
    assertion: string;
    config: AgentBootstrapConfig;
    firewallCa?: string;
  },
  mtimeS = 0,
): Buffer {
  const dir = BOOTSTRAP_DIR.replace(/^\/+|\/+$/g, "");
  const parts = dir.split("/");
  const dirs: UstarEntry[] = parts.map((_, i) => ({
    kind: "dir",
    name: `${parts.slice(0, i + 1).join("/")}/`,
    // Docker applies a tar's mode and owner to directories that already exist: keep the standard
    // 0755 for the first level (/run), close everything below it.
    mode: i === 0 ? 0o755 : 0o500,
    mtime: mtimeS,
  }));
  const file = (name: string, content: string): UstarEntry => ({
    kind: "file",
    name: `${dir}/${name}`,
    mode: 0o400,
    content,
    mtime: mtimeS,
  });
  const publicParts = FIREWALL_CA_FILE.replace(/^\/+/, "").split("/");
  const publicEntries: UstarEntry[] =
    files.firewallCa === undefined
      ? []
      : [
          // /etc and /etc/clawker keep the standard 0755 (a tar's mode applies to existing dirs).
          ...publicParts.slice(0, -1).map((_, i): UstarEntry => ({
            kind: "dir",
            name: `${publicParts.slice(0, i + 1).join("/")}/`,
            mode: 0o755,
            mtime: mtimeS,
          })),
          {
            kind: "file",
            name: publicParts.join("/"),
            mode: 0o444,
            content: files.firewallCa,
            mtime: mtimeS,
          },
        ];
  return writeUstar([
    ...publicEntries,
    ...dirs,
    file(BOOTSTRAP_FILES.ca, files.ca),
    file(BOOTSTRAP_FILES.cert, files.cert),
    file(BOOTSTRAP_FILES.key, files.key),
    file(BOOTSTRAP_FILES.assertion, files.assertion),
    file(BOOTSTRAP_FILES.config, JSON.stringify(files.config, null, 2) + "\n"),
  ]);
}

/**
 * Creates an agent container with its bootstrap material and (unless `start: false`) starts it.
 * Names and addresses are checked before Docker is touched; any failure after the create removes
 * the container (force) and throws AgentBootstrapError.
 */
export async function createAgentContainer(
  docker: Docker,
  options: AgentContainerOptions,
): Promise<AgentContainer> {
  const project = options.project ?? "";
  checkAgentNames(options.agent, project);
  const config: AgentBootstrapConfig = {
    agentName: options.agent,
    project,
    controlPlaneAddr: options.controlPlaneAddr,
    tokenEndpoint: options.tokenEndpoint,
    serverName: options.serverName,
  };
  checkBootstrapConfig(config);
  if (options.image === "") throw new AgentBootstrapError("invalid_argument", "image is empty");
  const firewallCa =
    options.firewallCaPem === undefined || options.firewallCaPem === ""
      ? undefined
      : checkFirewallCa(options.firewallCaPem);
  const entrypoint = options.entrypoint ?? DEFAULT_AGENT_ENTRYPOINT;
  if (entrypoint.length === 0 || entrypoint[0] === "") {
    throw new AgentBootstrapError("invalid_argument", "entrypoint is empty");
  }
  for (const e of options.env ?? []) {
    if (!/^[^=]+=/.test(e))
      throw new AgentBootstrapError(
        "invalid_argument",
        `env entry must be KEY=VALUE, got ${JSON.stringify(e)}`,
      );
  }
  let signingKey;
  try {
    signingKey = await importSigningKey(options.trust.signingKey.privateJwk);
  } catch (err) {
    throw new AgentBootstrapError("invalid_trust", "the CLI signing key does not import", { cause: err });
  }
  const now = options.now ?? Date.now;
  const name = agentContainerName(project, options.agent);
  const fullName = agentFullName(project, options.agent);

  let container: Docker.Container;
  try {
    container = await docker.createContainer({
      name,
      Image: options.image,
      Entrypoint: [...entrypoint],
      Cmd: [...(options.cmd ?? [])],
      // The trust settings first: a caller's own -e entry of the same name comes later and wins.
      Env: [
        ...(firewallCa === undefined ? [] : Object.entries(FIREWALL_CA_ENV).map(([k, v]) => `${k}=${v}`)),
        ...(options.env ?? []),
      ],
      Labels: {
        [LABELS.managed]: "true",
        [LABELS.purpose]: "agent",
        [LABELS.agent]: options.agent,
        [LABELS.project]: project,
      },
      HostConfig: {
        // Raw sockets would bypass the egress rules; docker-init is PID 1 and reaps orphans
        // (clawkerd, a Node process, cannot), clawkerd is its child.
        CapDrop: ["NET_RAW"],
        Init: true,
        Privileged: false,
        NetworkMode: options.network ?? DEFAULT_AGENT_NETWORK,
        ...(options.cgroupParent === undefined ? {} : { CgroupParent: options.cgroupParent }),
        ...agentLimitsHostConfig(options.limits),
      },
    });
  } catch (err) {
    throw createFailure(err, name, options.image);
  }

  const containerId = container.id;
  let stage: "bootstrap_failed" | "start_failed" = "bootstrap_failed";
  try {
    const leaf = await issueAgentLeaf(options.trust.ca, { agentName: fullName, containerId });
    const cert = new X509Certificate(leaf.certPem);
    const nowS = Math.floor(now() / 1000);
    const assertion = await signClientAssertion(signingKey, options.trust.signingKey.kid, {
      clientId: AGENT_CLIENT_ID,
      audience: options.tokenEndpoint,
      issuedAt: nowS,
      lifetimeS: AGENT_ASSERTION_LIFETIME_S,
    });
    const archive = bootstrapArchive(
      {
        ca: options.trust.ca.certPem,
        cert: leaf.certPem,
        key: leaf.keyPem,
        assertion,
        config,
        ...(firewallCa === undefined ? {} : { firewallCa }),
      },
      nowS,
    );
    // noOverwriteDirNonDir: an image whose /run is a file or symlink fails instead of being changed.
    await container.putArchive(archive, { path: "/", noOverwriteDirNonDir: true });
    const started = options.start !== false;
    if (started) {
      stage = "start_failed";
      await container.start();
    }
    return {
      containerId,
      name,
      fullName,
      thumbprint: createHash("sha256").update(cert.raw).digest("hex"),
      firewallCaFingerprint:
        firewallCa === undefined
          ? undefined
          : new X509Certificate(firewallCa).fingerprint256.replaceAll(":", "").toLowerCase(),
      certNotAfter: new Date(cert.validTo).toISOString(),
      started,
    };
  } catch (err) {
    let leftover: string | undefined;
    try {
      await container.remove({ force: true });
    } catch (removeErr) {
      if (statusOf(removeErr) !== 404) leftover = containerId;
    }
    const what = stage === "start_failed" ? "start" : "bootstrap";
    throw new AgentBootstrapError(
      isUnavailable(err) ? "docker_unavailable" : stage,
      `${what} of ${name} failed: ${dockerMessage(err)}${leftover === undefined ? " (container removed)" : ` (container ${leftover.slice(0, 12)} could not be removed)`}`,
      { cause: err, ...(leftover === undefined ? {} : { leftoverContainerId: leftover }) },
    );
  }
}

/** Options of removeAgentContainer. */
export interface RemoveAgentOptions {
  readonly agent: string;
  readonly project?: string;
  /** Kill instead of stopping gracefully (Docker's `rm -f`). */
  readonly force?: boolean;
  /** Seconds to wait for a graceful stop before Docker kills it (default 10). */
  readonly stopTimeoutS?: number;
}

/** What removeAgentContainer removed. */
export interface RemovedAgent {
  readonly containerId: string;
  readonly name: string;
  /** Whether it was running when asked to go. */
  readonly wasRunning: boolean;
}

/**
 * Stops and removes the agent container named by agent/project. Refuses (not_managed) a container
 * of that name whose labels do not say it is that managed agent; removes by the inspected id, so a
 * container swapped in under the name meanwhile is not touched.
 */
export async function removeAgentContainer(
  docker: Docker,
  options: RemoveAgentOptions,
): Promise<RemovedAgent> {
  const project = options.project ?? "";
  checkAgentNames(options.agent, project);
  const name = agentContainerName(project, options.agent);
  let info: Docker.ContainerInspectInfo;
  try {
    info = await docker.getContainer(name).inspect();
  } catch (err) {
    if (statusOf(err) === 404)
      throw new AgentBootstrapError("not_found", `no container named ${name}`, { cause: err });
    throw new AgentBootstrapError(
      isUnavailable(err) ? "docker_unavailable" : "remove_failed",
      `inspect ${name}: ${dockerMessage(err)}`,
      { cause: err },
    );
  }
  const labels = info.Config.Labels ?? {};
  const mismatch =
    labels[LABELS.managed] !== "true"
      ? LABELS.managed
      : labels[LABELS.purpose] !== "agent"
        ? LABELS.purpose
        : labels[LABELS.agent] !== options.agent
          ? LABELS.agent
          : (labels[LABELS.project] ?? "") !== project
            ? LABELS.project
            : undefined;
  if (mismatch !== undefined) {
    throw new AgentBootstrapError(
      "not_managed",
      `refusing to remove ${name}: not a managed clawker agent container (label ${mismatch} does not match)`,
    );
  }
  const container = docker.getContainer(info.Id);
  const wasRunning = info.State.Running;
  try {
    if (wasRunning && options.force !== true) {
      await container.stop({ t: options.stopTimeoutS ?? DEFAULT_STOP_TIMEOUT_S }).catch((err: unknown) => {
        // 304: it stopped on its own in the meantime.
        if (statusOf(err) !== 304) throw err;
      });
    }
    await container.remove({ force: true });
  } catch (err) {
    if (statusOf(err) === 404) return { containerId: info.Id, name, wasRunning };
    throw new AgentBootstrapError(
      isUnavailable(err) ? "docker_unavailable" : "remove_failed",
      `remove ${name}: ${dockerMessage(err)}`,
      { cause: err },
    );
  }
  return { containerId: info.Id, name, wasRunning };
}

/** The Unix socket a DOCKER_HOST value names (`unix:///path`, a bare absolute path, or unset -> /var/run/docker.sock). */
export function dockerSocketPath(dockerHost: string | undefined): string {
  const host = (dockerHost ?? "").trim();
  if (host === "") return "/var/run/docker.sock";
  const path = host.startsWith("unix://") ? host.slice("unix://".length) : host;
  if (!path.startsWith("/")) {
    throw new AgentBootstrapError(
      "invalid_argument",
      `DOCKER_HOST must be unix:///path/to/docker.sock, got ${JSON.stringify(host)}`,
    );
  }
  return path;
}

/** A dockerode client on the socket DOCKER_HOST names (TCP and SSH hosts are refused). */
export function dockerClient(dockerHost: string | undefined): Docker {
  return new Docker({ socketPath: dockerSocketPath(dockerHost) });
}

/**
 * What `--cgroup-parent` must say for the control plane's parent `name` under the engine's cgroup
 * driver: `/clawker` for cgroupfs, the slice `clawker.slice` for systemd (the control plane's eBPF
 * programs sit on that cgroup, so an agent under it is enforced from its first syscall).
 */
export async function agentCgroupParent(
  docker: Docker,
  name: string = DEFAULT_AGENT_CGROUP_PARENT,
): Promise<string> {
  let info: { CgroupDriver?: string };
  try {
    info = (await docker.info()) as typeof info;
  } catch (err) {
    throw new AgentBootstrapError(
      isUnavailable(err) ? "docker_unavailable" : "create_failed",
      `docker info: ${dockerMessage(err)}`,
      { cause: err },
    );
  }
  return info.CgroupDriver === "systemd" ? `${name}.slice` : `/${name}`;
}

/** The gateway address of a Docker network (where the control plane's agent listeners bind). */
export async function networkGateway(docker: Docker, network: string): Promise<string> {
  let info: { IPAM?: { Config?: Array<{ Gateway?: string }> } };
  try {
    info = (await docker.getNetwork(network).inspect()) as typeof info;
  } catch (err) {
    if (statusOf(err) === 404) {
      throw new AgentBootstrapError("invalid_argument", `no Docker network named ${network}`, { cause: err });
    }
    throw new AgentBootstrapError(
      isUnavailable(err) ? "docker_unavailable" : "create_failed",
      `inspect network ${network}: ${dockerMessage(err)}`,
      { cause: err },
    );
  }
  const gateway = info.IPAM?.Config?.find((c) => c.Gateway !== undefined && isIP(c.Gateway) === 4)?.Gateway;
  if (gateway === undefined) {
    throw new AgentBootstrapError("invalid_argument", `network ${network} has no IPv4 gateway`);
  }
  return gateway;
}

function createFailure(err: unknown, name: string, image: string): AgentBootstrapError {
  const status = statusOf(err);
  if (isUnavailable(err)) {
    return new AgentBootstrapError("docker_unavailable", `Docker is not reachable: ${dockerMessage(err)}`, {
      cause: err,
    });
  }
  if (status === 409) {
    return new AgentBootstrapError("name_conflict", `a container named ${name} already exists`, {
      cause: err,
    });
  }
  if (status === 404) {
    return new AgentBootstrapError("image_not_found", `image ${image} is not on this Docker engine`, {
      cause: err,
    });
  }
  return new AgentBootstrapError("create_failed", `create ${name}: ${dockerMessage(err)}`, { cause: err });
}

function statusOf(err: unknown): number | undefined {
  const s = (err as { statusCode?: unknown } | null)?.statusCode;
  return typeof s === "number" ? s : undefined;
}

function isUnavailable(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === "ECONNREFUSED" || code === "ENOENT" || code === "EACCES" || code === "ECONNRESET";
}

/** Docker's own message (`json.message`) when it sent one, else the error's. */
function dockerMessage(err: unknown): string {
  const json = (err as { json?: { message?: unknown } } | null)?.json;
  if (typeof json?.message === "string") return json.message;
  return err instanceof Error ? err.message : String(err);
}

/** One block device's rate limit (Docker's `--device-*-bps` / `--device-*-iops`). */
export interface DeviceRate {
  /** The device node on the Docker host, e.g. `/dev/sda`. */
  readonly path: string;
  readonly rate: number;
}

/** An agent container's resource limits (Docker host config). */
export interface AgentLimits {
  /** CPUs in billionths (Docker `--cpus 0.5` = 500_000_000). */
  readonly nanoCpus?: number;
  /** memory.max in bytes; swap is pinned to none and the soft limit (reservation) set at 75%. */
  readonly memoryBytes?: number;
  readonly pidsLimit?: number;
  readonly deviceReadBps?: readonly DeviceRate[];
  readonly deviceWriteBps?: readonly DeviceRate[];
  readonly deviceReadIops?: readonly DeviceRate[];
  readonly deviceWriteIops?: readonly DeviceRate[];
}

/** Docker HostConfig fields for `limits` (the seed's shape: 75% high mark, no swap). */
export function agentLimitsHostConfig(limits: AgentLimits | undefined): Record<string, unknown> {
  if (limits === undefined) return {};
  const rates = (
    list: readonly DeviceRate[] | undefined,
  ): Array<{ Path: string; Rate: number }> | undefined =>
    list === undefined || list.length === 0 ? undefined : list.map((d) => ({ Path: d.path, Rate: d.rate }));
  const out: Record<string, unknown> = {};
  if (limits.nanoCpus !== undefined) out["NanoCpus"] = limits.nanoCpus;
  if (limits.memoryBytes !== undefined) {
    out["Memory"] = limits.memoryBytes;
    // Memory + swap equal to memory: no swap.
    out["MemorySwap"] = limits.memoryBytes;
    out["MemoryReservation"] = Math.floor(limits.memoryBytes * 0.75);
  }
  if (limits.pidsLimit !== undefined) out["PidsLimit"] = limits.pidsLimit;
  const pairs = [
    ["BlkioDeviceReadBps", rates(limits.deviceReadBps)],
    ["BlkioDeviceWriteBps", rates(limits.deviceWriteBps)],
    ["BlkioDeviceReadIOps", rates(limits.deviceReadIops)],
    ["BlkioDeviceWriteIOps", rates(limits.deviceWriteIops)],
  ] as const;
  for (const [key, value] of pairs) if (value !== undefined) out[key] = value;
  return out;
}
