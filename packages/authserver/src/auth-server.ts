// The auth server: the public HTTPS listener (TLS 1.3 only) and the admin API on a Unix socket
// (plain HTTP; the 0700 directory is its boundary), in front of oidc-provider and the sqlite store.
// Construction has no side effects; start() reads the TLS material, opens the store, binds, then
// builds the provider; close() undoes it all and is idempotent.
import { readFileSync } from "node:fs";
import type { Server } from "node:http";
import { createServer } from "node:https";
import type { AddressInfo } from "node:net";
import type Provider from "oidc-provider";
import type { Logger } from "pino";
import { adminHandler } from "./admin-api.js";
import { listenOnAdminSocket } from "./admin-socket.js";
import type { AuthServerConfig } from "./config.js";
import { AuthServerError } from "./errors.js";
import { createProvider } from "./provider.js";
import { providerEntry, publicHandler } from "./public-api.js";
import { loadOrCreateSigningKey } from "./signing-key.js";
import { StartupSteps } from "./startup-steps.js";
import { AuthStore } from "./store.js";

// node:http by process.getBuiltinModule, not by import: importing it as an ES module reads its lazy
// WebSocket getters and so loads Node's bundled undici (~90 ms of CPU at start, and its memory).
const { createServer: createHttpServer } = process.getBuiltinModule("node:http");

/** Where a started server listens and what it calls itself. */
export interface AuthServerAddresses {
  readonly issuer: string;
  readonly tokenEndpoint: string;
  /** https://host:port of the public listener. */
  readonly publicUrl: string;
  /** Path of the admin API's Unix socket (plain HTTP). */
  readonly adminSocket: string;
}

/** What a supervisor adds to the config for one run of the process. */
export interface AuthServerRunOptions {
  /** Echoed by the admin `/health/ready` as `instance`, so the supervisor knows it reached us. */
  readonly instance?: string;
}

/** How long close() lets in-flight requests finish before cutting connections. */
const CLOSE_GRACE_MS = 3000;

/** The embedded Hydra-compatible OAuth2 server. */
export class AuthServer {
  readonly #config: AuthServerConfig;
  readonly #log: Logger;
  readonly #run: AuthServerRunOptions;
  #store: AuthStore | undefined;
  #servers: Server[] = [];
  #provider: Provider | undefined;
  #entry: ReturnType<typeof providerEntry> | undefined;
  #addresses: AuthServerAddresses | undefined;
  #gcTimer: NodeJS.Timeout | undefined;
  #closing: Promise<void> | undefined;

  constructor(config: AuthServerConfig, log: Logger, run: AuthServerRunOptions = {}) {
    this.#config = config;
    this.#log = log;
    this.#run = run;
  }

  /** Addresses once started, else undefined. */
  get addresses(): AuthServerAddresses | undefined {
    return this.#addresses;
  }

