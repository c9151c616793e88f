// One gRPC listener (admin or agent). We own the TCP and TLS 1.3 front: mutual TLS against the
// CLI's CA, the client certificate's role checked once right after the handshake (a peer of the
// wrong role gets no HTTP/2 at all), caps on handshakes and on served connections, and timeouts.
// Connections that pass are handed to grpc-js through its connection injector, so grpc-js never
// sees a stranger's bytes; `call.getAuthContext().sslPeerCertificate` still reads the TLS socket.
import http2 from "node:http2";
import { createServer as createNetServer, type Server as NetServer, type Socket } from "node:net";
import tls, { type TLSSocket } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "../logging.js";
import {
  callGuardInterceptor,
  guardDeserializers,
  routeUnknownMethods,
  type MetadataGate,
} from "./call-guard.js";
import { ConnectionBudget } from "./connection-budget.js";
import { IdleConnections } from "./idle-connections.js";
import { peerOf, type PeerRole } from "./peer-role.js";
import { RefusalLog } from "./refusal-log.js";
import { installStreamTables } from "./stream-table.js";

/** PEM trust material a listener serves with. */
export interface ServerTlsMaterial {
  /** CA certificates that client certificates must chain to. */
  readonly ca: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
}

/** A service definition and its implementation, as grpc-js `addService` takes them. */
export interface ServiceBinding {
  readonly definition: grpc.ServiceDefinition;
  readonly implementation: grpc.UntypedServiceImplementation;
}

/** Timeouts and caps of one listener. */
export interface ListenerLimits {
  /** A connection whose TLS handshake has not completed after this is closed. */
  readonly handshakeTimeoutMs: number;
  /** A call whose request (message and end of stream) has not arrived after this is ended. */
  readonly requestTimeoutMs: number;
  /** A served connection with no call open this long is closed, as is one that never sends the HTTP/2 preface. */
  readonly idleTimeoutMs: number;
  /** Connections still in their handshake (anyone can open them); over it the oldest is dropped. */
  readonly maxHandshakes: number;
  /** Served connections (the role check passed); over it a newcomer is refused, none is dropped. */
  readonly maxConnections: number;
  /** Served connections per client certificate. */
  readonly maxConnectionsPerPeer: number;
  /** Probe connections; over it the oldest is dropped. */
  readonly maxProbes: number;
  /** SETTINGS_MAX_CONCURRENT_STREAMS of a served connection. */
  readonly maxStreamsPerConnection: number;
  /** Refusals per second a connection gets at full speed (twice as many saved up)... */
  readonly refusalsPerSecond: number;
  /** ...beyond which each refusal is answered only after this (call-guard.ts). */
  readonly tarpitMs: number;
}

/** Limits used where the caller sets none (the daemon sizes the caps from its open-file limit). */
export const LISTENER_LIMIT_DEFAULTS: ListenerLimits = {
  handshakeTimeoutMs: 5_000,
  requestTimeoutMs: 10_000,
  idleTimeoutMs: 30_000,
  maxHandshakes: 256,
  maxConnections: 256,
  maxConnectionsPerPeer: Infinity,
  maxProbes: 4,
  maxStreamsPerConnection: 100,
  refusalsPerSecond: 20,
  tarpitMs: 1_000,
};

/**
 * Which client certificates a listener accepts: `serve` gets gRPC; `probe` (the admin listener lets
 * the control plane's own leaf check it is up) gets an HTTP/2 session that admits no stream, so it
 * proves the listener answers and can make no call. Every other certificate is closed after the
 * handshake.
 */
export interface PeerPolicy {
  readonly serve: PeerRole;
  readonly probe?: PeerRole;
}

/** Options for a listener. */
export interface GrpcListenerOptions {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly tls: ServerTlsMaterial;
  readonly services: readonly ServiceBinding[];
  /**
   * Checks the call guard runs on every served call's metadata, in order (the ready gate, auth):
   * the same checks as interceptors, without a grpc-js interceptor layer per check.
   */
  readonly gates?: readonly MetadataGate[];
  /** Interceptors after the listener's own call guard (and its gates), outermost first. */
  readonly interceptors?: readonly grpc.ServerInterceptor[];
  readonly log: Logger;
  /** Default: serve the CLI's certificate only. */
  readonly peers?: PeerPolicy;
  readonly limits?: Partial<ListenerLimits>;
  /** Where refusals are counted and (rate-limited) logged; default: one of its own on `log`. */
  readonly refusals?: RefusalLog;
  /** Told every call's final status (method path, gRPC code), e.g. `Metrics.rpcCounter`. */
  readonly countCall?: (method: string, code: number) => void;
}

