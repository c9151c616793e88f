// A real gRPC server over mutual TLS 1.3 on loopback, for tests that stand in for a peer (a
// control plane double, an interceptor under test) and would otherwise build it by hand.
import tls from "node:tls";
import {
  Server,
  ServerCredentials,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";

/** PEM material for the server: the CA that client certificates must chain to, and its leaf. */
export interface MtlsServerMaterial {
  readonly caPem: string | Buffer;
  readonly certPem: string | Buffer;
  readonly keyPem: string | Buffer;
}

/** Options for startMtlsGrpcServer. */
export interface MtlsGrpcServerOptions {
  /** Services to add before binding. */
  readonly services: ReadonlyArray<readonly [ServiceDefinition, UntypedServiceImplementation]>;
  /** Default 127.0.0.1; the port is always chosen by the kernel and kept bound (no race). */
  readonly host?: string;
  /** Default true: a client without a certificate from `caPem` is refused in the handshake. */
  readonly requireClientCert?: boolean;
  /** grpc-js server options (interceptors, keepalive ...). */
  readonly serverOptions?: ConstructorParameters<typeof Server>[0];
}

/** A bound, serving gRPC server; `close()` is idempotent. */
export interface MtlsGrpcServer {
  readonly server: Server;
  readonly port: number;
  /** `host:port`, for a client's target. */
  readonly address: string;
  /** Graceful shutdown, forced after `graceMs` (default 2 s) so a stuck call cannot hang a test. */
  close(graceMs?: number): Promise<void>;
}

/** Binds a gRPC server with mTLS (TLS 1.3 only, like the daemon) on `host:0` and starts it. */
export async function startMtlsGrpcServer(
  material: MtlsServerMaterial,
  options: MtlsGrpcServerOptions,
): Promise<MtlsGrpcServer> {
  // grpc-js takes no minimum-version option; the process default is what the daemon sets too.
  tls.DEFAULT_MIN_VERSION = "TLSv1.3";
  const server = new Server(options.serverOptions);
  for (const [definition, implementation] of options.services) server.addService(definition, implementation);
  const credentials = ServerCredentials.createSsl(
    Buffer.from(material.caPem),
    [{ private_key: Buffer.from(material.keyPem), cert_chain: Buffer.from(material.certPem) }],
    options.requireClientCert ?? true,
  );
  const host = options.host ?? "127.0.0.1";
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host}:0`, credentials, (err, p) => (err ? reject(err) : resolve(p))),
  );
  let closing: Promise<void> | undefined;
  return {
    server,
    port,
    address: `${host.includes(":") ? `[${host}]` : host}:${port}`,
    close: (graceMs = 2_000) =>
      (closing ??= new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      })),
  };
}
