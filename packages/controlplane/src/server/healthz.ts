// GET /healthz on its own plain-HTTP port: not_ready until setReady(), then the aggregate of named
// probes (one per supervised helper, one for the admin listener), run in parallel, cached ~2 s.
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Logger } from "pino";
import type { Probe } from "../supervisor/probes.js";
import { ConnectionBudget } from "./connection-budget.js";
import { RefusalLog } from "./refusal-log.js";

// node:http by process.getBuiltinModule, not by import: importing it as an ES module reads its lazy
// WebSocket getters and so loads Node's bundled undici (~90 ms of CPU at start, and its memory).
const { createServer } = process.getBuiltinModule("node:http");

/** Where and how /healthz serves. */
export interface HealthzOptions {
  readonly logger: Logger;
  /** Bind address; never 0.0.0.0 by default. */
  readonly host?: string;
  /** Port; 0 picks a free one (tests). */
  readonly port?: number;
  /** Bound on each probe; a slower probe counts as failed. */
  readonly probeTimeoutMs?: number;
  /** How long a completed probe round answers requests. */
  readonly cacheMs?: number;
  /** Connections held at once; over it the oldest idle one is closed to make room. */
  readonly maxConnections?: number;
  /** A connection silent this long (before a request or between kept-alive ones) is closed. */
  readonly idleTimeoutMs?: number;
  /** A request's headers must be complete this long after it began. */
  readonly headersTimeoutMs?: number;
  /** A whole request must be received this long after it began. */
  readonly requestTimeoutMs?: number;
  /** Where refusals are counted and (rate-limited) logged; default: one of its own. */
  readonly refusals?: RefusalLog;
  /** Serves `GET /metrics` to callers with the bearer token; without it /metrics is 404. */
  readonly metrics?: MetricsEndpoint;
}

/** What /metrics serves and who may read it. */
export interface MetricsEndpoint {
  /** True when the request's `Authorization` header carries the metrics token. */
  accepts(authorization: string | undefined): boolean;
  /** The Prometheus text page. */
  render(): Promise<{ readonly contentType: string; readonly body: string }>;
}

/** The body /healthz answers with. */
export type HealthStatus =
  | { readonly status: "not_ready" }
  | { readonly status: "unhealthy"; readonly failed_probe: string }
  | { readonly status: "healthy" };

/** Why the health server failed. */
export type HealthzReason = "bind_failed" | "duplicate_probe" | "closed";

/** A health-server failure with a stable `reason`. */
export class HealthzError extends Error {
  override readonly name = "HealthzError";
  /** The stable machine-readable cause. */
  readonly reason: HealthzReason;

  constructor(reason: HealthzReason, message: string, options?: ErrorOptions) {
    super(message, options);
    this.reason = reason;
  }
}

/**
 * Defaults: 127.0.0.1:7080, 1 s per probe, 2 s cache (ARCHITECTURE.md); 64 connections, each closed
 * after 5 s of silence or when its request's headers take over 5 s (the whole request 10 s).
 */
export const HEALTHZ_DEFAULTS = {
  host: "127.0.0.1",
  port: 7080,
  probeTimeoutMs: 1_000,
  cacheMs: 2_000,
  maxConnections: 64,
  idleTimeoutMs: 5_000,
  headersTimeoutMs: 5_000,
  requestTimeoutMs: 10_000,
} as const;

/** The listener name /healthz refusals are counted under. */
export const HEALTHZ_LISTENER = "healthz";

interface Round {
  readonly status: HealthStatus;
  readonly at: number;
}

/** The /healthz HTTP server. Lifecycle: addProbe*, start(signal), setReady(), close(). */
export class HealthServer {
  readonly #log: Logger;
  readonly #host: string;
  readonly #port: number;
  readonly #probeTimeoutMs: number;
  readonly #cacheMs: number;
  /** Registration order decides which failure is reported when several fail. */
  readonly #probes = new Map<string, Probe>();
  readonly #sockets = new Set<Socket>();
  /** Sockets with a request being answered; never evicted. */
  readonly #busy = new WeakSet<Socket>();
  readonly #budget: ConnectionBudget;
  readonly #refusals: RefusalLog;
  readonly #idleTimeoutMs: number;
  readonly #headersTimeoutMs: number;
  readonly #requestTimeoutMs: number;
  readonly #metrics: MetricsEndpoint | undefined;
  #server: Server | undefined;
  #ready = false;
  #cached: Round | undefined;
  #inflight: Promise<HealthStatus> | undefined;
  #lastReported: string | undefined;
  readonly #closing = new AbortController();
  #closed: Promise<void> | undefined;

