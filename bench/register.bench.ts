// AgentService.Register cost: a warm Register over real mTLS with a real `clawker-agent` token
// (issued by the embedded auth server of a real clawker-cp started by the harness, introspected
// over HTTPS by a real AuthInterceptor with its cache), against the same server without the
// interceptor, and the identity gate's own cost per call (in process, registry write included).
import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import tls from "node:tls";
import {
  Server,
  ServerCredentials,
  credentials,
  type ServerUnaryCall,
  type ServiceError,
  type sendUnaryData,
} from "@grpc/grpc-js";
import { TokenSource, bearerCallCredentials, issueAgentLeaf } from "@clawker/adminclient";
import { AGENT_CLIENT, LABELS, agent } from "@clawker/proto";
import pino from "pino";
import { ContainerAddressIndex } from "../packages/controlplane/src/agents/address-index.js";
import { agentService } from "../packages/controlplane/src/agents/agent-service.js";
import { IdentityGate } from "../packages/controlplane/src/agents/identity-gate.js";
import { Registry } from "../packages/controlplane/src/agents/registry.js";
import {
  AuthInterceptor,
  CachingIntrospector,
  HttpIntrospector,
  recoveryInterceptor,
} from "../packages/controlplane/src/auth/index.js";
import { startControlPlane } from "../test/harness/controlplane.js";
import { summarise, type Benchmark, type Figure } from "./lib.js";

tls.DEFAULT_MIN_VERSION = "TLSv1.3";
const log = pino({ level: "silent" });
const CALLS = 200;
const GATE_CALLS = 2000;
const CONTAINER = "d".repeat(64);

async function perCallMs(n: number, fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  for (let i = 0; i < n; i++) await fn();
  return (performance.now() - start) / n;
}

