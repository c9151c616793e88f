// The control plane as a Docker container: finding it by label, the exact settings docker/README.md
// documents (two capabilities, bpffs and cgroup2 binds, the Docker socket, six trust files
// read-only, ports on 127.0.0.1 only, restart on-failure), and the agents it must not strand.
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
export const CONTAINER_PORTS = { admin: 7443, health: 7080, token: 4444 } as const;

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
  readonly ports: PublishedPorts;
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

/**
 * Writes the daemon config the container mounts: the token endpoint on every interface of the
 * container with the published URL as issuer, no drain-to-zero (a service stays up, as under
 * compose), and the admin socket in the bound directory for the group's gid (the container has
 * no name for it), or no socket. 0644: no secret, and root in the container has no CAP_DAC_OVERRIDE.
 */
export async function writeContainerConfig(
  dataDir: string,
  issuer: string,
  adminSocket?: AdminSocketMount,
): Promise<string> {
  const file = join(dataDir, "controlplane-container.json");
  const config = {
    auth: { publicHost: "0.0.0.0", publicPort: CONTAINER_PORTS.token, issuer },
    agents: { drainToZero: false },
    listen: {
      adminSocket:
        adminSocket === undefined
          ? { enabled: false }
          : { path: `${CONTAINER_ADMIN_SOCKET_DIR}/admin.sock`, group: adminSocket.gid ?? adminSocket.group },
    },
  };
  await writeFile(file, JSON.stringify(config, null, 2) + "\n", { mode: 0o644 });
  return file;
}

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
      `CLAWKER_CP_ADMIN_ADDR=0.0.0.0:${CONTAINER_PORTS.admin}`,
      `CLAWKER_CP_HEALTH_ADDR=0.0.0.0:${CONTAINER_PORTS.health}`,
      `CLAWKER_CP_CONFIG=${CONTAINER_CONFIG}`,
    ],
    ExposedPorts: Object.fromEntries(Object.values(CONTAINER_PORTS).map((n) => [port(n), {}])),
    HostConfig: {
      // docker-init as PID 1 reaps what helpers orphan and forwards SIGTERM for the drain.
      Init: true,
      CapDrop: ["ALL"],
      // Loading BPF and attaching it to cgroups needs both in the effective set; never --privileged.
      CapAdd: ["SYS_ADMIN", "NET_ADMIN"],
      SecurityOpt: ["no-new-privileges"],
      ReadonlyRootfs: true,
      Tmpfs: { "/tmp": "" },
      Binds: [
        "/sys/fs/bpf:/sys/fs/bpf",
        // Attaching needs only a read-only descriptor of the cgroup.
        `${s.cgroup2}:${s.cgroup2}:ro`,
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
