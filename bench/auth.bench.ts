// Authorization cost: one RFC 7662 introspection over HTTPS vs a cached lookup, and the whole
// interceptor chain (recovery -> ready gate -> auth, warm token and cache) per unary call against
// the same grpc-js server without interceptors. Introspection is served by the FAKE RFC 7662
// endpoint in test/fakes (a real HTTPS server on loopback).
import { performance } from "node:perf_hooks";
import tls from "node:tls";
import {
  Metadata,
  Server,
  ServerCredentials,
  credentials,
  type ServerInterceptor,
  type ServiceError,
} from "@grpc/grpc-js";
import { admin } from "@clawker/proto";
import pino from "pino";
import {
  AuthInterceptor,
  CachingIntrospector,
  HttpIntrospector,
  ReadyGate,
  recoveryInterceptor,
  withRecovery,
} from "../packages/controlplane/src/auth/index.js";
import { startFakeIntrospectionServer } from "../test/fakes/fake-introspection-server.js";
import { mintTestTrust, type TestTrust } from "../test/harness/trust.js";
import { summarise, type Benchmark, type BenchContext, type Figure } from "./lib.js";

tls.DEFAULT_MIN_VERSION = "TLSv1.3";
const log = pino({ level: "silent" });
const CALLS = 300;
const CONCURRENCY = 16;

async function perCallMs(n: number, fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  for (let i = 0; i < n; i++) await fn();
  return (performance.now() - start) / n;
}

/** Alternates small batches of `a` and `b` so load drift on a shared machine hits both alike. */
async function pairedPerCallMs(
  n: number,
  batch: number,
  a: () => Promise<unknown>,
  b: () => Promise<unknown>,
): Promise<[number, number]> {
  let ta = 0;
  let tb = 0;
  for (let done = 0; done < n; done += batch) {
    ta += (await perCallMs(batch, a)) * batch;
    tb += (await perCallMs(batch, b)) * batch;
  }
  return [ta / n, tb / n];
}

/** Paired throughput: alternating blocks, calls per second for `a` and `b`. */
async function pairedThroughput(
  n: number,
  blocks: number,
  concurrency: number,
  a: () => Promise<unknown>,
  b: () => Promise<unknown>,
): Promise<[number, number]> {
  let sa = 0;
  let sb = 0;
  for (let i = 0; i < blocks; i++) {
    sa += n / (await throughput(n, concurrency, a));
    sb += n / (await throughput(n, concurrency, b));
  }
  return [(n * blocks) / sa, (n * blocks) / sb];
}

async function throughput(n: number, concurrency: number, fn: () => Promise<unknown>): Promise<number> {
  let next = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next++ < n) await fn();
    }),
  );
  return n / ((performance.now() - start) / 1000);
}

