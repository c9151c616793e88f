// eBPF manager figures: BPF time per connect4, loopback connect latency with and without the
// programs (same run, interleaved), enroll round trip, 100 agents enrolled, sync-routes of 10,000 routes, and the
// build from scratch. Needs root, cgroup2 and bpffs.
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { promisify } from "node:util";
import { bpffsMount, cgroup2Mount } from "../test/harness/preconditions.js";
import {
  buildOnce,
  ensureBpffs,
  Lab,
  pkgDir,
  ports,
  readSysctl,
  remote,
} from "../packages/ebpf-manager/test/fixture.js";
import { type Benchmark, type BenchContext, type Figure, summarise, timeMs } from "./lib.js";

const run = promisify(execFile);
const LOOP_MS = 1000;
const PAIRS = 20;

interface ProgStats {
  readonly runTimeNs: number;
  readonly runCnt: number;
}

async function progStats(id: number): Promise<ProgStats> {
  const { stdout } = await run("bpftool", ["prog", "show", "id", String(id), "-j"]);
  const p = JSON.parse(stdout) as { run_time_ns?: number; run_cnt?: number };
  return { runTimeNs: p.run_time_ns ?? 0, runCnt: p.run_cnt ?? 0 };
}

/** Connections made by a tcp-loop of `ms` milliseconds. */
async function connections(
  lab: Lab,
  cgroup: string | undefined,
  addr: string,
  port: number,
  ms: number,
): Promise<number> {
  const r = await lab.probe(cgroup, "tcp-loop", addr, String(port), String(ms));
  const total = r["total"] as number;
  if (!r.ok || total === 0 || (r["errors"] as number) > 0)
    throw new Error(`tcp-loop failed: ${JSON.stringify(r)}`);
  return total;
}

/**
 * Microseconds per loopback connect with and without the programs, from PAIRS alternating short
 * loops, so that load changes on this shared machine hit both sides alike.
 */
async function connectPair(lab: Lab, agent: string): Promise<{ withUs: number; withoutUs: number }> {
  let withN = 0;
  let withoutN = 0;
  for (let i = 0; i < PAIRS; i++) {
    // steered: 10.250.0.1:443 -> 127.0.0.1:15001 through the programs
    withN += await connections(lab, agent, remote.web, 443, LOOP_MS / PAIRS);
    // the same listener, directly, from outside the enrolled parent (no programs run)
    withoutN += await connections(lab, undefined, "127.0.0.1", ports.catchall, LOOP_MS / PAIRS);
  }
  return { withUs: (LOOP_MS * 1000) / withN, withoutUs: (LOOP_MS * 1000) / withoutN };
}

async function buildFromScratch(ctx: BenchContext): Promise<Figure> {
  const samples: number[] = [];
  const runs = Math.min(ctx.runs, 3);
  for (let i = 0; i < runs; i++) {
    const out = mkdtempSync(join(tmpdir(), "ebpf-build-"));
    try {
      samples.push(
        (await timeMs(() => run("make", ["-s", "-C", pkgDir, `OUTPUT=${out}`], { timeout: 120_000 }))) / 1000,
      );
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }
  return summarise("build from scratch", "s", samples, "lower", "<= 10 s");
}

const bench: Benchmark = {
  name: "ebpf",
  skip: () => {
    ensureBpffs();
    if (process.getuid?.() !== 0) return "needs root";
    if (cgroup2Mount() === undefined) return "needs a cgroup2 mount";
    if (bpffsMount() === undefined) return "needs bpffs";
    return undefined;
  },
  async run(ctx) {
    await buildOnce();
    const figures: Figure[] = [];
    const lab = new Lab();
    const statsBefore = readSysctl("kernel.bpf_stats_enabled");
    try {
      await lab.setUp();
      const agent = lab.cgroup("agent");
      const connect4 = (await lab.client.dump()).links.find(
        (l) => l.program === "cg_connect4" && l.cgroupId === Lab.cgroupId(lab.parent),
      );
      if (connect4 === undefined) throw new Error("cg_connect4 link not found");

      // BPF time per connect4, from the kernel's own accounting
      writeFileSync("/proc/sys/kernel/bpf_stats_enabled", "1");
      const perConnect: number[] = [];
      const withProg: number[] = [];
      const without: number[] = [];
      for (let i = 0; i < ctx.warmup + ctx.runs; i++) {
        const s0 = await progStats(connect4.programId);
        const pair = await connectPair(lab, agent);
        const s1 = await progStats(connect4.programId);
        if (i < ctx.warmup) continue;
        perConnect.push((s1.runTimeNs - s0.runTimeNs) / Math.max(1, s1.runCnt - s0.runCnt) / 1000);
        withProg.push(pair.withUs);
        without.push(pair.withoutUs);
      }
      writeFileSync("/proc/sys/kernel/bpf_stats_enabled", statsBefore);
      figures.push(summarise("connect4 BPF time per connect", "µs", perConnect, "lower", "<= 3 µs"));
      figures.push(summarise("loopback connect, programs attached (steered)", "µs", withProg, "lower"));
      figures.push(summarise("loopback connect, no programs", "µs", without, "lower"));
      const overhead = withProg.map((w, i) => ((w - without[i]!) / without[i]!) * 100);
      figures.push(summarise("connect latency overhead", "%", overhead, "lower", "<= 15 %"));
      ctx.log(`connect4 stats over ${LOOP_MS} ms loops; bpf_stats_enabled restored to ${statsBefore}`);

      // enroll round trip over the socket
      const enrollMs: number[] = [];
      const cg = lab.cgroup("enrolled");
      for (let i = 0; i < 20; i++) await lab.client.enroll({ cgroup: cg }, lab.defaultConfig());
      for (let i = 0; i < 200; i++) {
        const t0 = performance.now();
        await lab.client.enroll({ cgroup: cg }, lab.defaultConfig());
        enrollMs.push(performance.now() - t0);
      }
      figures.push(summarise("enroll round trip", "ms", enrollMs, "lower", "p50 <= 2 ms"));

      // 100 agents enrolled, one new cgroup each, as the daemon's Enforcement enrols a started agent
      const agents = Array.from({ length: 100 }, (_, i) => lab.cgroup(`agent-${i}`));
      const perAgentMs: number[] = [];
      for (const agentCg of agents) {
        const t0 = performance.now();
        await lab.client.enroll({ cgroup: agentCg }, lab.defaultConfig());
        perAgentMs.push(performance.now() - t0);
      }
      figures.push(summarise("100 agents enrolled, per agent", "ms", perAgentMs, "lower", "<= 2 ms each"));

      // sync-routes of 10,000 routes (replacing 10,000)
      const routes = Array.from({ length: 10_000 }, (_, i) => ({
        identity: 1 + i,
        port: 443,
        protocol: "tcp" as const,
        listener: ports.route,
      }));
      const syncMs: number[] = [];
      for (let i = 0; i < ctx.warmup + ctx.runs; i++) {
        const ms = await timeMs(() => lab.client.syncRoutes(routes));
        if (i >= ctx.warmup) syncMs.push(ms);
      }
      figures.push(summarise("sync-routes 10,000 routes", "ms", syncMs, "lower", "<= 100 ms"));
    } finally {
      writeFileSync("/proc/sys/kernel/bpf_stats_enabled", statsBefore);
      await lab.tearDown();
    }
    figures.push(await buildFromScratch(ctx));
    return figures;
  },
};

export default bench;
