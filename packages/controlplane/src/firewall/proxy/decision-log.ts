// Receives HAProxy's per-connection and per-request JSON log lines as a stream: HAProxy logs
// into a ring buffer (`ring decisions`, haproxy-config.ts) whose forwarder connects to a Unix
// socket this class listens on, in the proxy's 0700 run directory (socket 0600), and writes the
// lines newline-delimited. One read carries many lines, so the per-line cost is the parse, not a
// datagram's syscall and callback (issue 11: ~7 us per datagram in Node's dgram alone). Only root
// can connect; a line still counts only when it starts with the token rendered into this run's
// (0600) config. When the daemon reads slower than HAProxy logs, HAProxy's ring drops lines and
// says so in-band with its next line (`N events dropped`): counted, so no loss is silent (§1).
import { randomBytes } from "node:crypto";
import { chmod, rm } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import type { Logger } from "pino";

/**
 * Where a decision was taken: the TLS catch-all (SNI), interception, plain HTTP, a route listener,
 * or the UDP relay (../udp-relay.ts, which reports in this shape too).
 */
export type DecisionLayer = "tls" | "mitm" | "http" | "tcp" | "udp";

/** One connection (tls, tcp) or one request (mitm, http) and what the proxy decided about it. */
export interface ProxyDecision {
  readonly layer: DecisionLayer;
  /** Unix time in seconds when the connection or request was accepted. */
  readonly time: number;
  readonly source: string;
  readonly sourcePort: number;
  readonly agent: string | undefined;
  readonly project: string | undefined;
  /** SNI, Host name, or the route listener's name (`l<port>`). */
  readonly name: string | undefined;
  /** The destination port the agent dialed. */
  readonly port: number | undefined;
  readonly verdict: "allow" | "deny";
  /** Why it was denied: no_rule, rule_denies, path_denied, forbidden_destination, unresolvable, ... */
  readonly reason: string | undefined;
  readonly rule: string | undefined;
  /** The address the proxy connected to, after resolving the name. */
  readonly upstream: string | undefined;
  readonly method: string | undefined;
  readonly path: string | undefined;
  /** HTTP status sent to the agent (mitm and http layers). */
  readonly status: number | undefined;
  readonly durationMs: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
  /** HAProxy's termination state, e.g. `--` (normal), `K-` (ended by a revocation), `PR` (refused). */
  readonly termination: string;
}

/** Options of a DecisionLog. */
export interface DecisionLogOptions {
  /** The Unix socket to listen on (in a 0700 directory of root's; created 0600). */
  readonly socketPath: string;
  readonly onDecision: (decision: ProxyDecision) => void;
  /** Told of lines HAProxy's ring dropped (reported in-band by HAProxy with its next line). */
  readonly onDropped?: (count: number) => void;
  readonly log: Logger;
}

/** HAProxy's `maxlen` for a line is 16 KiB: a connection buffering more without a newline is not HAProxy. */
const MAX_PENDING_BYTES = 64 * 1024;
const NEWLINE = 0x0a;
/** sink.c's in-band drop notice: `1 event dropped`, `N events dropped`. */
const DROP_NOTICE = /^(\d{1,10}) events? dropped$/;

/** The Unix stream receiver of the proxy's decision lines. */
export class DecisionLog {
  /** Rendered at the start of every line of this run. */
  readonly token = randomBytes(16).toString("hex");
  readonly #socketPath: string;
  readonly #onDecision: (decision: ProxyDecision) => void;
  readonly #onDropped: ((count: number) => void) | undefined;
  readonly #log: Logger;
  /** The token prefix every counted line starts with, as bytes: checked before any decoding. */
  readonly #prefix: Buffer;
  #server: Server | undefined;
  readonly #connections = new Set<Socket>();
  #dropped = 0;
  #closed = false;

  constructor(options: DecisionLogOptions) {
    this.#socketPath = options.socketPath;
    this.#onDecision = options.onDecision;
    this.#onDropped = options.onDropped;
    this.#log = options.log;
    this.#prefix = Buffer.from(`{"k":"${this.token}"`);
  }

