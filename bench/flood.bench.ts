// Issue 10's "done when": an authorized ListAgents keeps p99 <= 150 ms while 2,000 streams are held
// open and a junk-token flood runs. The built daemon runs as a child process; the hold and the
// flood are two more processes (bench/flood-load.ts), so the measuring process is not the attacker.
// The hold: 20 connections with the CLI's leaf, 100 GetSystemTime streams each that never send
// their request (public method, no token needed; the daemon ends them at its request timeout and
// they are re-opened at once). The flood: 4 connections with 64 concurrent ListAgents each, a new
// random token per call (the daemon throttles introspections and tarpits refusals per connection).
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { readdirSync } from "node:fs";
import { createInterface } from "node:readline";
import { performance } from "node:perf_hooks";
import { dial } from "@clawker/adminclient";
import { bearerMetadata, startControlPlane, type ControlPlane } from "../test/harness/controlplane.js";
import { rssMiB } from "../test/harness/proc-status.js";
import { summarise, type Benchmark, type Figure } from "./lib.js";
import { sequentialLatencies } from "./unary-load.js";

const CONNECTIONS = 20;
const STREAMS_PER_CONNECTION = 100;
const JUNK_CONNECTIONS = 4;
const JUNK_CONCURRENCY = 64;
const CALLS_PER_RUN = 500;

interface Load {
  readonly proc: ChildProcess;
  /** The child's latest report line. */
  latest: Record<string, number>;
}

/** Starts a flood-load.ts child and resolves once `ready` accepts one of its report lines. */
async function startLoad(
  cp: ControlPlane,
  args: string[],
  ready: (report: Record<string, number>) => boolean,
): Promise<Load> {
  const proc = spawn(
    process.execPath,
    [
      "--import",
      import.meta.resolve("tsx"),
      "--conditions=source",
      new URL("./flood-load.ts", import.meta.url).pathname,
      ...args,
    ],
    {
      env: {
        ...process.env,
        FLOOD_CA: cp.trust!.ca.certPem,
        FLOOD_CERT: cp.trust!.cli.certPem,
        FLOOD_KEY: cp.trust!.cli.keyPem,
      },
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  const load: Load = { proc, latest: {} };
  const lines = createInterface({ input: proc.stdout });
  let isReady: () => void = () => {};
  const readyNow = new Promise<void>((resolve) => (isReady = resolve));
  lines.on("line", (line) => {
    load.latest = JSON.parse(line) as Record<string, number>;
    if (ready(load.latest)) isReady();
  });
  const exited = once(proc, "exit").then(([code]) => {
    throw new Error(`flood-load ${args[0]} exited ${String(code)} before it was ready`);
  });
  exited.catch(() => undefined);
  await Promise.race([readyNow, exited]);
  return load;
}

async function stopLoad(load: Load | undefined): Promise<void> {
  if (load === undefined || load.proc.exitCode !== null) return;
  load.proc.kill("SIGTERM");
  await once(load.proc, "exit");
}

function daemonFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

const bench: Benchmark = {
  name: "flood",
  async run(ctx) {
    const figures: Figure[] = [];
    const cp = await startControlPlane({ built: true });
    let hold: Load | undefined;
    let junk: Load | undefined;
    const raw = dial({
      target: `127.0.0.1:${cp.ports.admin}`,
      tls: { ca: cp.trust!.ca.certPem, cert: cp.trust!.cli.certPem, key: cp.trust!.cli.keyPem },
    });
    try {
      const metadata = await bearerMetadata(cp);
      const listAgents = () =>
        new Promise<unknown>((resolve, reject) =>
          raw.listAgents({}, metadata, (err, res) => (err === null ? resolve(res) : reject(err))),
        );
      const pid = cp.proc.pid!;

      await sequentialLatencies(300, listAgents);
      const quiet: number[] = [];
      for (let i = 0; i < ctx.warmup + ctx.runs; i++) {
        const lat = await sequentialLatencies(CALLS_PER_RUN, listAgents);
        if (i >= ctx.warmup) quiet.push(...lat);
      }
      figures.push(summarise("authorized ListAgents latency, quiet", "ms", quiet, "lower"));

      const holding = CONNECTIONS * STREAMS_PER_CONNECTION;
      hold = await startLoad(
        cp,
        ["hold", String(cp.ports.admin), String(CONNECTIONS), String(STREAMS_PER_CONNECTION)],
        (r) => r["held"] === holding,
      );
      ctx.log(`holding ${holding} streams on ${CONNECTIONS} connections`);
      junk = await startLoad(
        cp,
        ["junk", String(cp.ports.admin), String(JUNK_CONNECTIONS), String(JUNK_CONCURRENCY)],
        (r) => (r["calls"] ?? 0) > 0,
      );

      const underLoad: number[] = [];
      const runP99: number[] = [];
      const heldMin: number[] = [];
      let maxFds = 0;
      let maxRss = 0;
      // The flood process reports once a second: its rate is taken over the whole measurement.
      const calls0 = junk.latest["calls"] ?? 0;
      const t0 = performance.now();
      for (let i = 0; i < ctx.warmup + ctx.runs; i++) {
        const lat = await sequentialLatencies(CALLS_PER_RUN, listAgents);
        maxFds = Math.max(maxFds, daemonFds(pid));
        maxRss = Math.max(maxRss, rssMiB(pid));
        if (i < ctx.warmup) continue;
        underLoad.push(...lat);
        runP99.push(summarise("run", "ms", lat, "lower").p99);
        heldMin.push(hold.latest["held"] ?? 0);
        if ((junk.latest["unexpected"] ?? 0) > 0)
          throw new Error("a junk token was not refused UNAUTHENTICATED");
      }
      figures.push(
        summarise(
          `authorized ListAgents latency under a ${holding}-stream hold and a junk-token flood`,
          "ms",
          underLoad,
          "lower",
          "p99 <= 150",
        ),
      );
      figures.push(summarise("p99 of each run under the hold and flood", "ms", runP99, "lower", "<= 150"));
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      const junkRate = ((junk.latest["calls"] ?? 0) - calls0) / ((performance.now() - t0) / 1000);
      figures.push(
        summarise("junk-token calls refused (flood rate over the runs)", "calls/s", [junkRate], "higher"),
      );
      figures.push(summarise("streams held (at the end of each run)", "streams", heldMin, "higher"));
      figures.push(summarise("daemon descriptors, max under load", "fds", [maxFds], "lower"));
      figures.push(summarise("daemon RSS, max under load", "MiB", [maxRss], "lower"));
    } finally {
      raw.close();
      await stopLoad(junk);
      await stopLoad(hold);
      await cp.close();
    }
    return figures;
  },
};
export default bench;