  /** Starts everything; rejects (after cleaning up) with an AuthServerError. Aborting `signal` closes. */
  async start(signal?: AbortSignal): Promise<AuthServerAddresses> {
    if (this.#closing !== undefined) throw new Error("AuthServer was closed");
    signal?.throwIfAborted();
    signal?.addEventListener("abort", () => void this.close(), { once: true });
    try {
      return await this.#start();
    } catch (err) {
      await this.close();
      // A close() that ran while a listener was still binding could not close it; release again.
      await this.#close();
      throw err;
    }
  }

  async #start(): Promise<AuthServerAddresses> {
    const c = this.#config;
    const t = new StartupSteps(this.#log);
    const tls = await t.step("tls", () => readTls(c));
    const key = await t.step("signing_key", () => loadOrCreateSigningKey(c.signingKeyFile));
    this.#throwIfClosed();
    const store = await t.step("store", () => new AuthStore(c.databaseFile));
    this.#store = store;
    if (store.tightened.length > 0) {
      this.#log.warn(
        { event: "store_mode_tightened", files: store.tightened },
        "auth store files were readable by others; now 0600",
      );
    }
    this.#log.info({ event: "gc", deleted: store.gc() }, "expired rows deleted");

    const timeouts = { requestTimeout: 30_000, headersTimeout: 10_000 };
    const pub = createServer(
      { ...tls, ...timeouts, minVersion: "TLSv1.3", maxVersion: "TLSv1.3" },
      publicHandler({ provider: () => this.#entry }),
    );
    const admin = createHttpServer(
      timeouts,
      adminHandler({
        store,
        provider: () => this.#provider,
        issuer: () => this.#addresses?.issuer,
        log: this.#log.child({ component: "admin-api" }),
        ...(this.#run.instance === undefined ? {} : { instance: this.#run.instance }),
      }),
    );
    pub.on("tlsClientError", (err) =>
      this.#log.debug({ err, event: "tls_client_error" }, "TLS handshake failed"),
    );
    this.#servers = [pub, admin];
    const pubAddr = await t.step("public_listener", () =>
      listen(pub, c.public.host, c.public.port, "public"),
    );
    this.#throwIfClosed();
    await t.step("admin_socket", () => listenOnAdminSocket(admin, c.admin.socket));
    this.#throwIfClosed();

    const issuer = c.issuer ?? origin(pubAddr);
    const tokenEndpoint = new URL("/oauth2/token", issuer).href;
    const provider = await t.step("provider", () =>
      createProvider({
        issuer,
        tokenEndpoint,
        aliasTokenEndpoints: c.aliases.map((a) => new URL("/oauth2/token", a).href),
        audience: c.audience,
        accessTokenTtlSeconds: c.accessTokenTtlSeconds,
        key,
        store,
        log: this.#log.child({ component: "provider" }),
      }),
    );
    this.#addresses = { issuer, tokenEndpoint, publicUrl: origin(pubAddr), adminSocket: c.admin.socket };
    this.#provider = provider;
    this.#entry = providerEntry(provider, issuer);
    this.#gcTimer = setInterval(() => {
      try {
        const deleted = store.gc();
        if (deleted > 0) this.#log.debug({ event: "gc", deleted }, "expired rows deleted");
      } catch (err) {
        this.#log.error({ err, event: "gc_failed" }, "garbage collection failed");
      }
    }, c.gcIntervalSeconds * 1000);
    this.#gcTimer.unref();
    this.#log.info(
      {
        event: "listening",
        issuer,
        public: { host: pubAddr.address, port: pubAddr.port },
        admin: { socket: c.admin.socket },
        processUptimeMs: Math.round(process.uptime() * 1000),
      },
      "auth server ready",
    );
    return this.#addresses;
  }

  /** A close() during start() wins: start stops at its next step and cleans up. */
  #throwIfClosed(): void {
    if (this.#closing !== undefined)
      throw new AuthServerError("closed", "the auth server was closed while starting");
  }

  /** Stops accepting, lets in-flight requests finish (briefly), closes the store. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#entry = undefined;
    this.#provider = undefined;
    if (this.#gcTimer !== undefined) clearInterval(this.#gcTimer);
    await Promise.all(this.#servers.map((s) => closeServer(s)));
    this.#servers = [];
    this.#store?.close();
    this.#store = undefined;
  }
}

function readTls(c: AuthServerConfig): { cert: Buffer; key: Buffer; ca?: Buffer } {
  try {
    return {
      cert: readFileSync(c.tls.certFile),
      key: readFileSync(c.tls.keyFile),
      ...(c.tls.caFile === undefined ? {} : { ca: readFileSync(c.tls.caFile) }),
    };
  } catch (err) {
    throw new AuthServerError("tls_material_unreadable", "cannot read the TLS certificate, key or CA", {
      cause: err,
    });
  }
}

function listen(server: Server, host: string, port: number, name: string): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => {
      reject(
        new AuthServerError("listen_failed", `cannot listen on ${host}:${port} (${name})`, { cause: err }),
      );
    };
    server.once("error", onError);
    server.listen({ host, port, exclusive: true }, () => {
      server.off("error", onError);
      resolve(server.address() as AddressInfo);
    });
  });
}

function closeServer(server: Server): Promise<void> {
  if (!server.listening) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
    server.close(() => {
      clearTimeout(timer);
      resolve();
    });
    server.closeIdleConnections();
  });
}

function origin(a: AddressInfo): string {
  const host = a.family === "IPv6" ? `[${a.address}]` : a.address;
  return `https://${host}:${a.port}`;
}
