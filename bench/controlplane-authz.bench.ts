// An authorized unary call through the daemon (admin listener: TLS front, call guard, ready gate,
// AuthInterceptor with the introspection cache, ListAgents) against the bare grpc-js echo server,
// interleaved in the same run (issue 15: >= 0.90). The figure that is about the daemon is each
// server's own CPU per call (its threads' run time from the scheduler over the calls): the load
// generator is this process, pinned to one core and both servers to the other, the same for both
// sides, so the client neither starves the server nor borrows its core. Each server's main-thread
// CPU per call is reported beside it, so a difference can be placed on the event loop or on V8's
// helper threads.
//
// Each run is a fresh daemon and a fresh echo server: on this machine the ratio moved by up to
// 0.12 between process pairs (0.81 to 0.94, each steady within itself), more than between the
// rounds of one pair, so one pair's figure was one draw of that spread. Within a run the two sides
// take turns in short stretches (CHUNK_CALLS each, one side first then the other, the order
// swapped every turn), so a change in the machine's speed mid-run falls on both.
// With BENCH_GC_TRACE=1 both servers run with V8's GC trace and each one's allocation, promotion
// and scavenges per call are reported too: counts that the machine's load does not swing, in
// steps of one collection (gc-trace.ts: ~0.8 KB per call at 3 runs).
import { dial, openAdminClient } from "@clawker/adminclient";
import { bearerMetadata, startControlPlane } from "../test/harness/controlplane.js";
import { rssMiB } from "../test/harness/proc-status.js";
import { startEcho } from "./grpc-baseline.js";
import { GC_TRACE_FLAG, gcTotals, LINE_BUFFERED, type GcTotals } from "./gc-trace.js";
import { summarise, type BenchContext, type Benchmark, type Figure } from "./lib.js";
import { cpuNs, pinToCpus } from "./proc-stat.js";
import { concurrentThroughput, sequentialLatencies } from "./unary-load.js";

const SEQUENTIAL_CALLS = 1000;
const CONCURRENT_CALLS = 20_000;
/** One side's turn in a measured round; CONCURRENT_CALLS per side per round in all. */
const CHUNK_CALLS = 2_000;
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
    figure("full collections per 1000 calls", "count", (totals.majors * 1000) / calls),
    figure("full collection pause per call", "µs", (totals.majorPauseMs * 1000) / calls),
  ];
}

/** What one side of the comparison measured over a round, summed over its turns. */
interface Side {
  calls: number;
  seconds: number;
  /** CPU of all the server's threads, and of its main thread, ns. */
  cpuNs: number;
  mainNs: number;
  /** The server's GC trace lines written during its turns (when tracing). */
  readonly gc: string[];
}

const emptySide = (): Side => ({ calls: 0, seconds: 0, cpuNs: 0, mainNs: 0, gc: [] });

/** What a side's GC trace says it promoted per call, for a run's log line. */
const promotedPerCall = (side: Side): string =>
  `${Math.round(gcTotals(side.gc).promotedBytes / side.calls)} B`;

/** One server under test: its pid, one call, and its output lines so far (GC trace). */
interface Server {
  readonly pid: number;
  readonly call: () => Promise<unknown>;
  readonly output: () => readonly string[];
}

/** One turn of `calls` at 64 in flight against `server`, added to `side`. */
async function turn(server: Server, calls: number, side: Side): Promise<void> {
  const cpu = cpuNs(server.pid);
  const main = cpuNs(server.pid, true);
  const lines = server.output().length;
  const perSecond = await concurrentThroughput(calls, 64, server.call);
  side.cpuNs += cpuNs(server.pid) - cpu;
  side.mainNs += cpuNs(server.pid, true) - main;
  side.gc.push(...server.output().slice(lines));
  side.calls += calls;
  side.seconds += calls / perSecond;
}

/** CONCURRENT_CALLS per side in turns of CHUNK_CALLS, the first side swapped every turn. */
async function interleavedRound(echo: Server, daemon: Server): Promise<{ echo: Side; daemon: Side }> {
  const out = { echo: emptySide(), daemon: emptySide() };
  for (let i = 0; i < CONCURRENT_CALLS / CHUNK_CALLS; i++) {
    const order: Array<[Server, Side]> = [
      [echo, out.echo],
      [daemon, out.daemon],
    ];
    if (i % 2 === 1) order.reverse();
    for (const [server, side] of order) await turn(server, CHUNK_CALLS, side);
  }
  return out;
}

