// The Docker client: dockerode on a Unix socket named by DOCKER_HOST (unix:///path or a bare
// absolute path), /var/run/docker.sock by default. TCP/SSH hosts are refused: the control plane
// talks to the local engine only, and an unauthenticated TCP daemon is not something to dial.
import Docker from "dockerode";
import { DockerError } from "./errors.js";

/** The socket used when DOCKER_HOST is unset or empty. */
export const DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock";

/** Options for createDockerClient. */
export interface DockerClientOptions {
  /** A DOCKER_HOST value; defaults to `process.env.DOCKER_HOST`, then DEFAULT_DOCKER_SOCKET. */
  readonly host?: string | undefined;
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

/** A dockerode client for the socket DOCKER_HOST names. No I/O happens until the first call. */
export function createDockerClient(options: DockerClientOptions = {}): Docker {
  const host = "host" in options ? options.host : process.env["DOCKER_HOST"];
  return new Docker({ socketPath: parseDockerHost(host) });
}
