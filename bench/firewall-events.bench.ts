// The decision stream's figures (issue 11) on the real daemon (clawker-cp from source, embedded
// auth server, the real HAProxy, the loopback egress world):
// - a denial to visible in `clawker firewall events --follow` (the real CLI process, JSON lines):
//   from the agent's connect to the line on the CLI's stdout (p50 <= 100 ms, p99 <= 500 ms);
// - the pipeline's rate: the proxy's own decision lines (HAProxy's format, this run's token, read
//   from the 0600 config as root) written to the daemon's decision socket by a child process the
//   way HAProxy's ring forwarder writes them (decision-line-flood.ts) at a fixed offered rate (BENCH_FLOOD_RATE, default 50,000 lines/s), the flooder confined to its
//   own cgroup with a CPU quota (BENCH_FLOOD_CPUS, default 0.6 of a core) so it cannot starve the
//   daemon on a 2-core machine. Each line is parsed, attributed, kept in the ring, triaged and
//   handed to the audit log (>= 50,000 events/s), from FirewallStatus's counters, over a window
//   with no RPC load: events/s delivered, counted drops (rate limit, the ring), uncounted
//   (sent - published, must be 0), and the daemon's CPU per event (its /proc stat over the window);
//   and the same pipeline in this process (line -> hub -> a real EgressTriage and AuditLog);
// - authorized ListAgents throughput (8 callers, a fixed window) within that flood as a share of
//   idle, same run (>= 70%); the window must start after the flood did and end before it does;
//   and the events/s delivered during that same window, so both targets are seen held at once.
// BENCH_CPU_PROF_DIR=<dir>: the daemon runs with --cpu-prof and writes its profile there at exit.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { openAdminClient } from "@clawker/adminclient";
import { pino } from "pino";
import { ContainerAddressIndex } from "../packages/controlplane/src/agents/address-index.js";
import { AuditLog } from "../packages/controlplane/src/firewall/audit/audit-log.js";
import { agentResolver } from "../packages/controlplane/src/firewall/events/agent-resolver.js";
import { EventHub } from "../packages/controlplane/src/firewall/events/event-hub.js";
import { proxyEvent } from "../packages/controlplane/src/firewall/events/sources.js";
import { parseDecisionLine } from "../packages/controlplane/src/firewall/proxy/decision-log.js";
import { RuleStore } from "../packages/controlplane/src/firewall/rule-store.js";
import { EgressTriage } from "../packages/controlplane/src/firewall/triage/egress-triage.js";
import { spawnClawker } from "../test/harness/clawker-cli.js";
import { startControlPlane } from "../test/harness/controlplane.js";
import { firewallConfig, startEgressWorld, tlsThrough } from "../test/harness/egress-world.js";
import { command, root } from "../test/harness/preconditions.js";
import { waitFor } from "../test/harness/wait-for.js";
import { summarise, type Benchmark, type BenchContext, type Figure } from "./lib.js";
import { cpuMs } from "./proc-stat.js";
import { concurrentThroughput } from "./unary-load.js";

const LATENCY_SAMPLES = 60;
/** The flood runs this long: a settling second, the pipeline window, the ListAgents window, slack. */
const FLOOD_SECONDS = 12;
const SETTLE_MS = 1_000;
const PIPELINE_WINDOW_MS = 4_000;
const LIST_WINDOW_MS = 4_000;
const FLOOD_RATE = Number(process.env["BENCH_FLOOD_RATE"] ?? 50_000);
const FLOOD_CPUS = Number(process.env["BENCH_FLOOD_CPUS"] ?? 0.6);

/** The first file under `dir` whose text matches `re`, and the match. */
function findIn(dir: string, re: RegExp): RegExpExecArray | undefined {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const st = statSync(path);
    if (st.isDirectory()) {
      const m = findIn(path, re);
      if (m !== undefined) return m;
    } else if (st.isFile() && st.size < 4 * 1024 * 1024) {
      const m = re.exec(readFileSync(path, "utf8"));
      if (m !== null) return m;
    }
  }
  return undefined;
}

/**
 * Confines a process to `cores` of CPU in a cgroup of its own (cgroup v1's cpu controller, else
 * cgroup v2's cpu.max); returns the cleanup (removes the cgroup once the process has left it), or
 * undefined when neither can be written.
 */