  constructor(options: HealthzOptions) {
    this.#log = options.logger.child({ component: "healthz" });
    this.#host = options.host ?? HEALTHZ_DEFAULTS.host;
    this.#port = options.port ?? HEALTHZ_DEFAULTS.port;
    this.#probeTimeoutMs = options.probeTimeoutMs ?? HEALTHZ_DEFAULTS.probeTimeoutMs;
    this.#cacheMs = options.cacheMs ?? HEALTHZ_DEFAULTS.cacheMs;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? HEALTHZ_DEFAULTS.idleTimeoutMs;
    this.#headersTimeoutMs = options.headersTimeoutMs ?? HEALTHZ_DEFAULTS.headersTimeoutMs;
    // node:http needs headersTimeout <= requestTimeout.
    this.#requestTimeoutMs = Math.max(
      options.requestTimeoutMs ?? HEALTHZ_DEFAULTS.requestTimeoutMs,
      this.#headersTimeoutMs,
    );
    this.#refusals = options.refusals ?? new RefusalLog({ log: this.#log });
    this.#metrics = options.metrics;
    this.#budget = new ConnectionBudget({
      limit: options.maxConnections ?? HEALTHZ_DEFAULTS.maxConnections,
      overflow: "evict_oldest",
      isBusy: (socket) => this.#busy.has(socket),
    });
  }

  /** Registers a named probe; names are unique and appear as `failed_probe`. */
  addProbe(name: string, probe: Probe): void {
    if (this.#probes.has(name)) throw new HealthzError("duplicate_probe", `probe ${name} already registered`);
    this.#probes.set(name, probe);
    this.#cached = undefined;
  }

  /** Marks the daemon ready. Terminal: there is no way back to not_ready. */
  setReady(): void {
    if (this.#ready) return;
    this.#ready = true;
    this.#log.info({ event: "ready" }, "healthz reports readiness");
  }

  /** True once setReady() was called. */
  get isReady(): boolean {
    return this.#ready;
  }

  /** The bound address (after start). */
  get address(): { host: string; port: number } {
    const addr = this.#server?.address();
    if (addr === null || addr === undefined || typeof addr === "string")
      throw new Error("healthz is not listening");
    return { host: addr.address, port: addr.port };
  }

  /** Binds and serves; rejects with HealthzError(bind_failed) when the address is taken. Abort closes. */
  async start(signal: AbortSignal): Promise<void> {
    if (this.#closed !== undefined) throw new HealthzError("closed", "healthz server was closed");
    if (this.#server !== undefined) return;
    const server = createServer(
      {
        // How often node checks the headers and request timeouts (default 30 s).
        connectionsCheckingInterval: Math.min(1_000, this.#headersTimeoutMs),
        headersTimeout: this.#headersTimeoutMs,
        requestTimeout: this.#requestTimeoutMs,
        keepAliveTimeout: this.#idleTimeoutMs,
      },
      (req, res) => {
        this.#busy.add(req.socket);
        res.once("close", () => this.#busy.delete(req.socket));
        void this.#handle(req, res);
      },
    );
    // Socket inactivity: a connection that never sends a byte is closed too (node destroys it).
    server.timeout = this.#idleTimeoutMs;
    server.on("connection", (socket: Socket) => {
      const address = `${socket.remoteAddress}:${socket.remotePort}`;
      const admission = this.#budget.admit(socket);
      if (!admission.admitted) {
        socket.destroy();
        this.#refuse("connection_cap", address);
        return;
      }
      if (admission.evicted !== undefined)
        this.#refuse(
          "connection_evicted",
          `${admission.evicted.remoteAddress}:${admission.evicted.remotePort}`,
        );
      this.#sockets.add(socket);
      socket.once("close", () => this.#sockets.delete(socket));
    });
    this.#server = server;
    try {
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen({ host: this.#host, port: this.#port }, () => {
          server.off("error", reject);
          resolve();
        });
      });
    } catch (err) {
      this.#server = undefined;
      throw new HealthzError("bind_failed", `cannot bind healthz to ${this.#host}:${this.#port}`, {
        cause: err,
      });
    }
    server.on("error", (err) => this.#log.error({ err }, "healthz server error"));
    signal.addEventListener("abort", () => void this.close(), { once: true });
    if (signal.aborted) await this.close();
    else this.#log.info({ host: this.#host, port: this.address.port }, "healthz listening");
  }

  /** Stops listening, drops every connection and aborts a running probe round. Idempotent. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#closing.abort();
      const server = this.#server;
      if (server === undefined) return;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      for (const socket of this.#sockets) socket.destroy();
      await closed;
    })();
    return this.#closed;
  }

  /** The current status: not_ready, or the (cached, shared) result of one probe round. */
  async status(): Promise<HealthStatus> {
    if (!this.#ready) return { status: "not_ready" };
    const cached = this.#cached;
    if (cached !== undefined && performance.now() - cached.at < this.#cacheMs) return cached.status;
    this.#inflight ??= this.#runRound().finally(() => (this.#inflight = undefined));
    return this.#inflight;
  }

  async #runRound(): Promise<HealthStatus> {
    const probes = [...this.#probes];
    const results = await Promise.all(probes.map(([name, probe]) => this.#runProbe(name, probe)));
    const failed = probes.find((_, i) => results[i] !== undefined);
    const status: HealthStatus =
      failed === undefined ? { status: "healthy" } : { status: "unhealthy", failed_probe: failed[0] };
    this.#cached = { status, at: performance.now() };
    this.#noteTransition(status, failed === undefined ? undefined : results[probes.indexOf(failed)]);
    return status;
  }

  /** Resolves undefined when the probe passed within the timeout, else the reason it did not. */
  async #runProbe(name: string, probe: Probe): Promise<unknown> {
    const ac = new AbortController();
    const onClose = (): void => ac.abort(this.#closing.signal.reason);
    this.#closing.signal.addEventListener("abort", onClose, { once: true });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<Error>((resolve) => {
      timer = setTimeout(() => {
        const err = new Error(`probe ${name} timed out after ${this.#probeTimeoutMs} ms`);
        ac.abort(err);
        resolve(err);
      }, this.#probeTimeoutMs);
    });
    try {
      // A probe that ignores its signal still loses the race against the timer.
      return await Promise.race([
        Promise.resolve()
          .then(() => probe(ac.signal))
          .then(
            () => undefined,
            (err: unknown) => err ?? new Error(`probe ${name} failed`),
          ),
        timeout,
      ]);
    } finally {
      clearTimeout(timer);
      this.#closing.signal.removeEventListener("abort", onClose);
    }
  }

  #refuse(reason: string, peer: string): void {
    this.#refusals.refused(
      HEALTHZ_LISTENER,
      reason,
      { event: "connection_refused", peer },
      "connection refused",
    );
  }

  #noteTransition(status: HealthStatus, err: unknown): void {
    const key = status.status === "unhealthy" ? `unhealthy:${status.failed_probe}` : status.status;
    if (key === this.#lastReported) return;
    this.#lastReported = key;
    if (status.status === "unhealthy") {
      this.#log.warn({ probe: status.failed_probe, err }, "health probe failing");
    } else {
      this.#log.info({ status: status.status }, "health status");
    }
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? "").split("?", 1)[0];
    const metrics = path === "/metrics" ? this.#metrics : undefined;
    if (path !== "/healthz" && metrics === undefined)
      return send(res, 404, { error: "not_found" }, req.method === "HEAD");
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("allow", "GET, HEAD");
      return send(res, 405, { error: "method_not_allowed" }, false);
    }
    if (metrics !== undefined) return this.#serveMetrics(metrics, req, res);
    try {
      const status = await this.status();
      send(res, status.status === "healthy" ? 200 : 503, status, req.method === "HEAD");
    } catch (err) {
      this.#log.error({ err }, "healthz failed");
      send(res, 503, { status: "unhealthy", failed_probe: "healthz" }, req.method === "HEAD");
    }
  }

  async #serveMetrics(metrics: MetricsEndpoint, req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!metrics.accepts(req.headers.authorization)) {
      this.#refusals.refused(
        HEALTHZ_LISTENER,
        "metrics_unauthorized",
        { event: "metrics_refused", peer: `${req.socket.remoteAddress}:${req.socket.remotePort}` },
        "metrics request without the token",
      );
      res.setHeader("www-authenticate", 'Bearer realm="clawker-metrics"');
      return send(res, 401, { error: "unauthorized" }, req.method === "HEAD");
    }
    try {
      const page = await metrics.render();
      if (res.destroyed) return;
      res.writeHead(200, {
        "content-type": page.contentType,
        "content-length": Buffer.byteLength(page.body),
        "cache-control": "no-store",
      });
      res.end(req.method === "HEAD" ? undefined : page.body);
    } catch (err) {
      this.#log.error({ err, event: "metrics_failed" }, "metrics failed");
      send(res, 500, { error: "internal" }, req.method === "HEAD");
    }
  }
}

function send(res: ServerResponse, code: number, body: unknown, headOnly: boolean): void {
  if (res.destroyed) return;
  const text = JSON.stringify(body);
  res.writeHead(code, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    "cache-control": "no-store",
  });
  res.end(headOnly ? undefined : text);
}