/** Binding the listener failed (address in use, bad address, bad TLS material). */
export class ListenerError extends Error {
  readonly reason = "listener_bind_failed";
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ListenerError";
  }
}

/**
 * Makes TLS 1.3 the floor for every TLS context this process creates from now on. grpc-js has no
 * minimum-version option, so this must run before any client credentials are created (HOST-NOTES).
 */
export function enforceTls13(): void {
  tls.DEFAULT_MIN_VERSION = "TLSv1.3";
}

/** A raw connection in its TLS handshake, and how that ended. */
interface Pending {
  readonly raw: Socket;
  /** Set once known: `secured`, or the refusal reason counted when the socket closes. */
  outcome: string | undefined;
}

const ignore = (): void => {};

function addressOf(socket: Socket): string | undefined {
  return socket.remoteAddress === undefined ? undefined : `${socket.remoteAddress}:${socket.remotePort}`;
}

/** A gRPC server on one address. `start` binds and serves; `close` drains gracefully. */
export class GrpcListener {
  readonly #opts: GrpcListenerOptions;
  readonly #limits: ListenerLimits;
  readonly #peers: PeerPolicy;
  readonly #refusals: RefusalLog;
  readonly #server: grpc.Server;
  readonly #injector: grpc.ConnectionInjector;
  readonly #probe: http2.Http2Server;
  readonly #handshakes: ConnectionBudget;
  readonly #served: ConnectionBudget;
  readonly #probes: ConnectionBudget;
  readonly #idle: IdleConnections;
  /** Handshakes by remote address:port (the TLS socket is found again by it) and by raw socket. */
  readonly #pendingByAddress = new Map<string, Pending>();
  readonly #pendingBySocket = new WeakMap<Socket, Pending>();
  #front: NetServer | undefined;
  #port: number | undefined;
  #stopping = false;
  #streamTableMissing = false;
  #closing: Promise<void> | undefined;