function capCpu(pid: number, cores: number): (() => void) | undefined {
  const name = `clawker-bench-flood-${randomBytes(4).toString("hex")}`;
  const period = 100_000;
  const quota = Math.max(1_000, Math.round(cores * period));
  const v1 = "/sys/fs/cgroup/cpu";
  const v2 = "/sys/fs/cgroup/unified";
  const tries: [string, (dir: string) => void][] = [
    [
      v1,
      (dir) => {
        writeFileSync(join(dir, "cpu.cfs_period_us"), String(period));
        writeFileSync(join(dir, "cpu.cfs_quota_us"), String(quota));
      },
    ],
    [v2, (dir) => writeFileSync(join(dir, "cpu.max"), `${quota} ${period}`)],
  ];
  for (const [root, limit] of tries) {
    if (!existsSync(join(root, "cgroup.procs"))) continue;
    const dir = join(root, name);
    try {
      mkdirSync(dir);
      limit(dir);
      writeFileSync(join(dir, "cgroup.procs"), String(pid));
      return () => {
        // The process has exited (or is moved back to the root first): an empty cgroup removes.
        try {
          writeFileSync(join(root, "cgroup.procs"), String(pid));
        } catch {
          // Exited already.
        }
        rmdirSync(dir);
      };
    } catch {
      try {
        rmdirSync(dir);
      } catch {
        // Never made.
      }
    }
  }
  return undefined;
}

/** Calls per second with `concurrency` callers calling for `ms`. */
async function throughputFor(ms: number, concurrency: number, call: () => Promise<unknown>): Promise<number> {
  let calls = 0;
  const start = performance.now();
  const end = start + ms;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        await call();
        calls++;
      }
    }),
  );
  return calls / ((performance.now() - start) / 1000);
}

/**
 * The same pipeline in this process, without the daemon's scheduling and the socket between HAProxy and the daemon:
 * proxy log lines parsed, converted, attributed (a real, empty address index), kept in the ring,
 * triaged (a real EgressTriage over a real rule store) and handed to a real AuditLog writing to a
 * temp dir, for 3 s.
 */
