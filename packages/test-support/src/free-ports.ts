// Ports for servers a test starts (often in a child process that binds them itself), without the
// bind(0)-then-close race: a port the kernel just handed out for :0 is exactly the one it hands
// out next, to a parallel test or to an outgoing connection.
import { createSocket } from "node:dgram";
import { createServer } from "node:net";

/**
 * Where handed-out ports come from: below Linux's default ip_local_port_range (32768-60999), so the
 * kernel never picks one of them for a bind to :0 or for the source port of a connection.
 */
const RANGE_START = 20_000;
const RANGE_END = 32_768;
/** Each process draws from its own slice (chosen by pid), so parallel test processes do not meet. */
const SLICE = 256;
const SLICES = Math.floor((RANGE_END - RANGE_START) / SLICE);

/** Options for freePorts. */
export interface FreePortsOptions {
  /** Addresses every port must be free on; default 127.0.0.1. */
  readonly hosts?: readonly string[];
  /** Protocols every port must be free for; default tcp. */
  readonly protocols?: readonly ("tcp" | "udp")[];
  /** Hand out `count` consecutive ports (for configs that take a base port). */
  readonly consecutive?: boolean;
}

/** Thrown when this process's share of the range is used up. */
export class FreePortsError extends Error {
  readonly reason = "exhausted";
}

let cursor = 0;

/**
 * Returns `count` ports free now on every host and protocol asked for. Ports come from a
 * per-process slice of 20000-32767 and none is handed out twice by one process; a port another
 * program holds is skipped. What is left (an unrelated program binding the port before the test
 * does) is what `withFreePorts` retries.
 */
export async function freePorts(count: number, options: FreePortsOptions = {}): Promise<number[]> {
  const hosts = options.hosts ?? ["127.0.0.1"];
  const protocols = options.protocols ?? ["tcp"];
  const out: number[] = [];
  while (out.length < count) {
    if (cursor + (options.consecutive === true ? count : 1) > SLICES * SLICE) {
      throw new FreePortsError(`no ${count} free ports left in ${RANGE_START}-${RANGE_END - 1}`);
    }
    const port = portAt(cursor++);
    // A consecutive run restarts when a port is taken or the run would cross into another slice.
    const broken = options.consecutive === true && out.length > 0 && port !== out.at(-1)! + 1;
    if (broken) out.length = 0;
    if (await isFree(port, hosts, protocols)) out.push(port);
    else if (options.consecutive === true) out.length = 0;
  }
  return out;
}

/** One port, as freePorts(1, options). */
export async function freePort(options: FreePortsOptions = {}): Promise<number> {
  const [port] = await freePorts(1, options);
  return port!;
}

/**
 * Calls `use` with fresh ports until it does not fail with EADDRINUSE (anywhere in the error's
 * message or cause chain), at most `attempts` times; for the caller that binds the ports itself.
 */
export async function withFreePorts<T>(
  count: number,
  use: (ports: number[]) => Promise<T>,
  { attempts = 5, ...options }: FreePortsOptions & { readonly attempts?: number } = {},
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await use(await freePorts(count, options));
    } catch (err) {
      if (attempt >= attempts || !isAddrInUse(err)) throw err;
    }
  }
}

/** True when `err` (or a cause of it) says an address was in use. */
export function isAddrInUse(err: unknown): boolean {
  for (let e = err, depth = 0; e !== undefined && e !== null && depth < 10; depth++) {
    if (typeof e !== "object") return typeof e === "string" && e.includes("EADDRINUSE");
    const { code, message, cause } = e as { code?: unknown; message?: unknown; cause?: unknown };
    if (code === "EADDRINUSE" || (typeof message === "string" && message.includes("EADDRINUSE"))) return true;
    e = cause;
  }
  return false;
}

/** The n-th port of this process: its own slice first, then the following slices in turn. */
function portAt(n: number): number {
  const slice = (process.pid + Math.floor(n / SLICE)) % SLICES;
  return RANGE_START + slice * SLICE + (n % SLICE);
}

async function isFree(
  port: number,
  hosts: readonly string[],
  protocols: readonly string[],
): Promise<boolean> {
  const held: Array<() => Promise<void>> = [];
  try {
    for (const host of hosts) {
      for (const protocol of protocols) held.push(await (protocol === "udp" ? holdUdp : holdTcp)(port, host));
    }
    return true;
  } catch {
    return false;
  } finally {
    await Promise.all(held.map((release) => release()));
  }
}

function holdTcp(port: number, host: string): Promise<() => Promise<void>> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen({ port, host, exclusive: true }, () =>
      resolve(() => new Promise<void>((r) => server.close(() => r()))),
    );
  });
}

function holdUdp(port: number, host: string): Promise<() => Promise<void>> {
  return new Promise((resolve, reject) => {
    const socket = createSocket(host.includes(":") ? "udp6" : "udp4");
    socket.once("error", reject);
    socket.bind({ port, address: host, exclusive: true }, () =>
      resolve(() => new Promise<void>((r) => socket.close(() => r()))),
    );
  });
}