  /** Listens on the socket path (a stale file there is removed first); resolves once listening. */
  async start(): Promise<void> {
    await rm(this.#socketPath, { force: true });
    const server = createServer((conn) => this.#accept(conn));
    this.#server = server;
    server.on("error", (err) =>
      this.#log.warn({ err, event: "proxy_log_error" }, "decision log socket error"),
    );
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.#socketPath, () => {
        server.off("error", reject);
        resolve();
      });
    });
    // The directory (0700) already keeps everyone else out; the socket is 0600 as every key is.
    await chmod(this.#socketPath, 0o600);
  }

  /** Lines HAProxy reported dropped so far. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Stops listening, ends every connection, removes the socket. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const server = this.#server;
    if (server === undefined) return;
    for (const conn of this.#connections) conn.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(this.#socketPath, { force: true });
  }

  #accept(conn: Socket): void {
    this.#connections.add(conn);
    // Bytes after the last newline of the previous read: a line split across reads.
    let pending: Buffer | undefined;
    const resume = (): void => {
      if (!conn.destroyed) conn.resume();
    };
    conn.on("data", (chunk: Buffer) => {
      // One read (up to 64 KiB, a few hundred lines) per turn of the event loop: libuv would
      // otherwise read up to 32 times in a row while HAProxy keeps the socket full, and the RPCs
      // waiting on the same loop would starve behind a flood. What HAProxy cannot hand over
      // meanwhile waits in its ring (drops counted).
      conn.pause();
      setImmediate(resume);
      let from = 0;
      if (pending !== undefined) {
        // Only the split line is joined: copying the whole read to prepend a few bytes is not.
        const nl = chunk.indexOf(NEWLINE);
        if (nl < 0) {
          pending = Buffer.concat([pending, chunk]);
          if (pending.length > MAX_PENDING_BYTES) this.#overlong(conn, pending.length);
          return;
        }
        const line = Buffer.concat([pending, chunk.subarray(0, nl)]);
        pending = undefined;
        if (line.length > 0) this.#line(line, 0, line.length);
        from = nl + 1;
      }
      const end = this.#lines(chunk, from);
      if (end < chunk.length) {
        // A copy: the rest of the read's buffer is not kept alive for a partial line.
        pending = Buffer.from(chunk.subarray(end));
        if (pending.length > MAX_PENDING_BYTES) this.#overlong(conn, pending.length);
      }
    });
    conn.on("error", (err) =>
      this.#log.warn({ err, event: "proxy_log_error" }, "decision log connection error"),
    );
    conn.on("close", () => this.#connections.delete(conn));
  }

  /** A connection that sent 64 KiB without a newline is not HAProxy's: cut. */
  #overlong(conn: Socket, bytes: number): void {
    this.#log.warn({ event: "proxy_log_unparsed", bytes }, "unparseable proxy decision line");
    conn.destroy();
  }

  /** Handles every complete line in `data` from `start`; returns the offset after the last newline. */
  #lines(data: Buffer, start: number): number {
    for (;;) {
      const nl = data.indexOf(NEWLINE, start);
      if (nl < 0) return start;
      if (nl > start) this.#line(data, start, nl);
      start = nl + 1;
    }
  }

  #line(data: Buffer, start: number, end: number): void {
    // The token is checked on the bytes before anything is decoded: junk costs a compare.
    const prefix = this.#prefix;
    if (
      end - start < prefix.length ||
      data.compare(prefix, 0, prefix.length, start, start + prefix.length) !== 0
    ) {
      this.#other(data.toString("latin1", start, Math.min(end, start + 200)));
      return;
    }
    const decision = parseDecisionLine(data.toString("utf8", start, end));
    if (decision === undefined) {
      this.#log.warn({ event: "proxy_log_unparsed", bytes: end - start }, "unparseable proxy decision line");
      return;
    }
    try {
      this.#onDecision(decision);
    } catch (err) {
      this.#log.error({ err, event: "proxy_decision_handler_failed" }, "decision handler threw");
    }
  }

  /** A line without the token: HAProxy's drop notice, or its own notices (server state changes). */
  #other(line: string): void {
    const m = DROP_NOTICE.exec(line);
    if (m !== null) {
      const count = Number(m[1]);
      this.#dropped += count;
      try {
        this.#onDropped?.(count);
      } catch (err) {
        this.#log.error({ err, event: "proxy_drop_handler_failed" }, "drop handler threw");
      }
      return;
    }
    if (this.#log.isLevelEnabled("debug"))
      this.#log.debug({ event: "proxy_log_other", line }, "proxy log line without token");
  }
}

const layers: ReadonlySet<string> = new Set(["tls", "mitm", "http", "tcp"]);

/** Parses one token-checked log line (the formats in haproxy-config.ts); undefined when malformed. */
export function parseDecisionLine(line: string): ProxyDecision | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof raw !== "object" || raw === null) return undefined;
  const r = raw as Record<string, unknown>;
  const layer = r["layer"];
  if (typeof layer !== "string" || !layers.has(layer)) return undefined;
  const reason = str(r["reason"]);
  const verdict = str(r["verdict"]);
  const status = num(r["status"]);
  // Allowed: a verdict that lets traffic through and no reason to deny. An HTTP request the
  // upstream answered is allowed even when the upstream said 403.
  const allowed = reason === undefined && verdict !== undefined && verdict !== "deny";
  return {
    layer: layer as DecisionLayer,
    time: num(r["ts"]) ?? 0,
    source: str(r["src"]) ?? "",
    sourcePort: num(r["sport"]) ?? 0,
    agent: str(r["agent"]),
    project: str(r["project"]),
    name: str(r["name"]),
    port: num(r["port"]),
    verdict: allowed ? "allow" : "deny",
    reason: allowed ? undefined : (reason ?? "no_rule"),
    rule: str(r["rule"]),
    upstream: str(r["upstream"]),
    method: str(r["method"]),
    path: str(r["path"]),
    status,
    durationMs: num(r["duration_ms"]) ?? 0,
    bytesIn: num(r["bytes_in"]) ?? 0,
    bytesOut: num(r["bytes_out"]) ?? 0,
    termination: str(r["termination"]) ?? "",
  };
}

/** HAProxy prints `-` for an unset variable. */
function str(v: unknown): string | undefined {
  return typeof v === "string" && v !== "-" && v !== "" ? v : undefined;
}

function num(v: unknown): number | undefined {
  if (typeof v === "number" && Number.isFinite(v)) return v;
  if (typeof v === "string" && /^-?\d+$/.test(v)) return Number(v);
  return undefined;
}