async function pipelineInProcess(ctx: BenchContext): Promise<Figure> {
  const dir = mkdtempSync(join(tmpdir(), "events-bench-"));
  const log = pino({ level: "silent" });
  const audit = new AuditLog({ dir, log });
  await audit.start();
  const hub = new EventHub({
    log,
    ratePerSecond: { proxy: 1_000_000 },
    resolver: agentResolver({
      registry: () => undefined,
      index: new ContainerAddressIndex({ inspect: () => Promise.resolve(undefined), log }),
    }),
  });
  hub.onEvent((e) => audit.event(e));
  // The triage as the daemon runs it: over a real rule store (one allow rule, so coverage is looked at).
  const store = new RuleStore({ db: join(dir, "rules.db") });
  store.add([{ dst: "api.example.test", proto: "https", port: "443", action: "allow" }], {
    clientId: "bench",
    certCn: "bench",
  });
  const triage = new EgressTriage({
    firewall: {
      running: true,
      database: join(dir, "rules.db"),
      addRules: () => Promise.reject(new Error("not in the bench")),
      removeRule: () => Promise.reject(new Error("not in the bench")),
      listRules: () => store.list(),
    },
    log,
  });
  await triage.start(new AbortController().signal);
  hub.onEvent((e) => triage.record(e));
  const lines = Array.from(
    { length: 1000 },
    (_, i) =>
      `{"k":"t","layer":"tls","ts":${Math.floor(Date.now() / 1000)},"src":"127.0.0.3","sport":${1024 + i},` +
      `"name":"flood${i}.example.test","port":443,"verdict":"deny","reason":"no_rule","duration_ms":1,` +
      `"bytes_in":517,"bytes_out":7,"termination":"SD"}`,
  );
  const start = performance.now();
  const cpu0 = process.threadCpuUsage();
  let n = 0;
  // In turns of 1,000, yielding between them so the audit log's writes proceed as in the daemon.
  while (performance.now() - start < 3000) {
    for (const line of lines) {
      const { event, origin } = proxyEvent(parseDecisionLine(line)!);
      hub.publish(event, origin);
      n++;
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
  const seconds = (performance.now() - start) / 1000;
  const cpu = process.threadCpuUsage(cpu0);
  await audit.close();
  await triage.close();
  store.close();
  const a = audit.stats();
  const h = hub.stats();
  ctx.log(
    `in process: ${n} events in ${seconds.toFixed(1)} s, ${((cpu.user + cpu.system) / n).toFixed(1)} us main-thread CPU each; hub published ${h.published} = delivered ${h.delivered} + dropped ${h.dropped}; ` +
      `audit written ${a.written}, lost ${a.lost} (as gap records: ${a.gapRecords})`,
  );
  rmSync(dir, { recursive: true, force: true });
  return summarise(
    "events through the pipeline in process (line -> hub -> triage, audit log)",
    "events/s",
    [n / seconds],
    "higher",
    ">= 50,000/s",
  );
}

const bench: Benchmark = {
  name: "firewall-events",
  skip: () => {
    for (const need of [command("haproxy"), command("ss"), root]) {
      const why = need.check();
      if (why !== undefined) return why;
    }
    return undefined;
  },
  async run(ctx) {
    const world = await startEgressWorld(["api.example.test"]);
    const profDir = process.env["BENCH_CPU_PROF_DIR"];
    const cp = await startControlPlane({
      ...(profDir === undefined ? {} : { env: { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${profDir}` } }),
      config: {
        firewall: firewallConfig(world, {
          // The pipeline's own rate, not the default limit's: the limit is what drops beyond it.
          events: { perSourcePerSecond: 1_000_000, ringSize: 10_000 },
        }),
      },
    });
    const client = openAdminClient({
      trust: cp.trust!,
      target: `127.0.0.1:${cp.ports.admin}`,
      tokenEndpoint: cp.tokenEndpoint,
    });
    const env = {
      ...process.env,
      CLAWKER_CP_TRUST_DIR: cp.trustDir,
      CLAWKER_CP_DATA_DIR: cp.dataDir,
      CLAWKER_CP_ADMIN_ADDR: `127.0.0.1:${cp.ports.admin}`,
      CLAWKER_TOKEN_ENDPOINT: cp.tokenEndpoint,
    };
    const figures: Figure[] = [];
    const cli = spawnClawker(["firewall", "events", "--follow", "--denied", "--format", "json"], { env });
    try {
      await client.firewallInit();
      const ca = world.upstreamCa.certPem;
      // Subscribed once a warm-up denial shows.
      await waitFor(
        async () => {
          await tlsThrough(world, "warmup.example.test", ca);
          return cli.lines.some((l) => l.includes("warmup.example.test"));
        },
        { timeoutMs: 60_000, what: "the CLI watcher" },
      );

      // 1. Denial -> visible.
      const latencies: number[] = [];
      for (let i = 0; i < LATENCY_SAMPLES; i++) {
        const name = `d${i}.example.test`;
        const start = performance.now();
        await tlsThrough(world, name, ca);
        await waitFor(() => cli.lines.some((l) => l.includes(`"${name}"`)), {
          timeoutMs: 10_000,
          intervalMs: 1,
          what: name,
        });
        latencies.push(performance.now() - start);
      }

      // The watcher is not part of the pipeline figure: every flood event would also be streamed
      // to it and printed (its own cost, measured by the latency figure).
      await cli.stop();

      // 2. + 3. ListAgents idle (and the daemon's CPU per call), then the flood.
      const list = (): Promise<unknown> => client.listAgents();
      await concurrentThroughput(200, 8, list);
      const idleCpuBefore = cpuMs(cp.proc.pid!);
      const idle = await throughputFor(LIST_WINDOW_MS, 8, list);
      const idleCpuPerCallUs =
        ((cpuMs(cp.proc.pid!) - idleCpuBefore) * 1000) / ((idle * LIST_WINDOW_MS) / 1000);
      const m = findIn(cp.dataDir, /server daemon unix@(\S+)[\s\S]*?\{"k":"([0-9a-f]{32})"/);
      if (m === undefined) throw new Error("no proxy decision socket and token in the data dir");
      const proxyCounts = async (): Promise<{ published: number; delivered: number; dropped: number }> => {
        const s = (await client.firewallStatus()).eventSources.find((e) => e.source === "proxy")!;
        return {
          published: Number(s.published),
          delivered: Number(s.delivered),
          dropped: Number(s.droppedRateLimited + s.droppedUpstream),
        };
      };
      const before = await proxyCounts();
      const flooder = spawn(
        process.execPath,
        [
          "--import",
          import.meta.resolve("tsx"),
          join(import.meta.dirname, "decision-line-flood.ts"),
          m[1]!,
          m[2]!,
          String(FLOOD_SECONDS),
          String(FLOOD_RATE),
        ],
        { stdio: ["ignore", "pipe", "inherit"] },
      );
      // Confined before it sends anything (its start-up takes far longer than this write).
      const uncap = capCpu(flooder.pid!, FLOOD_CPUS);
      if (uncap === undefined) ctx.log("flooder NOT confined: no writable cgroup cpu controller");
      const exited = new Promise((resolve) => flooder.once("exit", resolve));
      try {
        const lines = createInterface({ input: flooder.stdout })[Symbol.asyncIterator]();
        const nextLine = async (): Promise<string> => {
          const r = await lines.next();
          if (r.done === true) throw new Error("the flooder ended without a report");
          return r.value;
        };
        await nextLine(); // {"started":true}: the flooder's own start-up is not part of the flood
        const floodStart = performance.now();
        const sentLine = nextLine();
        let floodOver = false;
        void sentLine.then(
          () => (floodOver = true),
          () => (floodOver = true),
        );
        await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
        // The pipeline window: the flood alone, no RPC load but the two status reads.
        const sample = async (): Promise<{
          counts: Awaited<ReturnType<typeof proxyCounts>>;
          cpu: number;
          main: number;
          at: number;
        }> => ({
          counts: await proxyCounts(),
          cpu: cpuMs(cp.proc.pid!),
          main: cpuMs(cp.proc.pid!, true),
          at: performance.now(),
        });
        const w0 = await sample();
        await new Promise((resolve) => setTimeout(resolve, PIPELINE_WINDOW_MS));
        const w1 = await sample();
        const windowDelivered = w1.counts.delivered - w0.counts.delivered;
        const windowSeconds = (w1.at - w0.at) / 1000;
        const perSecond = windowDelivered / windowSeconds;
        const cpuPerEventUs = ((w1.cpu - w0.cpu) * 1000) / Math.max(windowDelivered, 1);
        // ListAgents within the flood; a figure taken partly after it ended says so.
        const listStart = performance.now();
        const listStartedInFlood = !floodOver && listStart > floodStart;
        const l0 = await sample();
        const loaded = await throughputFor(LIST_WINDOW_MS, 8, list);
        const l1 = await sample();
        const listInFlood = listStartedInFlood && !floodOver;
        // The pipeline's own rate while the RPCs run: the two figures are held at the same time.
        const perSecondWithList = (l1.counts.delivered - l0.counts.delivered) / ((l1.at - l0.at) / 1000);
        const report = JSON.parse(await sentLine) as {
          sent: number;
          written: number;
          dropped: number;
          ms: number;
          cpuMs: number;
        };
        const { sent } = report;
        // The daemon may still be reading what the socket buffered: every line offered ends up
        // published (delivered, or counted dropped from the ring's notice or by the rate limit).
        let after = await proxyCounts();
        await waitFor(
          async () => {
            after = await proxyCounts();
            return after.published - before.published >= sent;
          },
          { timeoutMs: 30_000, intervalMs: 250, what: "every line sent to be delivered or counted" },
        );
        const published = after.published - before.published;
        const delivered = after.delivered - before.delivered;
        const dropped = after.dropped - before.dropped;
        ctx.log(
          `flood: offered ${FLOOD_RATE}/s, flooder capped at ${uncap === undefined ? "(none)" : FLOOD_CPUS} CPU, sent ${sent} ` +
            `(${((sent / report.ms) * 1000).toFixed(0)}/s; written ${report.written}, the ring dropped ${report.dropped}; flooder CPU ${report.cpuMs.toFixed(0)} ms); published ${published}, ` +
            `delivered ${delivered}, dropped (counted) ${dropped}, not counted anywhere (sent - published) ${sent - published}; ` +
            `pipeline window ${windowSeconds.toFixed(1)} s: ${perSecond.toFixed(0)} events/s delivered, daemon CPU ` +
            `${(w1.cpu - w0.cpu).toFixed(0)} ms = ${cpuPerEventUs.toFixed(1)} us/event ` +
            `(main thread ${(((w1.main - w0.main) * 1000) / Math.max(windowDelivered, 1)).toFixed(1)} us); ` +
            `ListAgents idle ${idle.toFixed(0)}/s (daemon ${idleCpuPerCallUs.toFixed(0)} us CPU/call), within the flood ` +
            `${loaded.toFixed(0)}/s${listInFlood ? "" : " (NOT all within the flood)"} while ${perSecondWithList.toFixed(0)} events/s were delivered; load ${loadavg()[0]!.toFixed(1)}`,
        );
        figures.push(
          summarise(
            "events through the daemon (decision stream -> hub -> triage, audit log)",
            "events/s",
            [perSecond],
            "higher",
            ">= 50,000/s",
          ),
          summarise(
            "events through the daemon while the ListAgents load runs",
            "events/s",
            [perSecondWithList],
            "higher",
            ">= 50,000/s",
          ),
          summarise("daemon CPU per event within the flood", "us", [cpuPerEventUs], "lower"),
          summarise(
            "ListAgents within the event flood / idle",
            "%",
            [(loaded / idle) * 100],
            "higher",
            ">= 70%",
          ),
        );
      } finally {
        flooder.kill();
        await exited;
        uncap?.();
      }
      figures.unshift(
        await pipelineInProcess(ctx),
        summarise(
          "denial to visible in events --follow",
          "ms",
          latencies,
          "lower",
          "p50 <= 100 ms, p99 <= 500 ms",
        ),
      );
      return figures;
    } finally {
      await cli.stop();
      await client.close();
      await cp.close();
      await world.close();
    }
  },
};

export default bench;