/** Everything the runs measured, per side, for the figures. */
interface Tally {
  readonly base: { lat: number[]; tput: number[] };
  readonly auth: { lat: number[]; tput: number[] };
  readonly ratio: number[];
  readonly cpu: { base: number[]; auth: number[]; ratio: number[] };
  readonly main: { base: number[]; auth: number[] };
  readonly gcLines: { base: string[]; auth: string[] };
  readonly wrapped: number[];
  readonly rss: number[];
}

const bench: Benchmark = {
  name: "controlplane-authz",
  async run(ctx) {
    // BENCH_DAEMON_NODE_ARGS: node flags for the daemon alone, e.g. `--cpu-prof --cpu-prof-dir=/tmp/p`
    // (node refuses --cpu-prof in NODE_OPTIONS, and that would profile every process).
    // BENCH_GC_TRACE=1: V8's GC trace in both servers, the same flag for each (gc-trace.ts).
    const gcTrace = process.env["BENCH_GC_TRACE"] === "1";
    const daemonNodeArgs = [process.env["BENCH_DAEMON_NODE_ARGS"] ?? "", gcTrace ? GC_TRACE_FLAG : ""]
      .join(" ")
      .trim();
    const tally: Tally = {
      base: { lat: [], tput: [] },
      auth: { lat: [], tput: [] },
      ratio: [],
      cpu: { base: [], auth: [], ratio: [] },
      main: { base: [], auth: [] },
      gcLines: { base: [], auth: [] },
      wrapped: [],
      rss: [],
    };
    for (let run = 0; run < ctx.runs; run++) {
      await measurePair(ctx, { gcTrace, daemonNodeArgs, last: run === ctx.runs - 1 }, tally);
    }
    const { base, auth, ratio, cpu, main, gcLines } = tally;
    const figures: Figure[] = [];
    figures.push(summarise("baseline echo sequential latency", "ms", base.lat, "lower"));
    figures.push(summarise("authorized ListAgents sequential latency", "ms", auth.lat, "lower", "p99 <= 3"));
    figures.push(summarise("baseline echo 64-concurrent throughput", "calls/s", base.tput, "higher"));
    figures.push(summarise("authorized ListAgents 64-concurrent throughput", "calls/s", auth.tput, "higher"));
    figures.push(summarise("authorized / baseline throughput", "ratio", ratio, "higher", ">= 0.90"));
    // The same comparison on the servers' own CPU, so the benchmark client's limits drop out.
    figures.push(summarise("echo server CPU per call (64-concurrent)", "µs", cpu.base, "lower"));
    figures.push(summarise("daemon CPU per authorized ListAgents (64-concurrent)", "µs", cpu.auth, "lower"));
    figures.push(summarise("echo server main-thread CPU per call (64-concurrent)", "µs", main.base, "lower"));
    figures.push(
      summarise("daemon main-thread CPU per authorized ListAgents (64-concurrent)", "µs", main.auth, "lower"),
    );
    figures.push(
      summarise("authorized / baseline calls per server CPU-second", "ratio", cpu.ratio, "higher", ">= 0.90"),
    );
    if (gcTrace) {
      // Each turn's collections, summed over the runs: a collection's `allocated` counts from the
      // one before, so a turn's first also holds what the server allocated while the other ran (little).
      const calls = CONCURRENT_CALLS * ctx.runs;
      figures.push(...gcFigures("echo server", gcTotals(gcLines.base), calls));
      figures.push(...gcFigures("daemon", gcTotals(gcLines.auth), calls));
    }
    figures.push(
      summarise(
        "ListAgents via AdminClient (token per call from its cache), 64-concurrent",
        "calls/s",
        tally.wrapped,
        "higher",
      ),
    );
    figures.push(summarise("daemon RSS after the load above (own process)", "MiB", tally.rss, "lower"));
    return figures;
  },
};
export default bench;

/**
 * One run: a fresh daemon and echo server, warmed, then `ctx.warmup` rounds dropped and one kept
 * (sequential latencies, then the interleaved 64-concurrent round). The last run also measures
 * the AdminClient path and the daemon's RSS after the load.
 */
