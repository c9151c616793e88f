// The Docker client: the handful of read-only Engine API calls the control plane makes (info,
// container and network listings and inspects, the events stream), spoken over node:http on the
// Unix socket DOCKER_HOST names (unix:///path or a bare absolute path; /var/run/docker.sock by
// default). TCP/SSH hosts are refused: the control plane talks to the local engine only. A small
// client of our own rather than dockerode keeps SSH, protobuf and tar code (and ~20 MiB of
// resident memory) out of the privileged daemon, and gives every call an AbortSignal.
import type http from "node:http";
import type { Readable } from "node:stream";
import { DockerError, toDockerError } from "./errors.js";
import type { ListedContainer, ListedNetwork } from "./event-parse.js";

// node:http by process.getBuiltinModule, not by import: importing it as an ES module reads its lazy
// WebSocket getters and so loads Node's bundled undici (~90 ms of CPU at start, and its memory).
const { request } = process.getBuiltinModule("node:http");

/** The socket used when DOCKER_HOST is unset or empty. */
export const DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock";

/** Largest response body read into memory (a listing of every container fits many times over). */
export const MAX_BODY_BYTES = 32 * 1024 * 1024;

/** Options for createDockerClient. */
export interface DockerClientOptions {
  /** A DOCKER_HOST value; defaults to `process.env.DOCKER_HOST`, then DEFAULT_DOCKER_SOCKET. */
  readonly host?: string | undefined;
}

/** Docker's `filters` query parameter: each key ANDed, values of one key ORed. */
export type DockerFilters = Readonly<Record<string, readonly string[]>>;

/** `GET /info`, the fields we read. */
export interface EngineInfo {
  /** The engine's clock, RFC 3339 with nanoseconds. */
  readonly SystemTime?: string;
  /** `cgroupfs` or `systemd`: where containers' cgroups live (ebpf/cgroup-layout.ts). */
  readonly CgroupDriver?: string;
}

/** `GET /containers/{id}/json`, the fields we read. */
export interface ContainerInspect {
  readonly Id: string;
  readonly Config?: { readonly Labels?: Readonly<Record<string, string>> | null };
  /** `Pid`: the container's init process on this host (0 when not running). */
  readonly State?: { readonly Running?: boolean; readonly Pid?: number };
  readonly NetworkSettings?: {
    readonly Networks?: Readonly<
      Record<string, { readonly IPAddress?: string; readonly GlobalIPv6Address?: string }>
    > | null;
  };
}

/** `GET /networks/{id}`, the fields we read. */
export interface NetworkInspect {
  readonly Id: string;
  readonly Labels?: Readonly<Record<string, string>> | null;
  /** Address management: each config's subnet and gateway (the firewall's defaults). */
  readonly IPAM?: {
    readonly Config?: ReadonlyArray<{ readonly Subnet?: string; readonly Gateway?: string }> | null;
  };
}

/** The Unix socket path DOCKER_HOST names; throws DockerError("invalid_host") for anything else. */
export function parseDockerHost(value: string | undefined): string {
  const host = (value ?? "").trim();
  if (host === "") return DEFAULT_DOCKER_SOCKET;
  let path: string;
  if (host.startsWith("unix://")) path = host.slice("unix://".length);
  else if (host.startsWith("/")) path = host;
  else {
    const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(host)?.[1] ?? "none";
    throw new DockerError(
      "invalid_host",
      "connect",
      `DOCKER_HOST scheme "${scheme}" is not supported (use unix:///path/to/docker.sock)`,
    );
  }
  if (!path.startsWith("/")) {
    throw new DockerError("invalid_host", "connect", "DOCKER_HOST must name an absolute socket path");
  }
  return path;
}

/** A client for the socket DOCKER_HOST names. No I/O happens until the first call. */
export function createDockerClient(options: DockerClientOptions = {}): DockerClient {
  const host = "host" in options ? options.host : process.env["DOCKER_HOST"];
  return new DockerClient(parseDockerHost(host));
}

/**
 * Read-only Engine API calls on one Unix socket. Each call opens its own connection (they are
 * rare: a reconcile, an inspect per started agent, the watcher's count), so nothing lingers to be
 * closed. Failures are DockerErrors: `unreachable` when nothing answered, `api_error` with the
 * status when the engine refused, `bad_response` when its answer cannot be read; an aborted call
 * rejects with what the signal's abort produced, classified as `unreachable` (callers that set a
 * timeout check their own signal to say `timeout`).
 */
export class DockerClient {
  /** The engine's API socket. */
  readonly socketPath: string;

  constructor(socketPath: string) {
    this.socketPath = socketPath;
  }

