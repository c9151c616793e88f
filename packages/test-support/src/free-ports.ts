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
/**
 * Each process draws from slices of its own. It claims a slice by keeping the slice's first port
 * bound (the guard) for as long as it lives: the kernel is the lock, released however the process
 * ends, and no two live processes hold the same slice (a pid modulo the slice count did collide).
 */
const SLICE = 256;
const SLICES = Math.floor((RANGE_END - RANGE_START) / SLICE);
const GUARD_HOST = "127.0.0.1";

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

/** Slices this process holds, in claim order; their guards stay bound (unref'd) until exit. */
const slices: number[] = [];
/** How many ports of the last claimed slice (after its guard) were handed out or skipped. */
let used = SLICE - 1;
/** Calls run one after another: a slice is claimed, and each port handed out, once. */
let queue: Promise<unknown> = Promise.resolve();

/**
 * Returns `count` ports free now on every host and protocol asked for. Ports come from slices of
 * 20000-32767 this process claimed for itself, and none is handed out twice by one process; a port
 * another program holds is skipped. What is left (a program that does not use freePorts binding
 * the port before the test does) is what `withFreePorts` retries.
 */
export function freePorts(count: number, options: FreePortsOptions = {}): Promise<number[]> {
  const next = queue.then(() => take(count, options));
  queue = next.catch(() => undefined);
  return next;
}

async function take(count: number, options: FreePortsOptions): Promise<number[]> {
  const hosts = options.hosts ?? ["127.0.0.1"];
  const protocols = options.protocols ?? ["tcp"];
  const consecutive = options.consecutive === true;
  if (consecutive && count > SLICE - 1) {
    throw new FreePortsError(`no run of ${count} ports fits in one ${SLICE}-port slice`);
  }
  const out: number[] = [];
  while (out.length < count) {
    // A consecutive run never crosses into another slice: it restarts in a fresh one.
    if (used >= SLICE - 1 || (consecutive && out.length === 0 && used + count > SLICE - 1)) {
      await claimSlice();
      out.length = consecutive ? 0 : out.length;
    }
    const port = RANGE_START + slices.at(-1)! * SLICE + 1 + used++;
    if (await isFree(port, hosts, protocols)) out.push(port);
    else if (consecutive) out.length = 0;
  }
  return out;
}

/** Claims the next slice no live process holds, starting from one chosen by pid. */
async function claimSlice(): Promise<void> {
  const first = slices.length === 0 ? process.pid % SLICES : (slices.at(-1)! + 1) % SLICES;
  for (let i = 0; i < SLICES; i++) {
    const slice = (first + i) % SLICES;
    if (slices.includes(slice)) continue;
    if (await holdGuard(RANGE_START + slice * SLICE)) {
      slices.push(slice);
      used = 0;
      return;
    }
  }
  throw new FreePortsError(`every ${SLICE}-port slice of ${RANGE_START}-${RANGE_END - 1} is taken`);
}

/** Binds `port` for the rest of the process's life without keeping it alive; false when taken. */
function holdGuard(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen({ port, host: GUARD_HOST, exclusive: true }, () => {
      server.unref();
      resolve(true);
    });
  });
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
