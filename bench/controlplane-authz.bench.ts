// An authorized unary call through the daemon (admin listener: TLS front, call guard, ready gate,
// AuthInterceptor with the introspection cache, ListAgents) against the bare grpc-js echo server,
// interleaved in the same run (issue 15: >= 0.90). The figure that is about the daemon is each
// server's own CPU per call (utime + stime over the run / calls): the load generator is this
// process, pinned to one core and both servers to the other, the same for both sides, so the
// client neither starves the server nor borrows its core. Each server's main-thread CPU per call is
// reported beside it, so a difference can be placed on the event loop or on V8's helper threads.
// With BENCH_GC_TRACE=1 both servers run with V8's GC trace and each one's allocation, promotion
// and scavenges per call are reported too: counts that the machine's load does not swing, in
// steps of one collection (gc-trace.ts: ~0.8 KB per call at 3 runs).
import { dial, openAdminClient } from "@clawker/adminclient";
import { bearerMetadata, startControlPlane } from "../test/harness/controlplane.js";
import { rssMiB } from "../test/harness/proc-status.js";
import { startEcho } from "./grpc-baseline.js";
import { GC_TRACE_FLAG, gcTotals, LINE_BUFFERED, type GcTotals } from "./gc-trace.js";
import { summarise, type Benchmark, type Figure } from "./lib.js";
import { cpuMs, pinToCpus } from "./proc-stat.js";
import { concurrentThroughput, sequentialLatencies } from "./unary-load.js";

const SEQUENTIAL_CALLS = 1000;
const CONCURRENT_CALLS = 20_000;
/** The core the servers run on and the one the load generator runs on (when there are two). */
const SERVER_CPUS = "0";
const CLIENT_CPUS = "1";
/** Longer than the whole benchmark: the daemon's memory relief does not fire between rounds. */
const BENCH_RELIEF_IDLE_MS = 3_600_000;

/**
 * A launcher that execs node with $BENCH_DAEMON_NODE_ARGS (word-split by the shell) before the
 * daemon's entry; the daemon inherits the variable and its pid stays the daemon's.
 */
const WITH_NODE_ARGS = ["sh", "-c", 'node=$1; shift; exec "$node" $BENCH_DAEMON_NODE_ARGS "$@"', "sh"];

/** The per-call GC figures of one server over the measured rounds. */
function gcFigures(side: string, totals: GcTotals, calls: number): Figure[] {
  const figure = (what: string, unit: string, value: number): Figure =>
    summarise(`${side} ${what} (GC trace, 64-concurrent)`, unit, [value], "lower");
  return [
    figure("allocated per call", "B", totals.allocatedBytes / calls),
    figure("promoted per call", "B", totals.promotedBytes / calls),
    figure("scavenges per 1000 calls", "count", (totals.scavenges * 1000) / calls),
    figure("scavenge pause per call", "µs", (totals.scavengePauseMs * 1000) / calls),
  ];
}

