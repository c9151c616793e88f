// Receives HAProxy's per-connection and per-request JSON log lines on a loopback UDP socket and
// turns them into typed decisions. Any local process can send to a loopback port, so a line
// counts only when it starts with the token rendered into this run's (0600) config. Lines the
// kernel drops because the socket's receive buffer is full are counted from /proc/net/udp's
// `drops` column for this socket and reported, so no loss is silent (issue 11 §1).
import { randomBytes } from "node:crypto";
import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import { readFileSync } from "node:fs";
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
  readonly onDecision: (decision: ProxyDecision) => void;
  /** Told of lines the kernel dropped at this socket since the last call (a full receive buffer). */
  readonly onDropped?: (count: number) => void;
  readonly log: Logger;
  /** SO_RCVBUF in bytes (default 4 MiB; the kernel caps it at net.core.rmem_max). */
  readonly recvBufferSize?: number;
  /** How often the kernel's drop counter is read (default 1 s). */
  readonly dropPollMs?: number;
  /** The kernel's UDP socket table (default /proc/net/udp); only tests change it. */
  readonly procNetUdp?: string;
}

const DEFAULT_RECV_BUFFER = 4 * 1024 * 1024;
const DEFAULT_DROP_POLL_MS = 1000;

/** The loopback UDP receiver of the proxy's decision lines. */
export class DecisionLog {
  /** Rendered at the start of every line of this run. */
  readonly token = randomBytes(16).toString("hex");
  readonly #onDecision: (decision: ProxyDecision) => void;
  readonly #onDropped: ((count: number) => void) | undefined;
  readonly #log: Logger;
  readonly #recvBufferSize: number;
  readonly #dropPollMs: number;
  readonly #procNetUdp: string;
  /** The token prefix every counted line starts with, as bytes: checked before any decoding. */
  readonly #prefix: Buffer;
  #socket: Socket | undefined;
  /** `0100007F:PORT` as /proc/net/udp prints this socket's local address. */
  #procAddress: string | undefined;
  #kernelDrops = 0;
  #dropsUnreadable = false;
  #dropTimer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(options: DecisionLogOptions) {
    this.#onDecision = options.onDecision;
    this.#onDropped = options.onDropped;
    this.#log = options.log;
    this.#recvBufferSize = options.recvBufferSize ?? DEFAULT_RECV_BUFFER;
    this.#dropPollMs = options.dropPollMs ?? DEFAULT_DROP_POLL_MS;
    this.#procNetUdp = options.procNetUdp ?? "/proc/net/udp";
    this.#prefix = Buffer.from(`{"k":"${this.token}"`);
  }

  /** Binds 127.0.0.1 on a free port; resolves with the port to render into the config. */
  async start(): Promise<number> {
    // A bigger buffer rides out bursts while the event loop is busy elsewhere (default ~208 KiB:
    // about a thousand lines).
    const socket = createSocket({ type: "udp4", recvBufferSize: this.#recvBufferSize });
    this.#socket = socket;
    socket.on("message", (msg, rinfo) => this.#receive(msg, rinfo));
    socket.on("error", (err) =>
      this.#log.warn({ err, event: "proxy_log_error" }, "decision log socket error"),
    );
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.bind(0, "127.0.0.1", () => {
        socket.off("error", reject);
        resolve();
      });
    });
    const port = socket.address().port;
    this.#procAddress = `0100007F:${port.toString(16).toUpperCase().padStart(4, "0")}`;
    // The kernel's counter starts at 0 for a new socket; read now so a table we cannot read is
    // logged at start.
    this.countKernelDrops();
    this.#dropTimer = setInterval(() => this.countKernelDrops(), this.#dropPollMs);
    this.#dropTimer.unref();
    return port;
  }

  /**
   * Reads the kernel's drop counter of this socket and reports what is new to `onDropped`;
   * returns the total dropped so far. Called every `dropPollMs` and at close.
   */
  countKernelDrops(): number {
    if (this.#procAddress === undefined) return this.#kernelDrops;
    const total = readSocketDrops(this.#procNetUdp, this.#procAddress);
    if (total === undefined) {
      // Once, not every second: the table does not come back by itself.
      if (!this.#dropsUnreadable)
        this.#log.warn(
          { event: "proxy_log_drops_unreadable" },
          "cannot read the decision socket's drop counter",
        );
      this.#dropsUnreadable = true;
      return this.#kernelDrops;
    }
    const fresh = total - this.#kernelDrops;
    if (fresh > 0) {
      this.#kernelDrops = total;
      try {
        this.#onDropped?.(fresh);
      } catch (err) {
        this.#log.error({ err, event: "proxy_drop_handler_failed" }, "drop handler threw");
      }
    }
    return this.#kernelDrops;
  }

  /** Counts the last drops and closes the socket. Idempotent. */
  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    clearInterval(this.#dropTimer);
    const socket = this.#socket;
    if (socket === undefined) return Promise.resolve();
    this.countKernelDrops();
    this.#procAddress = undefined;
    return new Promise((resolve) => socket.close(() => resolve()));
  }

  #receive(msg: Buffer, rinfo: RemoteInfo): void {
    // The token is checked on the bytes before anything is decoded: a flood of junk costs a compare.
    const prefix = this.#prefix;
    if (
      rinfo.address !== "127.0.0.1" ||
      msg.length < prefix.length ||
      msg.compare(prefix, 0, prefix.length, 0, prefix.length) !== 0
    ) {
      // HAProxy's own notices (server state changes) arrive here too; so could anything local.
      if (this.#log.isLevelEnabled("debug"))
        this.#log.debug(
          { event: "proxy_log_other", line: msg.toString("utf8", 0, 200) },
          "proxy log line without token",
        );
      return;
    }
    const decision = parseDecisionLine(msg.toString("utf8"));
    if (decision === undefined) {
      this.#log.warn({ event: "proxy_log_unparsed", bytes: msg.length }, "unparseable proxy decision line");
      return;
    }
    try {
      this.#onDecision(decision);
    } catch (err) {
      this.#log.error({ err, event: "proxy_decision_handler_failed" }, "decision handler threw");
    }
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

/**
 * The `drops` column of the socket bound to `address` (`HEXIP:HEXPORT`) in a /proc/net/udp table;
 * undefined when the table cannot be read or holds no such socket.
 */
export function readSocketDrops(table: string, address: string): number | undefined {
  let text: string;
  try {
    text = readFileSync(table, "latin1");
  } catch {
    return undefined;
  }
  // Each row: `sl: local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops`.
  // Matched after the row number's colon: the local address, never a peer's remote address.
  const at = text.indexOf(`: ${address} `);
  if (at < 0) return undefined;
  const end = text.indexOf("\n", at);
  const fields = text
    .slice(at, end < 0 ? undefined : end)
    .trim()
    .split(/\s+/);
  const drops = Number(fields[fields.length - 1]);
  return Number.isSafeInteger(drops) && drops >= 0 ? drops : undefined;
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
