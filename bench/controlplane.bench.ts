// The daemon on embedded defaults, run from the build (cold start also from the install tree): cold
// start to /healthz 200 with the start-up timeline's medians, an authorized
// unary call against the bare grpc-js baseline measured in the same run, helper SIGKILL to exit,
// and idle resident memory of the daemon's own process.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { Metadata } from "@grpc/grpc-js";
import { dial, mintTrustSet, openAdminClient, TokenSource, writeTrustSet } from "@clawker/adminclient";
import { buildInstallTree } from "../scripts/install-tree.js";
import { helperPid, startControlPlane } from "../test/harness/controlplane.js";
import { waitFor } from "../test/harness/wait-for.js";
import { startEcho } from "./grpc-baseline.js";
import { summarise, type Benchmark, type Figure } from "./lib.js";
import { concurrentThroughput, sequentialLatencies } from "./unary-load.js";

const repoRoot = fileURLToPath(new URL("../", import.meta.url));
const SEQUENTIAL_CALLS = 1000;
const CONCURRENT_CALLS = 20_000;

function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = /VmRSS:\s+(\d+) kB/.exec(status)?.[1];
  if (kb === undefined) throw new Error(`no VmRSS for ${pid}`);
  return Number(kb) / 1024;
}

/** CPU time (user + system) a process has used, in ms, from /proc (USER_HZ is 100 on Linux). */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