async function measurePair(
  ctx: BenchContext,
  opts: { readonly gcTrace: boolean; readonly daemonNodeArgs: string; readonly last: boolean },
  tally: Tally,
): Promise<void> {
  const { gcTrace, daemonNodeArgs } = opts;
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
    const dialDaemon = () =>
      dial({
        target: `127.0.0.1:${cp.ports.admin}`,
        tls: { ca: cp.trust!.ca.certPem, cert: cp.trust!.cli.certPem, key: cp.trust!.cli.keyPem },
      });
    const raw = dialDaemon();
    closers.push(() => raw.close());
    const listAgents = () =>
      new Promise<unknown>((resolve, reject) =>
        raw.listAgents({}, metadata, (err, res) => (err === null ? resolve(res) : reject(err))),
      );
    // Both servers first serve a client that then disconnects, as any long-running server has:
    // a closed TLS connection runs a Node listener that returns a value (`() => this.destroy()`
    // in tls's _wrapHandle), and from then on V8's optimized EventEmitter.emit builds its
    // arguments array on every emit (~1.4 KB per call in a sampling heap profile of either server). The daemon's start-up
    // already closes connections; an echo server that never saw one measured a state no
    // deployed grpc-js server stays in.
    await echo.callOnce();
    const once = dialDaemon();
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
    // The daemon's stdout lines that are not JSON log records (its GC trace, when on).
    const daemonOutput = (): string[] =>
      cp.logs.flatMap((l) => (typeof l["raw"] === "string" ? [l["raw"]] : []));
    const echoServer: Server = { pid: echo.pid, call: echo.call, output: echo.output };
    const daemonServer: Server = { pid: daemonPid, call: listAgents, output: daemonOutput };
    for (let i = 0; i <= ctx.warmup; i++) {
      const bl = await sequentialLatencies(SEQUENTIAL_CALLS, echo.call);
      const al = await sequentialLatencies(SEQUENTIAL_CALLS, listAgents);
      const round = await interleavedRound(echoServer, daemonServer);
      if (i < ctx.warmup) continue;
      const { echo: b, daemon: a } = round;
      tally.base.lat.push(...bl);
      tally.auth.lat.push(...al);
      tally.base.tput.push(b.calls / b.seconds);
      tally.auth.tput.push(a.calls / a.seconds);
      tally.ratio.push(a.calls / a.seconds / (b.calls / b.seconds));
      const echoUs = b.cpuNs / b.calls / 1000;
      const daemonUs = a.cpuNs / a.calls / 1000;
      tally.cpu.base.push(echoUs);
      tally.cpu.auth.push(daemonUs);
      tally.cpu.ratio.push(echoUs / daemonUs);
      tally.main.base.push(b.mainNs / b.calls / 1000);
      tally.main.auth.push(a.mainNs / a.calls / 1000);
      tally.gcLines.base.push(...b.gc);
      tally.gcLines.auth.push(...a.gc);
      // With the GC trace, each run's promotion too: a run whose server promotes per call what a
      // finished call leaves behind stands out from one that promotes next to nothing.
      ctx.log(
        `run: echo ${echoUs.toFixed(1)} µs, daemon ${daemonUs.toFixed(1)} µs per call, ` +
          `CPU ratio ${(echoUs / daemonUs).toFixed(3)}` +
          (opts.gcTrace
            ? `; promoted per call: echo ${promotedPerCall(b)}, daemon ${promotedPerCall(a)}`
            : ""),
      );
    }
    if (!opts.last) return;
    const viaAdminClient = () => client.listAgents();
    for (let i = 0; i < ctx.runs; i++)
      tally.wrapped.push(await concurrentThroughput(CONCURRENT_CALLS, 64, viaAdminClient));
    for (let i = 0; i < ctx.runs; i++) {
      await new Promise((r) => setTimeout(r, 200));
      tally.rss.push(rssMiB(daemonPid));
    }
  } catch (err) {
    // What the daemon said about it (its warnings and errors), beside the client's error.
    for (const l of cp.logs.filter((l) => Number(l["level"]) >= 40).slice(-20)) ctx.log(JSON.stringify(l));
    if (cp.proc.exitCode !== null) ctx.log(`daemon exited ${cp.proc.exitCode}: ${cp.stderr().slice(-2000)}`);
    throw err;
  } finally {
    for (const close of closers.reverse()) close();
    await client.close();
    await echo.close();
    await cp.close();
  }
}