const bench: Benchmark = {
  name: "register",
  async run(ctx): Promise<Figure[]> {
    const cp = await startControlPlane();
    const tmp = mkdtempSync(join(tmpdir(), "register-bench-"));
    const servers: Server[] = [];
    const registry = new Registry(join(tmp, "registry.db"));
    try {
      const trust = cp.trust!;
      const labels = {
        [LABELS.managed]: "true",
        [LABELS.purpose]: "agent",
        [LABELS.agent]: "dev",
        [LABELS.project]: "bench",
      };
      const index = new ContainerAddressIndex({ inspect: () => Promise.resolve(undefined), log });
      index.put({ id: CONTAINER, labels, addresses: ["127.0.0.1"] });
      const gate = new IdentityGate({ index, registry, log });
      const binding = agentService({ gate, log });
      const introspector = new HttpIntrospector({
        adminUrl: cp.authAdminUrl,
        ca: Buffer.from(trust.ca.certPem),
        timeoutMs: 2000,
      });
      const cached = new CachingIntrospector(introspector, { maxTtlMs: 60_000, maxEntries: 1000 });
      const serverCreds = ServerCredentials.createSsl(
        Buffer.from(trust.ca.certPem),
        [
          {
            private_key: Buffer.from(trust.controlPlaneServer.keyPem),
            cert_chain: Buffer.from(trust.controlPlaneServer.certPem),
          },
        ],
        true,
      );
      const serve = async (withAuth: boolean): Promise<number> => {
        const server = new Server({
          interceptors: withAuth
            ? [
                recoveryInterceptor(log),
                new AuthInterceptor({ introspector: cached, requiredClientId: AGENT_CLIENT.clientId, log })
                  .interceptor,
              ]
            : [],
        });
        server.addService(binding.definition, binding.implementation);
        servers.push(server);
        return new Promise<number>((resolve, reject) =>
          server.bindAsync("127.0.0.1:0", serverCreds, (err, p) => (err ? reject(err) : resolve(p))),
        );
      };
      const [authPort, barePort] = [await serve(true), await serve(false)];
      // A probe server whose Register only reads the peer certificate, timing that read.
      let peerReadMs = 0;
      let peerReads = 0;
      const probe = new Server();
      probe.addService(agent.AgentServiceService, {
        register: (
          c: ServerUnaryCall<agent.RegisterRequest, agent.Welcome>,
          cb: sendUnaryData<agent.Welcome>,
        ) => {
          const t0 = performance.now();
          const raw = c.getAuthContext()?.sslPeerCertificate?.raw;
          peerReadMs += performance.now() - t0;
          peerReads++;
          cb(raw === undefined ? { code: 7, details: "no cert" } : null, {});
        },
      });
      servers.push(probe);
      const probePort = await new Promise<number>((resolve, reject) =>
        probe.bindAsync("127.0.0.1:0", serverCreds, (err, p) => (err ? reject(err) : resolve(p))),
      );

      const leaf = await issueAgentLeaf(trust.ca, { agentName: "bench.dev", containerId: CONTAINER });
      const tokens = new TokenSource({
        ca: trust.ca.certPem,
        signingKey: trust.signingKey.privateJwk,
        tokenEndpoint: cp.tokenEndpoint,
        clientId: AGENT_CLIENT.clientId,
        scope: AGENT_CLIENT.scope,
      });
      const channel = credentials.createSsl(
        Buffer.from(trust.ca.certPem),
        Buffer.from(leaf.keyPem),
        Buffer.from(leaf.certPem),
      );
      const authed = new agent.AgentServiceClient(
        `127.0.0.1:${authPort}`,
        credentials.combineChannelCredentials(channel, bearerCallCredentials(tokens)),
        { "grpc.ssl_target_name_override": "localhost" },
      );
      const bare = new agent.AgentServiceClient(`127.0.0.1:${barePort}`, channel, {
        "grpc.ssl_target_name_override": "localhost",
      });
      const probed = new agent.AgentServiceClient(`127.0.0.1:${probePort}`, channel, {
        "grpc.ssl_target_name_override": "localhost",
      });
      const call = (c: agent.AgentServiceClient) => (): Promise<void> =>
        new Promise<void>((resolve, reject) =>
          c.register({ agentName: "dev", project: "bench" }, (err: ServiceError | null) =>
            err ? reject(err) : resolve(),
          ),
        );
      // Warm: the token is fetched, introspected and cached, the row exists, the TLS sessions are up.
      for (let i = 0; i < 20; i++) {
        await call(authed)();
        await call(bare)();
      }

      const x = new X509Certificate(leaf.certPem);
      const cert = {
        raw: x.raw,
        subject: { CN: "clawker-clawkerd" } as tls.Certificate,
        subjectaltname: x.subjectAltName ?? "",
      };
      const fields = { agentName: "dev", project: "bench" };
      const authMs: number[] = [];
      const bareMs: number[] = [];
      const gateUs: number[] = [];
      const peerUs: number[] = [];
      for (let i = 0; i < ctx.warmup + ctx.runs; i++) {
        const a = await perCallMs(CALLS, call(authed));
        const b = await perCallMs(CALLS, call(bare));
        const g = (await perCallMs(GATE_CALLS, () => gate.admit("127.0.0.1:40000", cert, fields))) * 1000;
        peerReadMs = 0;
        peerReads = 0;
        await perCallMs(CALLS, call(probed));
        const p = (peerReadMs / peerReads) * 1000;
        if (i < ctx.warmup) continue;
        authMs.push(a);
        bareMs.push(b);
        gateUs.push(g);
        peerUs.push(p);
        ctx.log(
          `run ${i}: register ${a.toFixed(3)} ms (auth) ${b.toFixed(3)} ms (no auth), gate ${g.toFixed(1)} µs`,
        );
      }
      authed.close();
      bare.close();
      probed.close();
      await tokens.close();
      await introspector.close();
      return [
        summarise(
          "Register, warm, mTLS + real token (auth interceptor, cached introspection)",
          "ms/call",
          authMs,
          "lower",
        ),
        summarise("Register, warm, mTLS, no auth interceptor", "ms/call", bareMs, "lower"),
        summarise("identity gate per call (in process, registry touch included)", "µs/call", gateUs, "lower"),
        summarise("peer certificate read (call.getAuthContext) per call", "µs/call", peerUs, "lower"),
      ];
    } finally {
      for (const s of servers) s.forceShutdown();
      registry.close();
      rmSync(tmp, { recursive: true, force: true });
      await cp.close();
    }
  },
};

export default bench;
