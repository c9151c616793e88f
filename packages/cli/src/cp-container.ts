// The control plane as a Docker container: finding it by label, the exact settings docker/README.md
// documents (two capabilities, host cgroup namespace, bpffs and cgroup2 binds, the Docker socket,
// six trust files read-only, ports on 127.0.0.1 only, the publishing and agents' networks with
// fixed addresses, restart on-failure), and the agents it must not strand.
import { readFileSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { dockerClient } from "@clawker/adminclient";
import { CliError, ExitCode } from "./exit-codes.js";

/** The dockerode client the CLI uses. */
export type DockerClient = ReturnType<typeof dockerClient>;

/** The container's name (the one docker/README.md and compose use). */
export const CP_CONTAINER_NAME = "clawker-controlplane";
/** The image `up --container` runs unless `--image` names another. */
export const DEFAULT_CP_IMAGE = "clawker/controlplane:latest";
/** The named volume holding the daemon's state (registry, auth store, rule store). */
export const CP_DATA_VOLUME = "clawker-cp-data";
/** Where the trust files are inside the container (the image's CLAWKER_CP_TRUST_DIR). */
export const CONTAINER_TRUST_DIR = "/etc/clawker/trust";
/** Where the generated daemon config is mounted inside the container. */
export const CONTAINER_CONFIG = "/etc/clawker/controlplane.json";
/** Where the admin socket's host directory is bound inside the container. */
export const CONTAINER_ADMIN_SOCKET_DIR = "/run/clawker";
/** The listeners' ports inside the container. */
export const CONTAINER_PORTS = { admin: 7443, health: 7080, token: 4444, agent: 7444 } as const;

/** A Docker network the container joins with a fixed address (`.2` of its subnet). */
export interface CpNetworkSpec {
  readonly name: string;
  /** The subnet a network created here gets (an adopted one keeps its own). */
  readonly subnet: string;
  readonly internal: boolean;
}

/**
 * The publishing network (as compose's): admin gRPC and /healthz bind the container's address
 * here only, and the ports are published from it; agents are never on it.
 */
export const CP_PUBLISH_NETWORK: CpNetworkSpec = {
  name: "clawker-cp",
  subnet: "10.214.0.0/24",
  internal: false,
};
/**
 * The agents' network (`clawker run --network clawker-agents`): internal, so agents have no route
 * out but the proxy's; the container's address there carries the proxy, the DNS gate, the agent
 * listener and the token endpoint.
 */
export const CP_AGENTS_NETWORK: CpNetworkSpec = {
  name: "clawker-agents",
  subnet: "10.213.0.0/24",
  internal: true,
};

/** A network the container is on, with its address there. */
export interface CpNetwork {
  readonly name: string;
  readonly subnet: string;
  readonly address: string;
}

/** The default agents' cgroup parent (`ebpf.cgroupParent`; `clawker run`'s default too). */
export const DEFAULT_CGROUP_PARENT = "clawker";

/**
 * The trust files the daemon reads (packages/controlplane/src/trust-dir.ts), and only those: the
 * CA key and the CLI's own keys stay on the host.
 */
export const CP_TRUST_FILES = [
  "ca.crt",
  "controlplane.crt",
  "controlplane.key",
  "controlplane-client.crt",
  "controlplane-client.key",
  "cli-signing.pub.jwk",
] as const;

const LABEL_MANAGED = "dev.clawker.managed";
const LABEL_PURPOSE = "dev.clawker.purpose";
/** The image reference the container was created from (Docker keeps only the resolved id). */
const LABEL_IMAGE_REF = "dev.clawker.controlplane.image";

/** What `up`, `down` and `status` need to know about the control-plane container. */
export interface CpContainer {
  readonly id: string;
  readonly name: string;
  /** The image id it runs (`sha256:...`). */
  readonly imageId: string;
  /** The reference it was created from, when this CLI created it. */
  readonly imageRef: string | undefined;
  /** Docker's state: `running`, `restarting`, `exited`, `created`, ... */
  readonly state: string;
  readonly exitCode: number;
  /** The image HEALTHCHECK's verdict, when it has one. */
  readonly health: string | undefined;
  readonly startedAt: string;
}

/** Where the published ports go on the host (127.0.0.1 only) and the token issuer they imply. */
export interface PublishedPorts {
  readonly admin: { host: string; port: number };
  readonly health: { host: string; port: number };
  readonly token: { host: string; port: number };
  /** `https://<token host>:<token port>`: what the host CLI dials, so what tokens' `aud` names. */
  readonly issuer: string;
}

/** Everything the container is created from. */
export interface CpContainerSettings {
  readonly image: string;
  readonly trustDir: string;
  /** The generated daemon config on the host (mounted read-only). */
  readonly configFile: string;
  /** The Docker socket on the host (mounted for the daemon's agent watcher). */
  readonly dockerSocket: string;
  /** The cgroup2 mount point, bound read-only at the same path. */
  readonly cgroup2: string;
  /** The agents' cgroup parent's directory under `cgroup2` (`clawker`, or `clawker.slice`). */
  readonly cgroupParentDir: string;
  readonly ports: PublishedPorts;
  /** The container's address on the publishing network and on the agents' network. */
  readonly publish: CpNetwork;
  readonly agents: CpNetwork;
  /** The admin socket's directory on the host and the gid given to the daemon (--group-add). */
  readonly adminSocket?: AdminSocketMount | undefined;
}

/** The host side of the admin socket: its directory (bound) and the group that may connect. */
export interface AdminSocketMount {
  readonly hostDir: string;
  /** The group's gid on the host, or undefined when it does not exist (the socket stays 0600). */
  readonly gid: number | undefined;
  /** The group's name (what the daemon looks up when there is no gid). */
  readonly group: string;
}

function statusOf(err: unknown): number | undefined {
  return typeof err === "object" && err !== null && "statusCode" in err && typeof err.statusCode === "number"
    ? err.statusCode
    : undefined;
}

/** A Docker failure as a CLI error: unreachable engine and API errors, one line each. */
export function dockerError(what: string, err: unknown): CliError {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (code === "ENOENT" || code === "ECONNREFUSED" || code === "EACCES") {
    return new CliError(ExitCode.error, `${what}: cannot reach Docker (${code})`, { cause: err });
  }
  const json = (err as { json?: { message?: unknown } } | undefined)?.json;
  const message =
    typeof json?.message === "string" ? json.message : err instanceof Error ? err.message : String(err);
  return new CliError(ExitCode.error, `${what}: ${message}`, { cause: err });
}

/**
 * The control-plane container: the one labelled managed + purpose=controlplane, or undefined. A
 * container that only took the name is not ours (up refuses it); two labelled ones are an error.
 */
export async function findCpContainer(docker: DockerClient): Promise<CpContainer | undefined> {
  let listed;
  try {
    listed = await docker.listContainers({
      all: true,
      filters: { label: [`${LABEL_MANAGED}=true`, `${LABEL_PURPOSE}=controlplane`] },
    });
  } catch (err) {
    throw dockerError("list the control-plane container", err);
  }
  if (listed.length > 1) {
    throw new CliError(
      ExitCode.error,
      `${listed.length} containers are labelled as the control plane (${listed.map((c) => c.Id.slice(0, 12)).join(", ")}); remove all but one`,
    );
  }
  const only = listed[0];
  return only === undefined ? undefined : await inspectCp(docker, only.Id);
}

/**
 * The control-plane container's address on `network` when `controlplane up --container` made one
 * and it is attached there (its agent listener and token endpoint listen on that address, not on
 * the network's gateway), else undefined. A stopped container keeps the fixed address it was
 * connected with.
 */
export async function cpAddressOn(docker: DockerClient, network: string): Promise<string | undefined> {
  const cp = await findCpContainer(docker);
  if (cp === undefined) return undefined;
  let endpoint;
  try {
    endpoint = (await docker.getContainer(cp.id).inspect()).NetworkSettings.Networks[network];
  } catch (err) {
    throw dockerError(`inspect container ${cp.id.slice(0, 12)}`, err);
  }
  // @types/dockerode types IPAMConfig loosely; the Engine API's is `{ IPv4Address?: string }`.
  const ipam = endpoint?.IPAMConfig as { IPv4Address?: unknown } | undefined;
  const fixed = typeof ipam?.IPv4Address === "string" ? ipam.IPv4Address : "";
  const address = fixed !== "" ? fixed : (endpoint?.IPAddress ?? "");
  return address === "" ? undefined : address;
}

/** Inspects one container as a CpContainer. */
export async function inspectCp(docker: DockerClient, id: string): Promise<CpContainer> {
  let info;
  try {
    info = await docker.getContainer(id).inspect();
  } catch (err) {
    throw dockerError(`inspect container ${id.slice(0, 12)}`, err);
  }
  return {
    id: info.Id,
    name: info.Name.replace(/^\//, ""),
    imageId: info.Image,
    imageRef: info.Config.Labels[LABEL_IMAGE_REF],
    state: info.State.Status,
    exitCode: info.State.ExitCode,
    health: info.State.Health?.Status,
    startedAt: info.State.StartedAt,
  };
}

/** The id of a local image; a missing image is a clear error (nothing is pulled). */
export async function imageId(docker: DockerClient, ref: string): Promise<string> {
  try {
    return (await docker.getImage(ref).inspect()).Id;
  } catch (err) {
    if (statusOf(err) === 404) {
      throw new CliError(
        ExitCode.error,
        `no image ${ref} in this Docker engine (build it: npm run image:build -- controlplane)`,
        { cause: err },
      );
    }
    throw dockerError(`inspect image ${ref}`, err);
  }
}

/** Running managed agent containers (labels managed=true, purpose=agent), as the daemon counts them. */
export async function runningAgents(docker: DockerClient): Promise<string[]> {
  try {
    const listed = await docker.listContainers({
      filters: { label: [`${LABEL_MANAGED}=true`, `${LABEL_PURPOSE}=agent`], status: ["running"] },
    });
    return listed.map((c) => (c.Names[0] ?? c.Id).replace(/^\//, ""));
  } catch (err) {
    throw dockerError("list agent containers", err);
  }
}

/** The cgroup2 mount point (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid host). */
export function cgroup2MountPoint(mounts = readFileSync("/proc/mounts", "utf8")): string {
  const line = mounts.split("\n").find((l) => l.split(" ")[2] === "cgroup2");
  const point = line?.split(" ")[1];
  if (point === undefined) throw new CliError(ExitCode.error, "no cgroup2 mount on this host (/proc/mounts)");
  return point;
}

/** What the container's firewall is given: its network, its address there, the parent, resolvers. */
export interface ContainerFirewall {
  readonly agents: CpNetwork;
  /** `ebpf.cgroupParent`, also the pin directory's name under /sys/fs/bpf. */
  readonly cgroupParent: string;
  /** Upstream resolvers (`firewall.resolvers`); empty leaves the daemon's default. */
  readonly resolvers: ReadonlyArray<{ address: string; port: number }>;
}

/**
 * Writes the daemon config the container mounts: the token endpoint on every interface of the
 * container (the host reaches it published, agents on their network) with the published URL as
 * issuer and the agents' address as its alias, no drain-to-zero (a service stays up, as under compose), the admin socket in the bound
 * directory for the group's gid (the container has no name for it), or no socket, and the eBPF
 * enforcement on with the firewall's proxy and DNS gate on the container's agents' address.
 * 0644: no secret, and root in the container has no CAP_DAC_OVERRIDE.
 */
export async function writeContainerConfig(
  dataDir: string,
  issuer: string,
  adminSocket: AdminSocketMount | undefined,
  firewall: ContainerFirewall,
): Promise<string> {
  const file = join(dataDir, "controlplane-container.json");
  const config = {
    // Agents dial the token endpoint at the agents' address and name that URL as `aud`: accepted
    // as an alias of the published issuer, which the host CLI names.
    auth: {
      publicHost: "0.0.0.0",
      publicPort: CONTAINER_PORTS.token,
      issuer,
      aliases: [`https://${firewall.agents.address}:${CONTAINER_PORTS.token}`],
    },
    agents: { drainToZero: false },
    listen: {
      adminSocket:
        adminSocket === undefined
          ? { enabled: false }
          : { path: `${CONTAINER_ADMIN_SOCKET_DIR}/admin.sock`, group: adminSocket.gid ?? adminSocket.group },
    },
    // One name for the parent and the pins, so two control planes (tests) never share either.
    ebpf: {
      enabled: true,
      cgroupParent: firewall.cgroupParent,
      pinDir: `/sys/fs/bpf/${firewall.cgroupParent}`,
    },
    firewall: {
      network: firewall.agents.name,
      proxy: { address: firewall.agents.address },
      dns: { address: firewall.agents.address },
      ...(firewall.resolvers.length === 0 ? {} : { resolvers: firewall.resolvers }),
    },
  };
  await writeFile(file, JSON.stringify(config, null, 2) + "\n", { mode: 0o644 });
  return file;
}

/**
 * The parent's directory under the cgroup2 mount, as the daemon's cgroup layout and Docker name
 * it: `name` with the cgroupfs driver; `name.slice` with systemd's, a dash nesting it as systemd
 * does (`a-b` is `a.slice/a-b.slice`).
 */
export function cgroupParentDir(name: string, driver: string): string {
  if (driver !== "systemd") return name;
  const parts = name.split("-");
  return parts.map((_, i) => `${parts.slice(0, i + 1).join("-")}.slice`).join("/");
}

/** The upstream resolvers a resolv.conf names: IPv4, not loopback, at most 4, port 53. */
export function resolversOf(resolvConf: string): Array<{ address: string; port: number }> {
  const found: Array<{ address: string; port: number }> = [];
  for (const line of resolvConf.split("\n")) {
    const [keyword, address] = line.trim().split(/\s+/);
    if (keyword !== "nameserver" || address === undefined || !/^\d{1,3}(\.\d{1,3}){3}$/.test(address))
      continue;
    // A loopback stub (systemd-resolved, Docker's 127.0.0.11) is the host's own: the container cannot use it.
    if (address.startsWith("127.") || address.startsWith("0.")) continue;
    if (!found.some((r) => r.address === address)) found.push({ address, port: 53 });
  }
  return found.slice(0, 4);
}

/**
 * The host's upstream resolvers: /etc/resolv.conf's, else systemd-resolved's upstream list (what
 * Docker itself falls back to when the host names only the 127.0.0.53 stub); empty when neither.
 */
export function hostResolvers(
  read: (path: string) => string = (p) => readFileSync(p, "utf8"),
): Array<{ address: string; port: number }> {
  for (const path of ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"]) {
    let text: string;
    try {
      text = read(path);
    } catch {
      continue;
    }
    const found = resolversOf(text);
    if (found.length > 0) return found;
  }
  return [];
}

/** The address `n` of an IPv4 subnet (`10.213.0.0/24`, 2: `10.213.0.2`), or undefined if none. */
export function subnetHost(subnet: string, n: number): string | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(subnet);
  if (m === null) return undefined;
  const prefix = Number(m[5]);
  if (prefix > 29) return undefined;
  const base = ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
  const mask = prefix === 0 ? 0 : (0xffff_ffff << (32 - prefix)) >>> 0;
  const addr = ((base & mask) + n) >>> 0;
  return [addr >>> 24, (addr >>> 16) & 255, (addr >>> 8) & 255, addr & 255].join(".");
}

/**
 * Creates the network, or adopts the one of that name: the container's fixed address is `.2` of
 * its subnet (Docker gives `.1` to the gateway and allocates others from `.3` on once `.2` is
 * taken). An adopted network without a configured subnet cannot hold a fixed address: an error.
 */
export async function ensureNetwork(docker: DockerClient, spec: CpNetworkSpec): Promise<CpNetwork> {
  const inspect = async (): Promise<CpNetwork | undefined> => {
    let info;
    try {
      info = (await docker.getNetwork(spec.name).inspect()) as {
        IPAM?: { Config?: Array<{ Subnet?: string }> | null };
      };
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw dockerError(`inspect network ${spec.name}`, err);
    }
    const subnet = (info.IPAM?.Config ?? []).map((c) => c.Subnet).find((s) => s?.includes(".") === true);
    const address = subnet === undefined ? undefined : subnetHost(subnet, 2);
    if (subnet === undefined || address === undefined) {
      throw new CliError(
        ExitCode.error,
        `network ${spec.name} has no IPv4 subnet of /29 or wider configured, so the control plane cannot take a fixed address on it; remove it (docker network rm ${spec.name}) and run up again`,
      );
    }
    return { name: spec.name, subnet, address };
  };
  const found = await inspect();
  if (found !== undefined) return found;
  try {
    await docker.createNetwork({
      Name: spec.name,
      Driver: "bridge",
      Internal: spec.internal,
      CheckDuplicate: true,
      IPAM: { Config: [{ Subnet: spec.subnet }] },
      Labels: { [LABEL_MANAGED]: "true" },
    });
  } catch (err) {
    // 409: another up made it meanwhile; adopt that one.
    if (statusOf(err) !== 409) throw dockerError(`create network ${spec.name}`, err);
  }
  const made = await inspect();
  if (made === undefined)
    throw new CliError(ExitCode.error, `network ${spec.name} vanished after its creation`);
  return made;
}

/** Joins the container to the agents' network at its fixed address (before it starts). */
export async function connectAgentsNetwork(
  docker: DockerClient,
  id: string,
  agents: CpNetwork,
): Promise<void> {
  try {
    await docker.getNetwork(agents.name).connect({
      Container: id,
      EndpointConfig: { IPAMConfig: { IPv4Address: agents.address } },
    });
  } catch (err) {
    throw dockerError(`connect ${CP_CONTAINER_NAME} to ${agents.name} at ${agents.address}`, err);
  }
}

/**
 * The daemon's own cgroup is where the proxy's SO_ORIGINAL_DST hook goes: in a private cgroup
 * namespace it reads as "/", and opened through the cgroup2 bind that is the host's root. (API
 * 1.41's field, which @types/dockerode does not list.)
 */
const HOST_CGROUPNS = { CgroupnsMode: "host" } as const;

/** The create options: exactly the settings docker/README.md documents, nothing more. */
export function containerCreateOptions(
  s: CpContainerSettings,
): Parameters<DockerClient["createContainer"]>[0] {
  const port = (n: number): string => `${n}/tcp`;
  const publish = (p: { host: string; port: number }) => [{ HostIp: p.host, HostPort: String(p.port) }];
  return {
    name: CP_CONTAINER_NAME,
    Image: s.image,
    Labels: { [LABEL_MANAGED]: "true", [LABEL_PURPOSE]: "controlplane", [LABEL_IMAGE_REF]: s.image },
    Env: [
      // Admin and /healthz on the publishing network only: agents reach every address of their own
      // subnet (the kernel passes it), so nothing but the agent-facing listeners may bind there.
      `CLAWKER_CP_ADMIN_ADDR=${s.publish.address}:${CONTAINER_PORTS.admin}`,
      `CLAWKER_CP_HEALTH_ADDR=${s.publish.address}:${CONTAINER_PORTS.health}`,
      `CLAWKER_CP_AGENT_ADDR=${s.agents.address}:${CONTAINER_PORTS.agent}`,
      `CLAWKER_CP_CONFIG=${CONTAINER_CONFIG}`,
      // Everything enforcement needs is set up here: an explicit on fails start-up rather than run
      // unenforced.
      "CLAWKER_CP_EBPF=true",
    ],
    ExposedPorts: Object.fromEntries(Object.values(CONTAINER_PORTS).map((n) => [port(n), {}])),
    HostConfig: {
      // docker-init as PID 1 reaps what helpers orphan and forwards SIGTERM for the drain.
      Init: true,
      CapDrop: ["ALL"],
      // Loading BPF and attaching it to cgroups needs both in the effective set; never --privileged.
      CapAdd: ["SYS_ADMIN", "NET_ADMIN"],
      SecurityOpt: ["no-new-privileges"],
      ...HOST_CGROUPNS,
      ReadonlyRootfs: true,
      Tmpfs: { "/tmp": "" },
      Binds: [
        "/sys/fs/bpf:/sys/fs/bpf",
        // Attaching needs only a read-only descriptor of the cgroup.
        `${s.cgroup2}:${s.cgroup2}:ro`,
        // The agents' parent, which the manager creates at start (mkdir: EEXIST is fine, EROFS is
        // not): Docker creates a missing bind source, so binding it makes it exist, and it stays
        // read-only like the rest of the tree.
        `${join(s.cgroup2, s.cgroupParentDir)}:${join(s.cgroup2, s.cgroupParentDir)}:ro`,
        `${s.dockerSocket}:/var/run/docker.sock`,
        ...CP_TRUST_FILES.map((f) => `${join(s.trustDir, f)}:${CONTAINER_TRUST_DIR}/${f}:ro`),
        `${s.configFile}:${CONTAINER_CONFIG}:ro`,
        `${CP_DATA_VOLUME}:/var/lib/clawker`,
        ...(s.adminSocket === undefined ? [] : [`${s.adminSocket.hostDir}:${CONTAINER_ADMIN_SOCKET_DIR}`]),
      ],
      // The group as a supplementary group: without CAP_CHOWN the daemon may still give the socket
      // to a group it is a member of, and to no other.
      ...(s.adminSocket?.gid === undefined ? {} : { GroupAdd: [String(s.adminSocket.gid)] }),
      PortBindings: {
        [port(CONTAINER_PORTS.admin)]: publish(s.ports.admin),
        [port(CONTAINER_PORTS.health)]: publish(s.ports.health),
        [port(CONTAINER_PORTS.token)]: publish(s.ports.token),
      },
      RestartPolicy: { Name: "on-failure" },
      NetworkMode: s.publish.name,
    },
    // The published ports come from the network the container is created on; the agents' one
    // (internal: it could not publish anyway) is connected before the start.
    NetworkingConfig: {
      EndpointsConfig: { [s.publish.name]: { IPAMConfig: { IPv4Address: s.publish.address } } },
    },
  };
}

/** The last lines the container wrote (stdout and stderr), for an error report. */
export async function containerLogTail(docker: DockerClient, id: string, lines = 20): Promise<string[]> {
  try {
    const raw = await docker.getContainer(id).logs({
      stdout: true,
      stderr: true,
      tail: lines,
      follow: false,
    });
    return demux(raw)
      .trimEnd()
      .split("\n")
      .filter((l) => l !== "");
  } catch {
    return [];
  }
}

// Docker multiplexes a non-TTY container's streams: an 8-byte header (stream, 0, 0, 0, size BE32).
function demux(buf: Buffer): string {
  const parts: Buffer[] = [];
  let at = 0;
  while (at + 8 <= buf.length) {
    const size = buf.readUInt32BE(at + 4);
    parts.push(buf.subarray(at + 8, at + 8 + size));
    at += 8 + size;
  }
  return Buffer.concat(parts).toString("utf8");
}
