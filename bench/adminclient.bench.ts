// What the typed AdminClient adds per call: AdminClient.listAgents (cached token lookup, bearer
// metadata, deadline, error mapping) against the raw generated client with a fixed bearer header,
// both over mTLS to the admin-listener test double, paired per run; plus a warm TokenSource hit.
import { performance } from "node:perf_hooks";
import { Metadata } from "@grpc/grpc-js";
import { AdminClient, dial, mintTrustSet, TokenSource } from "@clawker/adminclient";
import { startAdminServerDouble } from "../packages/adminclient/test/fixtures/admin-server-double.js";
import { TokenEndpointDouble } from "../packages/adminclient/test/fixtures/token-endpoint-double.js";
import { summarise, type Benchmark } from "./lib.js";
import { concurrentThroughput, sequentialLatencies } from "./unary-load.js";

const SEQUENTIAL_CALLS = 1000;
const CONCURRENT_CALLS = 5000;

const bench: Benchmark = {
  name: "adminclient",
  async run(ctx) {
    const trust = await mintTrustSet();
    const server = await startAdminServerDouble(
      {
        caPem: trust.ca.certPem,
        certPem: trust.controlPlaneServer.certPem,
        keyPem: trust.controlPlaneServer.keyPem,
      },
      { listAgents: (_call, cb) => cb(null, { agents: [] }) },
    );
    const endpoint = await TokenEndpointDouble.start({
      certPem: trust.controlPlaneServer.certPem,
      keyPem: trust.controlPlaneServer.keyPem,
      clientId: "clawker-cli",
      publicJwk: trust.signingKey.publicJwk,
    });
    const tls = { ca: trust.ca.certPem, cert: trust.cli.certPem, key: trust.cli.keyPem };
    const tokens = new TokenSource({
      tokenEndpoint: endpoint.url,
      ca: trust.ca.certPem,
      signingKey: trust.signingKey.privateJwk,
    });
    const typed = new AdminClient({ client: dial({ target: server.target, tls }), tokens });
    const raw = dial({ target: server.target, tls });
    const token = await tokens.token();
    const rawCall = (): Promise<unknown> =>
      new Promise((resolve, reject) => {
        const md = new Metadata();
        md.set("authorization", `Bearer ${token}`);
        raw.listAgents({}, md, { deadline: Date.now() + 10_000 }, (err, res) =>
          err === null ? resolve(res) : reject(err),
        );
      });
    const typedCall = (): Promise<unknown> => typed.listAgents();
    try {
      await sequentialLatencies(200, rawCall);
      await sequentialLatencies(200, typedCall);
      const lat = { raw: [] as number[], typed: [] as number[] };
      const tput = { raw: [] as number[], typed: [] as number[] };
      const hits: number[] = [];
      for (let i = 0; i < ctx.warmup + ctx.runs; i++) {
        // Paired, alternating order, so load drift on the shared machine hits both alike.
        const order = i % 2 === 0 ? (["raw", "typed"] as const) : (["typed", "raw"] as const);
        for (const which of order) {
          const call = which === "raw" ? rawCall : typedCall;
          const l = await sequentialLatencies(SEQUENTIAL_CALLS, call);
          const t = await concurrentThroughput(CONCURRENT_CALLS, 64, call);
          if (i >= ctx.warmup) {
            lat[which].push(...l);
            tput[which].push(t);
          }
        }
        const start = performance.now();
        for (let k = 0; k < 10_000; k++) await tokens.token();
        if (i >= ctx.warmup) hits.push(((performance.now() - start) * 1000) / 10_000);
      }
      const ratio = tput.typed.map((t, k) => (100 * t) / tput.raw[k]!);
      return [
        summarise("raw client ListAgents sequential latency", "ms", lat.raw, "lower"),
        summarise("AdminClient ListAgents sequential latency", "ms", lat.typed, "lower"),
        summarise("raw client ListAgents 64-concurrent throughput", "calls/s", tput.raw, "higher"),
        summarise("AdminClient ListAgents 64-concurrent throughput", "calls/s", tput.typed, "higher"),
        summarise("AdminClient throughput / raw", "%", ratio, "higher"),
        summarise("TokenSource cached token()", "µs", hits, "lower"),
      ];
    } finally {
      await typed.close();
      raw.close();
      await endpoint.close();
      await server.close();
    }
  },
};
export default bench;