  constructor(opts: GrpcListenerOptions) {
    this.#opts = opts;
    const limits = { ...LISTENER_LIMIT_DEFAULTS, ...opts.limits };
    this.#limits = limits;
    this.#peers = opts.peers ?? { serve: "cli" };
    this.#refusals = opts.refusals ?? new RefusalLog({ log: opts.log });
    this.#handshakes = new ConnectionBudget({ limit: limits.maxHandshakes, overflow: "evict_oldest" });
    this.#served = new ConnectionBudget({
      limit: limits.maxConnections,
      overflow: "refuse_new",
      perKeyLimit: limits.maxConnectionsPerPeer,
    });
    this.#probes = new ConnectionBudget({ limit: limits.maxProbes, overflow: "evict_oldest" });
    this.#idle = new IdleConnections(limits.idleTimeoutMs);
    this.#server = new grpc.Server({
      interceptors: [
        callGuardInterceptor({
          listener: opts.name,
          refusals: this.#refusals,
          requestTimeoutMs: limits.requestTimeoutMs,
          refusalsPerSecond: limits.refusalsPerSecond,
          tarpitMs: limits.tarpitMs,
          ...(opts.countCall === undefined ? {} : { onStatus: opts.countCall }),
          // Recovery is fused into the guard (one interceptor object less per call), and so are the gates.
          log: opts.log,
          ...(opts.gates === undefined ? {} : { gates: opts.gates }),
          // The idle timeout, counted by the guard (idle-connections.ts), not by grpc-js per stream.
          idle: this.#idle,
        }),
        ...(opts.interceptors ?? []),
      ],
      // No channelz service is served, so its per-call bookkeeping would be pure cost.
      "grpc.enable_channelz": 0,
      "grpc.keepalive_time_ms": 30_000,
      "grpc.keepalive_timeout_ms": 10_000,
      "grpc.keepalive_permit_without_calls": 1,
      "grpc.http2.min_ping_interval_without_data_ms": 10_000,
      "grpc.max_concurrent_streams": limits.maxStreamsPerConnection,
      "grpc.max_receive_message_length": 4 * 1024 * 1024,
    });
    routeUnknownMethods(this.#server);
    for (const svc of opts.services)
      this.#server.addService(guardDeserializers(svc.definition), svc.implementation);
    // Plain HTTP/2: only TLS sockets that passed the handshake and the role check are injected.
    this.#injector = this.#server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
    // No stream can open (SETTINGS_MAX_CONCURRENT_STREAMS 0); the session lives a handshake budget.
    this.#probe = http2.createServer({ settings: { maxConcurrentStreams: 0 } });
    this.#probe.on("session", (session) =>
      session.setTimeout(limits.handshakeTimeoutMs, () => session.destroy()),
    );
    this.#probe.on("stream", (stream) => stream.close(http2.constants.NGHTTP2_REFUSED_STREAM));
  }

  /** The bound port (after start). */
  get port(): number {
    if (this.#port === undefined) throw new Error(`${this.#opts.name} listener is not bound`);
    return this.#port;
  }

  /** Connections held now: in their handshake, served, probing. */
  get connections(): { readonly handshakes: number; readonly served: number; readonly probes: number } {
    return { handshakes: this.#handshakes.size, served: this.#served.size, probes: this.#probes.size };
  }

  /** Binds and starts serving; rejects with ListenerError when the address cannot be bound. */
  async start(signal?: AbortSignal): Promise<number> {
    const { host, port, name } = this.#opts;
    const address = `${host.includes(":") ? `[${host}]` : host}:${port}`;
    let secure: tls.Server;
    try {
      enforceTls13();
      secure = tls.createServer({
        ca: this.#opts.tls.ca,
        cert: this.#opts.tls.cert,
        key: this.#opts.tls.key,
        minVersion: "TLSv1.3",
        requestCert: true,
        rejectUnauthorized: true,
        ALPNProtocols: ["h2"],
        handshakeTimeout: this.#limits.handshakeTimeoutMs,
      });
    } catch (err) {
      throw new ListenerError(`${name} listener: invalid TLS material`, { cause: err });
    }
    secure.on("tlsClientError", (err: NodeJS.ErrnoException, socket: TLSSocket) =>
      this.#onTlsError(err, socket),
    );
    secure.on("secureConnection", (socket: TLSSocket) => this.#onSecure(socket));
    const front = createNetServer();
    front.on("connection", (raw: Socket) => this.#onConnection(raw, secure));
    this.#front = front;
    this.#port = await new Promise<number>((resolve, reject) => {
      front.once("error", (err) =>
        reject(new ListenerError(`${name} listener: cannot bind ${address}: ${err.message}`, { cause: err })),
      );
      front.listen({ host, port }, () => {
        front.removeAllListeners("error");
        front.on("error", (err) => this.#opts.log.error({ err, listener: name }, "listener error"));
        const bound = front.address();
        resolve(typeof bound === "object" && bound !== null ? bound.port : port);
      });
    });
    signal?.addEventListener("abort", () => void this.close(0), { once: true });
    this.#opts.log.info(
      {
        event: "listener_serving",
        listener: name,
        address: `${host}:${this.#port}`,
        peers: this.#peers,
        limits: this.#limits,
      },
      "serving",
    );
    return this.#port;
  }

  /**
   * Stops accepting, drops connections still in their handshake and probes, lets in-flight calls
   * finish for `graceMs`, then closes whatever is left. Idempotent.
   */
  close(graceMs = 5_000): Promise<void> {
    this.#closing ??= (async () => {
      this.#stopping = true;
      const front = this.#front;
      const frontClosed =
        front === undefined
          ? Promise.resolve()
          : new Promise<void>((resolve) => front.close(() => resolve()));
      this.#handshakes.destroyAll();
      this.#probes.destroyAll();
      // tryShutdown stops new calls (GOAWAY) but cannot be trusted to wait for the ones in flight:
      // on Node 24 the http2 server's close() marks every session closed first, and grpc-js then
      // reports a closed session done at once. A session ends its socket when its last stream
      // ended, so the sockets closing is what says the calls in flight were answered.
      this.#server.tryShutdown(() => undefined);
      if (!(await this.#served.whenClosed(graceMs))) this.#server.forceShutdown();
      // With channelz off grpc-js keeps no session list to force-close; the sockets are ours.
      this.#served.destroyAll();
      this.#injector.destroy();
      await frontClosed;
    })();
    return this.#closing;
  }

  /**
   * Serves a connection accepted on the admin Unix socket (group-socket.ts): no TLS and no role
   * check, since the kernel's permission check admitted it; the served cap, the call guard and the
   * interceptors apply as to a TCP peer. `peer` names it in logs and budgets.
   */
  serveLocal(socket: Socket, peer: string): void {
    socket.on("error", ignore);
    if (this.#stopping) {
      socket.destroy();
      return;
    }
    // grpc-js names a call's peer by its socket's remote address, which a Unix socket lacks: every
    // local connection would be "unknown" and share one refusal and introspection budget.
    Object.defineProperty(socket, "remoteAddress", { value: peer, configurable: true });
    const admission = this.#served.admit(socket, "local");
    if (!admission.admitted) {
      this.#refuse(admission.why === "peer_cap" ? "peer_cap" : "connection_cap", peer, { role: "local" });
      socket.destroy();
      return;
    }
    this.#serve(socket);
  }

  #onConnection(raw: Socket, secure: tls.Server): void {
    // A reset before TLS takes the socket over must not become an uncaught error.
    raw.on("error", ignore);
    const address = addressOf(raw);
    if (this.#stopping || address === undefined) {
      raw.destroy();
      return;
    }
    const admission = this.#handshakes.admit(raw);
    if (!admission.admitted) {
      raw.destroy();
      this.#refuse("handshake_cap", address);
      return;
    }
    if (admission.evicted !== undefined) {
      const evicted = this.#pendingBySocket.get(admission.evicted);
      if (evicted !== undefined && evicted.outcome === undefined) evicted.outcome = "handshake_evicted";
    }
    const pending: Pending = { raw, outcome: undefined };
    this.#pendingByAddress.set(address, pending);
    this.#pendingBySocket.set(raw, pending);
    raw.once("close", () => {
      if (this.#pendingByAddress.get(address) === pending) this.#pendingByAddress.delete(address);
      if (pending.outcome !== "secured") this.#refuse(pending.outcome ?? "handshake_failed", address);
    });
    secure.emit("connection", raw);
  }

  #onTlsError(err: NodeJS.ErrnoException, socket: TLSSocket): void {
    const address = addressOf(socket);
    const pending = address === undefined ? undefined : this.#pendingByAddress.get(address);
    if (pending !== undefined && pending.outcome === undefined)
      pending.outcome = err.code === "ERR_TLS_HANDSHAKE_TIMEOUT" ? "handshake_timeout" : "handshake_failed";
    // Node reports a handshake timeout here but leaves the socket open: close it ourselves.
    socket.destroy();
  }

  #onSecure(socket: TLSSocket): void {
    socket.on("error", ignore);
    const address = addressOf(socket) ?? "unknown";
    const pending = this.#pendingByAddress.get(address);
    if (pending !== undefined) {
      pending.outcome = "secured";
      this.#pendingByAddress.delete(address);
      this.#handshakes.release(pending.raw);
    }
    if (this.#stopping) {
      socket.destroy();
      return;
    }
    if (socket.alpnProtocol !== "h2") {
      this.#refuse("not_h2", address);
      socket.destroy();
      return;
    }
    const peer = peerOf(socket.getPeerCertificate());
    if (peer?.role === this.#peers.serve) {
      const admission = this.#served.admit(socket, peer.thumbprint);
      if (!admission.admitted) {
        this.#refuse(admission.why === "peer_cap" ? "peer_cap" : "connection_cap", address, peer);
        socket.destroy();
        return;
      }
      this.#serve(socket);
      return;
    }
    if (peer !== undefined && peer.role === this.#peers.probe) {
      const admission = this.#probes.admit(socket);
      if (admission.admitted) this.#probe.emit("connection", socket);
      else socket.destroy();
      return;
    }
    this.#refuse("role_refused", address, peer ?? { role: "none" });
    socket.destroy();
  }

  /** Hands an admitted connection to grpc-js, its idle clock started (no preface, no call: closed too). */
  #serve(socket: Socket): void {
    this.#idle.track(socket);
    this.#injector.injectConnection(socket);
    // Node's own stream Map and Set make finished calls survive scavenges (stream-table.ts); a Node
    // without the expected shape keeps them and serves as before, said once per listener.
    if (!installStreamTables(socket) && !socket.destroyed && !this.#streamTableMissing) {
      this.#streamTableMissing = true;
      this.#opts.log.warn(
        { event: "stream_table_unavailable", listener: this.#opts.name, node: process.version },
        "HTTP/2 sessions keep node's own stream tables; finished calls will cost more garbage collection",
      );
    }
  }

  #refuse(
    reason: string,
    peer: string,
    identity?: { readonly role: string; readonly thumbprint?: string },
  ): void {
    this.#refusals.refused(
      this.#opts.name,
      reason,
      { event: "connection_refused", peer, ...(identity === undefined ? {} : { identity }) },
      "connection refused",
    );
  }
}