const bench: Benchmark = {
  name: "controlplane-authz",
  async run(ctx) {
    const figures: Figure[] = [];
    // BENCH_DAEMON_NODE_ARGS: node flags for the daemon alone, e.g. `--cpu-prof --cpu-prof-dir=/tmp/p`
    // (node refuses --cpu-prof in NODE_OPTIONS, and that would profile every process).
    // BENCH_GC_TRACE=1: V8's GC trace in both servers, the same flag for each (gc-trace.ts).
    const gcTrace = process.env["BENCH_GC_TRACE"] === "1";
    const daemonNodeArgs = [process.env["BENCH_DAEMON_NODE_ARGS"] ?? "", gcTrace ? GC_TRACE_FLAG : ""]
      .join(" ")
      .trim();
    const cp = await startControlPlane({
      built: true,
      // The daemon's memory relief (memory-relief.ts) fires after `idleMs` (10 s) quiet: on a
      // loaded machine the echo's turns left the daemon that long quiet, and each relief (a
      // last-resort full collection, which also flushes compiled code) made the next round re-warm
      // (daemon CPU per call 0.48x with relief held off, side by side, load 13). The figure is the
      // steady per-call cost, so relief is held off for the run; its start-up collection still runs.
      config: { memoryRelief: { idleMs: BENCH_RELIEF_IDLE_MS } },
      ...(daemonNodeArgs === ""
        ? {}
        : {
            launcher: [...(gcTrace ? LINE_BUFFERED : []), ...WITH_NODE_ARGS],
            env: { BENCH_DAEMON_NODE_ARGS: daemonNodeArgs },
          }),
    });
    const echo = await startEcho(gcTrace ? { nodeArgs: [GC_TRACE_FLAG], launcher: LINE_BUFFERED } : {});
    const client = openAdminClient({
      trust: cp.trust!,
      target: `127.0.0.1:${cp.ports.admin}`,
      tokenEndpoint: cp.tokenEndpoint,
    });
    const closers: Array<() => void> = [];
    try {
      const daemonPid = cp.proc.pid!;
      const log = (message: string): void => ctx.log(message);
      // Same confinement for both sides; undone at the end so later benchmarks run unpinned.
      for (const pid of [daemonPid, echo.pid]) closers.push(pinToCpus(pid, SERVER_CPUS, log));
      closers.push(pinToCpus(process.pid, CLIENT_CPUS, log));
      // Like the baseline: the raw generated client, here with a bearer token fetched once, so
      // the figure is the server's cost (TLS, interceptors, introspection cache, handler).
      const metadata = await bearerMetadata(cp);
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
      // Both servers first serve a client that then disconnects, as any long-running server has:
      // a closed TLS connection runs a Node listener that returns a value (`() => this.destroy()`
      // in tls's _wrapHandle), and from then on V8's optimized EventEmitter.emit builds its
      // arguments array on every emit (~1.4 KB per call in a sampling heap profile of either server). The daemon's start-up
      // already closes connections; an echo server that never saw one measured a state no
      // deployed grpc-js server stays in.
      await echo.callOnce();
      const once = dial({
        target: `127.0.0.1:${cp.ports.admin}`,
        tls: { ca: cp.trust!.ca.certPem, cert: cp.trust!.cli.certPem, key: cp.trust!.cli.keyPem },
      });
      await new Promise<void>((resolve, reject) =>
        once.listAgents({}, metadata, (err) => (err === null ? resolve() : reject(err))),
      );
      once.close();
      // Warm both paths, sequential and concurrent, before measuring: the benchmark's own client
      // process is the bottleneck here, and its JIT state swung the ratio by 0.2 between rounds.
      await sequentialLatencies(200, listAgents);
      await sequentialLatencies(200, echo.call);
      for (let i = 0; i < 2; i++) {
        await concurrentThroughput(CONCURRENT_CALLS, 64, echo.call);
        await concurrentThroughput(CONCURRENT_CALLS, 64, listAgents);
      }
      const base = { lat: [] as number[], tput: [] as number[] };
      const auth = { lat: [] as number[], tput: [] as number[] };
      const ratio: number[] = [];
      const cpu = { base: [] as number[], auth: [] as number[], ratio: [] as number[] };
      // The main thread's share (the event loop: grpc-js, our guard, the handler); the rest of a
      // process's CPU is V8's helper threads (GC, compilation) and libuv's pool.
      const main = { base: [] as number[], auth: [] as number[] };
      // The daemon's stdout lines that are not JSON log records (its GC trace, when on).
      const daemonOutput = (): string[] =>
        cp.logs.flatMap((l) => (typeof l["raw"] === "string" ? [l["raw"]] : []));
      const gcLines = { base: [] as string[], auth: [] as string[] };
      for (let i = 0; i < ctx.warmup + ctx.runs; i++) {
        const bl = await sequentialLatencies(SEQUENTIAL_CALLS, echo.call);
        const al = await sequentialLatencies(SEQUENTIAL_CALLS, listAgents);
        const bc = cpuMs(echo.pid);
        const bm = cpuMs(echo.pid, true);
        const bg = echo.output().length;
        const bt = await concurrentThroughput(CONCURRENT_CALLS, 64, echo.call);
        const bcpu = (cpuMs(echo.pid) - bc) / CONCURRENT_CALLS;
        const bmain = (cpuMs(echo.pid, true) - bm) / CONCURRENT_CALLS;
        const bgc = echo.output().slice(bg);
        const ag = daemonOutput().length;
        const ac = cpuMs(daemonPid);
        const am = cpuMs(daemonPid, true);
        const at = await concurrentThroughput(CONCURRENT_CALLS, 64, listAgents);
        const acpu = (cpuMs(daemonPid) - ac) / CONCURRENT_CALLS;
        const amain = (cpuMs(daemonPid, true) - am) / CONCURRENT_CALLS;
        const agc = daemonOutput().slice(ag);
        if (i < ctx.warmup) continue;
        gcLines.base.push(...bgc);
        gcLines.auth.push(...agc);
        base.lat.push(...bl);
        auth.lat.push(...al);
        base.tput.push(bt);
        auth.tput.push(at);
        ratio.push(at / bt);
        cpu.base.push(bcpu * 1000);
        cpu.auth.push(acpu * 1000);
        cpu.ratio.push(bcpu / acpu);
        main.base.push(bmain * 1000);
        main.auth.push(amain * 1000);
      }
      figures.push(summarise("baseline echo sequential latency", "ms", base.lat, "lower"));
      figures.push(
        summarise("authorized ListAgents sequential latency", "ms", auth.lat, "lower", "p99 <= 3"),
      );
      figures.push(summarise("baseline echo 64-concurrent throughput", "calls/s", base.tput, "higher"));
      figures.push(
        summarise("authorized ListAgents 64-concurrent throughput", "calls/s", auth.tput, "higher"),
      );
      figures.push(summarise("authorized / baseline throughput", "ratio", ratio, "higher", ">= 0.90"));
      // The same comparison on the servers' own CPU, so the benchmark client's limits drop out.
      figures.push(summarise("echo server CPU per call (64-concurrent)", "µs", cpu.base, "lower"));
      figures.push(
        summarise("daemon CPU per authorized ListAgents (64-concurrent)", "µs", cpu.auth, "lower"),
      );
      figures.push(
        summarise("echo server main-thread CPU per call (64-concurrent)", "µs", main.base, "lower"),
      );
      figures.push(
        summarise(
          "daemon main-thread CPU per authorized ListAgents (64-concurrent)",
          "µs",
          main.auth,
          "lower",
        ),
      );
      figures.push(
        summarise(
          "authorized / baseline calls per server CPU-second",
          "ratio",
          cpu.ratio,
          "higher",
          ">= 0.90",
        ),
      );
      if (gcTrace) {
        // Each round's collections, summed over the rounds: a collection's `allocated` counts from
        // the one before, so a round's first also holds what the server allocated while idle (little).
        const calls = CONCURRENT_CALLS * ctx.runs;
        figures.push(...gcFigures("echo server", gcTotals(gcLines.base), calls));
        figures.push(...gcFigures("daemon", gcTotals(gcLines.auth), calls));
      }
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
      const rss: number[] = [];
      for (let i = 0; i < ctx.runs; i++) {
        await new Promise((r) => setTimeout(r, 200));
        rss.push(rssMiB(daemonPid));
      }
      figures.push(summarise("daemon RSS after the load above (own process)", "MiB", rss, "lower"));
    } catch (err) {
      // What the daemon said about it (its warnings and errors), beside the client's error.
      for (const l of cp.logs.filter((l) => Number(l["level"]) >= 40).slice(-20)) ctx.log(JSON.stringify(l));
      if (cp.proc.exitCode !== null)
        ctx.log(`daemon exited ${cp.proc.exitCode}: ${cp.stderr().slice(-2000)}`);
      throw err;
    } finally {
      for (const close of closers.reverse()) close();
      await client.close();
      await echo.close();
      await cp.close();
    }
    return figures;
  },
};
export default bench;
