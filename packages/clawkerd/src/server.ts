// The gRPC server for ClawkerdService: mutual TLS 1.3 with the agent leaf as the server
// certificate, client certificates required and chained to the bootstrap CA, and the
// control-plane identity pin (peer-identity.ts) in front of every call.
import tls from "node:tls";
import { Server, ServerCredentials, type ServerDuplexStream } from "@grpc/grpc-js";
import { jobs, trust, type clawkerd } from "@clawker/proto";
import type { Bootstrap } from "./bootstrap.js";
import { peerIdentityInterceptor } from "./peer-identity.js";
import { ClawkerdServiceFast } from "./response-codec.js";
import { Session, type SessionDeps } from "./session.js";

// grpc-js has no minimum-version option; it reads the process-wide default (HOST-NOTES.md).
tls.DEFAULT_MIN_VERSION = "TLSv1.3";

/** ClawkerdServer construction options. */
export interface ClawkerdServerOptions extends SessionDeps {
  readonly bootstrap: Bootstrap;
  /** `host:port` to bind; port 0 picks a free one. */
  readonly listen: string;
  /** clawker.jobs.v1.JobService (job-service.ts), served beside Session behind the same pin. */
  readonly jobService?: jobs.JobServiceServer;
  /** The control plane's job placement (JobGateService), beside jobService. */
  readonly jobGateService?: jobs.JobGateServiceServer;
  /** The firewall CA install (FirewallTrustService, trust-service.ts), behind the same pin. */
  readonly trustService?: trust.FirewallTrustServiceServer;
}

/** Serves Session. start() binds and resolves the bound address; close() ends every session. */
export class ClawkerdServer {
  readonly #o: ClawkerdServerOptions;
  readonly #sessions = new Set<Session>();
  #server: Server | undefined;
  #nextId = 1;
  #closing: Promise<void> | undefined;

  constructor(options: ClawkerdServerOptions) {
    this.#o = options;
  }

  /** Open sessions. */
  get sessions(): number {
    return this.#sessions.size;
  }

  /** Binds and serves; resolves `host:port` as bound. */
  async start(): Promise<string> {
    const { bootstrap, log } = this.#o;
    const server = new Server({
      interceptors: [peerIdentityInterceptor(log.child({ component: "peer-identity" }))],
      "grpc.keepalive_time_ms": 30_000,
      "grpc.keepalive_timeout_ms": 10_000,
      "grpc.keepalive_permit_without_calls": 1,
    });
    server.addService(ClawkerdServiceFast, {
      session: (call: ServerDuplexStream<clawkerd.Command, clawkerd.Response>) => {
        const session = new Session(this.#nextId++, call, {
          ...this.#o,
          log: log.child({ component: "session" }),
        });
        this.#sessions.add(session);
        call.once("close", () => this.#sessions.delete(session));
        call.once("cancelled", () => this.#sessions.delete(session));
      },
    });
    if (this.#o.jobService !== undefined) server.addService(jobs.JobServiceService, this.#o.jobService);
    if (this.#o.jobGateService !== undefined)
      server.addService(jobs.JobGateServiceService, this.#o.jobGateService);
    if (this.#o.trustService !== undefined)
      server.addService(trust.FirewallTrustServiceService, this.#o.trustService);
    const creds = ServerCredentials.createSsl(
      Buffer.from(bootstrap.caPem),
      [{ private_key: Buffer.from(bootstrap.keyPem), cert_chain: Buffer.from(bootstrap.certPem) }],
      true,
    );
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(this.#o.listen, creds, (err, p) => (err === null ? resolve(p) : reject(err))),
    );
    this.#server = server;
    const host = this.#o.listen.slice(0, this.#o.listen.lastIndexOf(":"));
    return `${host}:${port}`;
  }

  /** Ends every session (killing their commands), then stops the server. Idempotent. */
  close(graceMs = 2000): Promise<void> {
    this.#closing ??= (async () => {
      for (const s of this.#sessions) s.close("shutdown");
      const server = this.#server;
      if (server === undefined) return;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    })();
    return this.#closing;
  }
}
