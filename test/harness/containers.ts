// Running a container to completion and reading what it printed, for tests.
import type Docker from "dockerode";

/** Options for runContainer. */
export interface RunContainerOptions {
  readonly image: string;
  readonly cmd: readonly string[];
  readonly entrypoint?: readonly string[];
  readonly env?: readonly string[];
  /** e.g. "host" to share the daemon's netns, or a network name. */
  readonly networkMode?: string;
  /** More HostConfig (binds, caps, cgroup parent, ...). */
  readonly hostConfig?: Docker.HostConfig;
  readonly labels?: Readonly<Record<string, string>>;
  /** Kill the container after this long (default 30 s). */
  readonly timeoutMs?: number;
}

/** What a finished container did. */
export interface RunContainerResult {
  readonly exitCode: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Creates, starts and waits for a container, returns its exit code and output, removes it. */
export async function runContainer(
  docker: Docker,
  options: RunContainerOptions,
): Promise<RunContainerResult> {
  const container = await docker.createContainer({
    Image: options.image,
    Cmd: [...options.cmd],
    ...(options.entrypoint === undefined ? {} : { Entrypoint: [...options.entrypoint] }),
    ...(options.env === undefined ? {} : { Env: [...options.env] }),
    Labels: { "dev.clawker.test": "true", ...options.labels },
    HostConfig: {
      ...(options.networkMode === undefined ? {} : { NetworkMode: options.networkMode }),
      ...options.hostConfig,
    },
  });
  try {
    await container.start();
    let timer: NodeJS.Timeout | undefined;
    const timeoutMs = options.timeoutMs ?? 30_000;
    const waited = await Promise.race([
      container.wait() as Promise<{ StatusCode: number }>,
      new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), timeoutMs))),
    ]);
    clearTimeout(timer);
    if (waited === "timeout") throw new Error(`container ${options.cmd.join(" ")} ran over ${timeoutMs} ms`);
    const logs = await container.logs({ stdout: true, stderr: true, follow: false });
    return { exitCode: waited.StatusCode, ...demux(logs) };
  } finally {
    await container.remove({ force: true }).catch(() => undefined);
  }
}

/**
 * Splits Docker's multiplexed log stream (non-TTY): frames of an 8-byte header [stream, 0, 0, 0,
 * size u32 BE] then `size` bytes; stream 1 is stdout, 2 stderr.
 */
export function demux(buf: Buffer): { stdout: string; stderr: string } {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let at = 0;
  while (at + 8 <= buf.length) {
    const stream = buf[at];
    const size = buf.readUInt32BE(at + 4);
    const frame = buf.subarray(at + 8, at + 8 + size);
    (stream === 2 ? err : out).push(frame);
    at += 8 + size;
  }
  return { stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(err).toString("utf8") };
}