function median(xs: readonly number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

const bench: Benchmark = {
  name: "controlplane",
  async run(ctx) {
    const figures: Figure[] = [];

    // Cold start: exec to /healthz 200, from the spawn to the first 200 (polled every 5 ms), on
    // trust material minted once (minting is the CLI's work, not the daemon's start). Two forms side
    // by side: the install tree users run (`npm run pack:cli`, the image: esbuild bundles behind
    // the version gate) and the workspace's tsc output (`npm run build`, a checkout's daemon).
    const treeDir = mkdtempSync(join(tmpdir(), "clawker-bench-tree-"));
    const trustDir = mkdtempSync(join(tmpdir(), "clawker-bench-trust-"));
    try {
      await buildInstallTree(treeDir);
      const trustSet = await mintTrustSet();
      await writeTrustSet(trustDir, trustSet);
      const forms = [
        { name: "install tree (bundles)", entry: join(treeDir, "packages/controlplane/dist/main.js") },
        { name: "workspace dist (tsc)", entry: join(repoRoot, "packages/controlplane/dist/main.js") },
      ];
      const cold = new Map<string, number[]>(forms.map((f) => [f.name, []]));
      const readyTotal: number[] = [];
      // CPU (user + system) of the daemon and the auth server until /healthz 200: what the start
      // costs, which machine load distorts far less than the wall-clock figure.
      const readyCpu = { daemon: [] as number[], authserver: [] as number[], both: [] as number[] };
      const crashToExit: number[] = [];
      const steps = new Map<string, { start: number[]; ms: number[] }>();
      // Interleaved, so both forms see the same machine load; the first round fills the compile caches.
      for (let i = 0; i < ctx.warmup + ctx.runs; i++) {
        for (const form of forms) {
          const cp = await startControlPlane({ entry: form.entry, trustDir, trustSet, healthPollMs: 5 });
          try {
            const measured = i >= ctx.warmup;
            if (measured) cold.get(form.name)!.push(cp.healthyAt! - cp.spawnedAt);
            if (measured && form === forms[0]) {
              const daemonCpu = cpuMs(cp.proc.pid!);
              const authCpu = cpuMs(helperPid(cp, "authserver"));
              readyCpu.daemon.push(daemonCpu);
              readyCpu.authserver.push(authCpu);
              readyCpu.both.push(daemonCpu + authCpu);
              const ready = cp.logs.find((l) => l["event"] === "ready" && l["totalMs"] !== undefined);
              readyTotal.push(ready!["totalMs"] as number);
              for (const l of cp.logs.filter((l) => l["event"] === "startup_step")) {
                const s = steps.get(l["step"] as string) ?? { start: [], ms: [] };
                s.start.push(l["startMs"] as number);
                s.ms.push(l["ms"] as number);
                steps.set(l["step"] as string, s);
              }
            }
            // Crash: SIGKILL the auth server; the daemon must drain and exit 1.
            const pid = helperPid(cp, "authserver");
            const killedAt = performance.now();
            process.kill(pid, "SIGKILL");
            const code = await cp.exited;
            if (code !== 1) throw new Error(`daemon exited ${code} after a helper crash, expected 1`);
            if (measured && form === forms[0]) crashToExit.push(performance.now() - killedAt);
          } finally {
            await cp.close();
          }
        }
      }
      for (const form of forms) {
        figures.push(
          summarise(
            `cold start, exec to /healthz 200: ${form.name}`,
            "ms",
            cold.get(form.name)!,
            "lower",
            form === forms[0] ? "median <= 800" : undefined,
          ),
        );
      }
      figures.push(
        summarise("ready record's totalMs (install tree, the daemon's own clock)", "ms", readyTotal, "lower"),
      );
      figures.push(
        summarise("CPU until /healthz 200, daemon (install tree)", "ms", readyCpu.daemon, "lower"),
      );
      figures.push(
        summarise("CPU until /healthz 200, auth server (install tree)", "ms", readyCpu.authserver, "lower"),
      );
      figures.push(summarise("CPU until /healthz 200, both (install tree)", "ms", readyCpu.both, "lower"));
      for (const [name, s] of steps) {
        ctx.log(`startup_step ${name}: starts at ${median(s.start)} ms, takes ${median(s.ms)} ms (medians)`);
      }
      figures.push(summarise("helper SIGKILL to daemon exit 1 (whole drain)", "ms", crashToExit, "lower"));
    } finally {
      rmSync(treeDir, { recursive: true, force: true });
      rmSync(trustDir, { recursive: true, force: true });
    }

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
      figures.push(summarise("daemon idle RSS after start (own process)", "MiB", idle, "lower", "<= 100"));
      // Idle for good: once memory relief has collected the start-up's garbage (in the first quiet
      // 100 ms after ready, trigger startup), which is where an idle daemon stays.
      await waitFor(() => cp.logs.some((l) => l["event"] === "memory_relief"), { timeoutMs: 60_000 });
      const settled: number[] = [];
      for (let i = 0; i < ctx.runs; i++) {
        await new Promise((r) => setTimeout(r, 200));
        settled.push(rssMiB(cp.proc.pid!));
      }
      figures.push(
        summarise(
          "daemon idle RSS once memory relief ran after start-up (own process)",
          "MiB",
          settled,
          "lower",
        ),
      );
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
      const cpu = { base: [] as number[], auth: [] as number[], ratio: [] as number[] };
      const daemonPid = cp.proc.pid!;
      for (let i = 0; i < ctx.warmup + ctx.runs; i++) {
        const bl = await sequentialLatencies(SEQUENTIAL_CALLS, echo.call);
        const al = await sequentialLatencies(SEQUENTIAL_CALLS, listAgents);
        const bc = cpuMs(echo.pid);
        const bt = await concurrentThroughput(CONCURRENT_CALLS, 64, echo.call);
        const bcpu = (cpuMs(echo.pid) - bc) / CONCURRENT_CALLS;
        const ac = cpuMs(daemonPid);
        const at = await concurrentThroughput(CONCURRENT_CALLS, 64, listAgents);
        const acpu = (cpuMs(daemonPid) - ac) / CONCURRENT_CALLS;
        if (i < ctx.warmup) continue;
        base.lat.push(...bl);
        auth.lat.push(...al);
        base.tput.push(bt);
        auth.tput.push(at);
        ratio.push(at / bt);
        cpu.base.push(bcpu * 1000);
        cpu.auth.push(acpu * 1000);
        cpu.ratio.push(bcpu / acpu);
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
        summarise(
          "authorized / baseline calls per server CPU-second",
          "ratio",
          cpu.ratio,
          "higher",
          ">= 0.90",
        ),
      );
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