async function startGrpc(
  pki: TestTrust,
  interceptors: ServerInterceptor[],
): Promise<{ port: number; server: Server }> {
  const impl = {
    listAgents: (_c: unknown, cb: (e: null, r: admin.ListAgentsResult) => void) => cb(null, { agents: [] }),
  };
  const server = new Server({ interceptors });
  const full = Object.fromEntries(Object.keys(admin.AdminServiceService).map((k) => [k, impl.listAgents]));
  server.addService(admin.AdminServiceService, withRecovery(admin.AdminServiceService, full, log));
  const creds = ServerCredentials.createSsl(
    Buffer.from(pki.set.ca.certPem),
    [
      {
        cert_chain: Buffer.from(pki.set.controlPlaneServer.certPem),
        private_key: Buffer.from(pki.set.controlPlaneServer.keyPem),
      },
    ],
    true,
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", creds, (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { port, server };
}

function listAgentsCaller(
  pki: TestTrust,
  port: number,
  metadata: Metadata,
): { call: () => Promise<void>; close: () => void } {
  const client = new admin.AdminServiceClient(
    `127.0.0.1:${port}`,
    credentials.createSsl(
      Buffer.from(pki.set.ca.certPem),
      Buffer.from(pki.set.cli.keyPem),
      Buffer.from(pki.set.cli.certPem),
    ),
  );
  return {
    call: () =>
      new Promise<void>((resolve, reject) =>
        client.listAgents({}, metadata, (err: ServiceError | null) => (err ? reject(err) : resolve())),
      ),
    close: () => client.close(),
  };
}

const bench: Benchmark = {
  name: "auth",
  async run(ctx: BenchContext): Promise<Figure[]> {
    const pki = await mintTestTrust();
    const fake = await startFakeIntrospectionServer({
      cert: pki.set.controlPlaneServer.certPem,
      key: pki.set.controlPlaneServer.keyPem,
    });
    fake.tokens.set("bench-token", {
      active: true,
      scope: "admin",
      client_id: "clawker-cli",
      sub: "clawker-cli",
      exp: Math.floor(Date.now() / 1000) + 3600,
      token_use: "access_token",
    });
    const http = new HttpIntrospector({ adminUrl: fake.url, ca: pki.set.ca.certPem });
    const cache = new CachingIntrospector(http, { maxTtlMs: 60_000 });
    const gate = new ReadyGate();
    gate.setReady();
    const auth = new AuthInterceptor({ introspector: cache, log });
    const bare = await startGrpc(pki, []);
    const authed = await startGrpc(pki, [recoveryInterceptor(log), gate.interceptor, auth.interceptor]);
    const md = new Metadata();
    md.set("authorization", "Bearer bench-token");
    const bareCaller = listAgentsCaller(pki, bare.port, new Metadata());
    const authedCaller = listAgentsCaller(pki, authed.port, md);
    const samples = {
      http: [] as number[],
      cached: [] as number[],
      bare: [] as number[],
      authed: [] as number[],
      bareTput: [] as number[],
      authedTput: [] as number[],
      ratio: [] as number[],
      authedUncachedTput: [] as number[],
    };
    try {
      await cache.introspect("bench-token");
      for (let i = 0; i < ctx.warmup + ctx.runs; i++) {
        const keep = i >= ctx.warmup;
        const h = await perCallMs(CALLS, () => http.introspect("bench-token"));
        const c = await perCallMs(CALLS * 10, () => cache.introspect("bench-token"));
        const [b, a] = await pairedPerCallMs(CALLS, 25, bareCaller.call, authedCaller.call);
        const [bt, at] = await pairedThroughput(200, 4, CONCURRENCY, bareCaller.call, authedCaller.call);
        if (!keep) continue;
        samples.http.push(h * 1000);
        samples.cached.push(c * 1000);
        samples.bare.push(b * 1000);
        samples.authed.push(a * 1000);
        samples.bareTput.push(bt);
        samples.authedTput.push(at);
        samples.ratio.push((at / bt) * 100);
        ctx.log(
          `run: http ${(h * 1000).toFixed(0)} µs, cached ${(c * 1000).toFixed(2)} µs, unary bare ${(b * 1000).toFixed(0)} µs / authed ${(a * 1000).toFixed(0)} µs, ${bt.toFixed(0)} vs ${at.toFixed(0)} calls/s`,
        );
      }
      // Same chain with the cache off (every call introspects over HTTP), for scale.
      const noCache = new AuthInterceptor({ introspector: http, log });
      const uncached = await startGrpc(pki, [
        recoveryInterceptor(log),
        gate.interceptor,
        noCache.interceptor,
      ]);
      const uncachedCaller = listAgentsCaller(pki, uncached.port, md);
      try {
        for (let i = 0; i < ctx.runs; i++)
          samples.authedUncachedTput.push(await throughput(CALLS * 3, CONCURRENCY, uncachedCaller.call));
      } finally {
        uncachedCaller.close();
        uncached.server.forceShutdown();
      }
    } finally {
      bareCaller.close();
      authedCaller.close();
      bare.server.forceShutdown();
      authed.server.forceShutdown();
      await http.close();
      await fake.close();
      await pki.close();
    }
    const overhead = samples.authed.map((a, i) => a - samples.bare[i]!);
    return [
      summarise("introspection over HTTPS, per call", "µs", samples.http, "lower"),
      summarise("cached introspection lookup (hit), per call", "µs", samples.cached, "lower"),
      summarise("unary ListAgents, bare grpc-js, sequential", "µs", samples.bare, "lower"),
      summarise(
        "unary ListAgents, recovery+gate+auth (warm cache), sequential",
        "µs",
        samples.authed,
        "lower",
        "p99 <= 3 ms",
      ),
      summarise("interceptor chain overhead per unary call", "µs", overhead, "lower"),
      summarise(`bare throughput (${CONCURRENCY} in flight)`, "calls/s", samples.bareTput, "higher"),
      summarise(
        `authorized throughput, warm cache (${CONCURRENCY} in flight)`,
        "calls/s",
        samples.authedTput,
        "higher",
      ),
      summarise("authorized / bare throughput", "%", samples.ratio, "higher", ">= 80%"),
      summarise(
        `authorized throughput, no cache (${CONCURRENCY} in flight)`,
        "calls/s",
        samples.authedUncachedTput,
        "higher",
      ),
    ];
  },
};

export default bench;