  /** `GET /info`. */
  async info(signal?: AbortSignal): Promise<EngineInfo> {
    return objectBody(await this.#json("info", "/info", signal), "info");
  }

  /** `GET /containers/json`: running containers, or every one with `all`. */
  async listContainers(
    query: { readonly all?: boolean; readonly filters?: DockerFilters },
    signal?: AbortSignal,
  ): Promise<ListedContainer[]> {
    const path = `/containers/json${queryString({ all: query.all === true ? "1" : undefined, filters: query.filters })}`;
    return arrayBody(await this.#json("listContainers", path, signal), "listContainers") as ListedContainer[];
  }

  /** `GET /networks`. */
  async listNetworks(
    query: { readonly filters?: DockerFilters },
    signal?: AbortSignal,
  ): Promise<ListedNetwork[]> {
    const path = `/networks${queryString({ filters: query.filters })}`;
    return arrayBody(await this.#json("listNetworks", path, signal), "listNetworks") as ListedNetwork[];
  }

  /** `GET /containers/{id}/json`; a missing container is api_error 404. */
  async inspectContainer(id: string, signal?: AbortSignal): Promise<ContainerInspect> {
    const path = `/containers/${encodeURIComponent(id)}/json`;
    return objectBody(
      await this.#json("inspectContainer", path, signal),
      "inspectContainer",
    ) as ContainerInspect;
  }

  /** `GET /networks/{id}`; a missing network is api_error 404. */
  async inspectNetwork(id: string, signal?: AbortSignal): Promise<NetworkInspect> {
    const path = `/networks/${encodeURIComponent(id)}`;
    return objectBody(await this.#json("inspectNetwork", path, signal), "inspectNetwork") as NetworkInspect;
  }

  /**
   * `GET /events`: resolves with the open body (newline-delimited JSON messages) once the engine
   * accepted the subscription. The stream lives until `signal` aborts, it is destroyed, or the
   * engine goes away; it has no budget of its own (an idle engine sends nothing).
   */
  async events(
    query: { readonly since?: string; readonly filters?: DockerFilters },
    signal?: AbortSignal,
  ): Promise<Readable> {
    const res = await this.#open("events", `/events${queryString(query)}`, signal);
    if (res.statusCode === 200) return res;
    throw await apiError("events", res);
  }

  async #json(operation: string, path: string, signal: AbortSignal | undefined): Promise<unknown> {
    const res = await this.#open(operation, path, signal);
    if (res.statusCode !== 200) throw await apiError(operation, res);
    const text = await readBody(operation, res);
    try {
      return JSON.parse(text) as unknown;
    } catch (err) {
      throw new DockerError("bad_response", operation, `docker ${operation}: the answer is not JSON`, {
        cause: err,
      });
    }
  }

  /** Sends one GET and resolves with the response head; socket failures become DockerErrors. */
  #open(operation: string, path: string, signal: AbortSignal | undefined): Promise<http.IncomingMessage> {
    return new Promise((resolve, reject) => {
      const req = request({
        socketPath: this.socketPath,
        path,
        method: "GET",
        agent: false,
        headers: { accept: "application/json" },
        ...(signal === undefined ? {} : { signal }),
      });
      req.once("response", resolve);
      req.once("error", (err) => reject(toDockerError(err, operation)));
      req.end();
    });
  }
}

function queryString(params: Readonly<Record<string, string | DockerFilters | undefined>>): string {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined) continue;
    search.set(key, typeof value === "string" ? value : JSON.stringify(value));
  }
  const text = search.toString();
  return text === "" ? "" : `?${text}`;
}

/** Reads a whole body, bounded by MAX_BODY_BYTES. */
async function readBody(operation: string, res: http.IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of res as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        res.destroy();
        throw new DockerError(
          "bad_response",
          operation,
          `docker ${operation}: the answer is larger than ${MAX_BODY_BYTES} bytes`,
        );
      }
      chunks.push(chunk);
    }
  } catch (err) {
    throw toDockerError(err, operation);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** The engine refused: api_error with its status and, when it sent one, its message. */
async function apiError(operation: string, res: http.IncomingMessage): Promise<DockerError> {
  const status = res.statusCode ?? 0;
  let detail = "";
  try {
    const body = JSON.parse(await readBody(operation, res)) as { message?: unknown };
    if (typeof body.message === "string") detail = `: ${body.message.slice(0, 200)}`;
  } catch {
    // No readable message: the status says enough.
  }
  return new DockerError("api_error", operation, `docker ${operation}: HTTP ${status}${detail}`, {
    statusCode: status,
  });
}

function objectBody(value: unknown, operation: string): object {
  if (typeof value === "object" && value !== null && !Array.isArray(value)) return value;
  throw new DockerError("bad_response", operation, `docker ${operation}: expected a JSON object`);
}

function arrayBody(value: unknown, operation: string): unknown[] {
  if (!Array.isArray(value))
    throw new DockerError("bad_response", operation, `docker ${operation}: expected a JSON array`);
  for (const item of value) {
    if (typeof item !== "object" || item === null || typeof (item as { Id?: unknown }).Id !== "string")
      throw new DockerError("bad_response", operation, `docker ${operation}: an entry has no Id`);
  }
  return value;
}
