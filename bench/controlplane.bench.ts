// The daemon on embedded defaults, run from the build: cold start to /healthz 200, an authorized
// unary call against the bare grpc-js baseline measured in the same run, helper SIGKILL to exit,
// and idle resident memory of the daemon's own process.
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { Metadata } from "@grpc/grpc-js";
import { dial, openAdminClient, TokenSource } from "@clawker/adminclient";
import { helperPid, startControlPlane } from "../test/harness/controlplane.js";
import { startEcho } from "./grpc-baseline.js";
import { summarise, type Benchmark, type Figure } from "./lib.js";
import { concurrentThroughput, sequentialLatencies } from "./unary-load.js";

const SEQUENTIAL_CALLS = 1000;
const CONCURRENT_CALLS = 20_000;

function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
  if (kb === undefined) throw new Error(`no VmRSS for ${pid}`);
  return Number(kb) / 1024;
}

const bench: Benchmark = {
  name: "controlplane",
  async run(ctx) {
    const figures: Figure[] = [];

    // Cold start: exec to /healthz 200 (startControlPlane polls every 50 ms from spawn).
    const coldStarts: number[] = [];
    const crashToExit: number[] = [];
    for (let i = 0; i < ctx.warmup + ctx.runs; i++) {
      const start = performance.now();
      const cp = await startControlPlane({ built: true });
      const ms = performance.now() - start;
      try {
        if (i >= ctx.warmup) coldStarts.push(ms);
        // Crash: SIGKILL the auth server; the daemon must drain and exit 1.
        const pid = helperPid(cp, "authserver");
        const killedAt = performance.now();
        process.kill(pid, "SIGKILL");
        const code = await cp.exited;
        if (code !== 1) throw new Error(`daemon exited ${code} after a helper crash, expected 1`);
        if (i >= ctx.warmup) crashToExit.push(performance.now() - killedAt);
      } finally {
        await cp.close();
      }
    }
    figures.push(summarise("cold start, exec to /healthz 200", "ms", coldStarts, "lower", "median <= 1500"));
    figures.push(summarise("helper SIGKILL to daemon exit 1 (whole drain)", "ms", crashToExit, "lower"));

    // Authorized ListAgents vs the bare echo baseline, interleaved in the same run.
    const cp = await startControlPlane({ built: true });
    const echo = await startEcho();
    const client = openAdminClient({
      trust: cp.trust!,
      target: `127.0.0.1:${cp.ports.admin}`,
      tokenEndpoint: cp.tokenEndpoint,
    });
    const closers: Array<() => void> = [];
    try {
      // Idle: after start-up, before any traffic.
      const idle: number[] = [];
      for (let i = 0; i < ctx.runs; i++) {
        await new Promise((r) => setTimeout(r, 200));
        idle.push(rssMiB(cp.proc.pid!));
      }
      figures.push(summarise("daemon idle RSS after start (own process)", "MiB", idle, "lower", "<= 120"));
      // Like the baseline: the raw generated client, here with a bearer token fetched once, so
      // the figure is the server's cost (TLS, interceptors, introspection cache, handler).
      const tokens = new TokenSource({
        ca: cp.trust!.ca.certPem,
        signingKey: cp.trust!.signingKey.privateJwk,
        tokenEndpoint: cp.tokenEndpoint,
      });
      const metadata = new Metadata();
      metadata.set("authorization", `Bearer ${await tokens.token()}`);
      await tokens.close();
      const raw = dial({
        target: `127.0.0.1:${cp.ports.admin}`,
        tls: { ca: cp.trust!.ca.certPem, cert: cp.trust!.cli.certPem, key: cp.trust!.cli.keyPem },
      });
      closers.push(() => raw.close());
      const listAgents = () =>
        new Promise<unknown>((resolve, reject) =>
          raw.listAgents({}, metadata, (err, res) => (err === null ? resolve(res) : reject(err))),
        );
      const viaAdminClient = () => client.listAgents();
      // Warm both paths, sequential and concurrent, before measuring: the benchmark's own client
      // process is the bottleneck here, and its JIT state swung the ratio by 0.2 between rounds.
      await sequentialLatencies(200, listAgents);
      await sequentialLatencies(200, echo.call);
      for (let i = 0; i < 2; i++) {
        await concurrentThroughput(CONCURRENT_CALLS, 64, echo.call);
        await concurrentThroughput(CONCURRENT_CALLS, 64, listAgents);
      }
      const rss: number[] = [];
      const base = { lat: [] as number[], tput: [] as number[] };
      const auth = { lat: [] as number[], tput: [] as number[] };
      const ratio: number[] = [];
      for (let i = 0; i < ctx.warmup + ctx.runs; i++) {
        const bl = await sequentialLatencies(SEQUENTIAL_CALLS, echo.call);
        const al = await sequentialLatencies(SEQUENTIAL_CALLS, listAgents);
        const bt = await concurrentThroughput(CONCURRENT_CALLS, 64, echo.call);
        const at = await concurrentThroughput(CONCURRENT_CALLS, 64, listAgents);
        if (i < ctx.warmup) continue;
        base.lat.push(...bl);
        auth.lat.push(...al);
        base.tput.push(bt);
        auth.tput.push(at);
        ratio.push(at / bt);
      }
      figures.push(summarise("baseline echo sequential latency", "ms", base.lat, "lower"));
      figures.push(
        summarise("authorized ListAgents sequential latency", "ms", auth.lat, "lower", "p99 <= 3"),
      );
      figures.push(summarise("baseline echo 64-concurrent throughput", "calls/s", base.tput, "higher"));
      figures.push(
        summarise("authorized ListAgents 64-concurrent throughput", "calls/s", auth.tput, "higher"),
      );
      figures.push(summarise("authorized / baseline throughput", "ratio", ratio, "higher", ">= 0.80"));
      const wrapped: number[] = [];
      for (let i = 0; i < ctx.runs; i++)
        wrapped.push(await concurrentThroughput(CONCURRENT_CALLS, 64, viaAdminClient));
      figures.push(
        summarise(
          "ListAgents via AdminClient (token per call from its cache), 64-concurrent",
          "calls/s",
          wrapped,
          "higher",
        ),
      );
      for (let i = 0; i < ctx.runs; i++) {
        await new Promise((r) => setTimeout(r, 200));
        rss.push(rssMiB(cp.proc.pid!));
      }
      figures.push(summarise("daemon RSS after the load above (own process)", "MiB", rss, "lower"));
    } finally {
      for (const close of closers) close();
      await client.close();
      await echo.close();
      await cp.close();
    }
    return figures;
  },
};
export default bench;
