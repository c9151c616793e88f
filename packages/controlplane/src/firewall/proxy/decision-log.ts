// Receives HAProxy's per-connection and per-request JSON log lines on a loopback UDP socket and
// turns them into typed decisions. Any local process can send to a loopback port, so a line
// counts only when it starts with the token rendered into this run's (0600) config.
import { randomBytes } from "node:crypto";
import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
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
  readonly log: Logger;
}

/** The loopback UDP receiver of the proxy's decision lines. */
export class DecisionLog {
  /** Rendered at the start of every line of this run. */
  readonly token = randomBytes(16).toString("hex");
  readonly #onDecision: (decision: ProxyDecision) => void;
  readonly #log: Logger;
  #socket: Socket | undefined;
  #closed = false;

  constructor(options: DecisionLogOptions) {
    this.#onDecision = options.onDecision;
    this.#log = options.log;
  }

  /** Binds 127.0.0.1 on a free port; resolves with the port to render into the config. */
  async start(): Promise<number> {
    const socket = createSocket("udp4");
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
    return socket.address().port;
  }

  /** Closes the socket. Idempotent. */
  close(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#closed = true;
    const socket = this.#socket;
    if (socket === undefined) return Promise.resolve();
    return new Promise((resolve) => socket.close(() => resolve()));
  }

  #receive(msg: Buffer, rinfo: RemoteInfo): void {
    const line = msg.toString("utf8").trimEnd();
    if (rinfo.address !== "127.0.0.1" || !line.startsWith(`{"k":"${this.token}"`)) {
      // HAProxy's own notices (server state changes) arrive here too; so could anything local.
      this.#log.debug({ event: "proxy_log_other", line: line.slice(0, 200) }, "proxy log line without token");
      return;
    }
    const decision = parseDecisionLine(line);
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

/** HAProxy prints `-` for an unset variable. */
function str(v: unknown): string | undefined {
  return typeof v === "string" && v !== "-" && v !== "" ? v : undefined;
}

function num(v: unknown): number | undefined {
  if (typeof v === "number" && Number.isFinite(v)) return v;
  if (typeof v === "string" && /^-?\d+$/.test(v)) return Number(v);
  return undefined;
}
