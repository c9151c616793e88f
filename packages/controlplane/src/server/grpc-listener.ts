// One gRPC listener (admin or agent): mutual TLS 1.3 with the client certificate verified against
// the CLI's CA, bound to a configured address, served until closed.
import tls from "node:tls";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "../logging.js";

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

/** Options for a listener. */
export interface GrpcListenerOptions {
  readonly name: string;
  readonly host: string;
  readonly port: number;
  readonly tls: ServerTlsMaterial;
  readonly services: readonly ServiceBinding[];
  readonly interceptors?: readonly grpc.ServerInterceptor[];
  readonly log: Logger;
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
 * minimum-version option, so this must run before any credentials are created (HOST-NOTES).
 */
export function enforceTls13(): void {
  tls.DEFAULT_MIN_VERSION = "TLSv1.3";
}

/** Server credentials requiring and verifying a client certificate, TLS 1.3 only. */
export function mutualTlsCredentials(material: ServerTlsMaterial): grpc.ServerCredentials {
  enforceTls13();
  return grpc.ServerCredentials.createSsl(
    material.ca,
    [{ private_key: material.key, cert_chain: material.cert }],
    true,
  );
}

/** A gRPC server on one address. `start` binds and serves; `close` drains gracefully. */
export class GrpcListener {
  readonly #opts: GrpcListenerOptions;
  readonly #server: grpc.Server;
  #port: number | undefined;
  #closing: Promise<void> | undefined;

  constructor(opts: GrpcListenerOptions) {
    this.#opts = opts;
    this.#server = new grpc.Server({
      interceptors: [...(opts.interceptors ?? [])],
      // No channelz service is served, so its per-call bookkeeping would be pure cost.
      "grpc.enable_channelz": 0,
      "grpc.keepalive_time_ms": 30_000,
      "grpc.keepalive_timeout_ms": 10_000,
      "grpc.keepalive_permit_without_calls": 1,
      "grpc.http2.min_ping_interval_without_data_ms": 10_000,
      "grpc.max_receive_message_length": 4 * 1024 * 1024,
    });
    for (const svc of opts.services) this.#server.addService(svc.definition, svc.implementation);
  }

  /** The bound port (after start). */
  get port(): number {
    if (this.#port === undefined) throw new Error(`${this.#opts.name} listener is not bound`);
    return this.#port;
  }

  /** Binds and starts serving; rejects with ListenerError when the address cannot be bound. */
  async start(signal?: AbortSignal): Promise<number> {
    const { host, port, name } = this.#opts;
    const address = `${host.includes(":") ? `[${host}]` : host}:${port}`;
    let creds: grpc.ServerCredentials;
    try {
      creds = mutualTlsCredentials(this.#opts.tls);
    } catch (err) {
      throw new ListenerError(`${name} listener: invalid TLS material`, { cause: err });
    }
    this.#port = await new Promise<number>((resolve, reject) => {
      this.#server.bindAsync(address, creds, (err, bound) => {
        if (err !== null)
          reject(
            new ListenerError(`${name} listener: cannot bind ${address}: ${err.message}`, { cause: err }),
          );
        else resolve(bound);
      });
    });
    signal?.addEventListener("abort", () => void this.close(0), { once: true });
    this.#opts.log.info(
      { event: "listener_serving", listener: name, address: `${host}:${this.#port}` },
      "serving",
    );
    return this.#port;
  }

  /** Stops accepting calls and waits up to `graceMs` for in-flight calls, then cancels them. Idempotent. */
  close(graceMs = 5_000): Promise<void> {
    this.#closing ??= new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.#server.forceShutdown();
        resolve();
      }, graceMs);
      this.#server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    return this.#closing;
  }
}
