// GET /healthz on its own plain-HTTP port: not_ready until setReady(), then the aggregate of named
// probes (one per supervised helper, one for the admin listener), run in parallel, cached ~2 s.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Logger } from "pino";
import type { Probe } from "../supervisor/probes.js";

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

/** Defaults from ARCHITECTURE.md: 127.0.0.1:7080, 1 s per probe, 2 s cache. */
export const HEALTHZ_DEFAULTS = {
  host: "127.0.0.1",
  port: 7080,
  probeTimeoutMs: 1_000,
  cacheMs: 2_000,
} as const;

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
    const server = createServer((req, res) => void this.#handle(req, res));
    server.requestTimeout = 5_000;
    server.headersTimeout = 5_000;
    server.keepAliveTimeout = 5_000;
    server.on("connection", (socket: Socket) => {
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
    if (path !== "/healthz") return send(res, 404, { error: "not_found" }, req.method === "HEAD");
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("allow", "GET, HEAD");
      return send(res, 405, { error: "method_not_allowed" }, false);
    }
    try {
      const status = await this.status();
      send(res, status.status === "healthy" ? 200 : 503, status, req.method === "HEAD");
    } catch (err) {
      this.#log.error({ err }, "healthz failed");
      send(res, 503, { status: "unhealthy", failed_probe: "healthz" }, req.method === "HEAD");
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
