// The decision stream's figures (issue 11) on the real daemon (clawker-cp from source, embedded
// auth server, the real HAProxy, the loopback egress world):
// - a denial to visible in `clawker firewall events --follow` (the real CLI process, JSON lines):
//   from the agent's connect to the line on the CLI's stdout (p50 <= 100 ms, p99 <= 500 ms);
// - the pipeline's rate: the proxy's own decision lines (HAProxy's format, this run's token, read
//   from the 0600 config as root) sent to the daemon's loopback decision socket by a child process
//   as fast as it can for 5 s; each one parsed, attributed, kept in the ring and handed to the
//   audit log (>= 50,000 events/s), from FirewallStatus's counters; drops counted (rate limit) and
//   the kernel's UDP losses (sent - published) reported beside; and the same pipeline in this
//   process (line -> hub -> a real AuditLog), without the daemon's scheduling and the UDP buffer;
// - authorized ListAgents throughput (8 callers) under that load as a share of idle, same run
//   (>= 70%).
// BENCH_CPU_PROF_DIR=<dir>: the daemon runs with --cpu-prof and writes its profile there at exit.
// The CPU the daemon and the flooder each used during the flood is logged (they share the cores).
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
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
import { spawnClawker } from "../test/harness/clawker-cli.js";
import { startControlPlane } from "../test/harness/controlplane.js";
import { firewallConfig, startEgressWorld, tlsThrough } from "../test/harness/egress-world.js";
import { command, root } from "../test/harness/preconditions.js";
import { waitFor } from "../test/harness/wait-for.js";
import { summarise, type Benchmark, type BenchContext, type Figure } from "./lib.js";
import { concurrentThroughput } from "./unary-load.js";

const LATENCY_SAMPLES = 60;
const FLOOD_SECONDS = 10;
const LIST_CALLS = 1000;

/** CPU milliseconds (user + system) a process has used so far (USER_HZ 100 on Linux x86-64). */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  // Fields 14 and 15 of stat (utime, stime), counted after the command's ")".
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

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
 * The same pipeline in this process, without the daemon's scheduling and the kernel's UDP buffer:
 * proxy log lines parsed, converted, attributed (a real, empty address index), kept in the ring
 * and handed to a real AuditLog writing to a temp dir, for 3 s.
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
  const lines = Array.from(
    { length: 1000 },
    (_, i) =>
      `{"k":"t","layer":"tls","ts":${Math.floor(Date.now() / 1000)},"src":"127.0.0.3","sport":${1024 + i},` +
      `"name":"flood${i}.example.test","port":443,"verdict":"deny","reason":"no_rule","duration_ms":1,` +
      `"bytes_in":517,"bytes_out":7,"termination":"SD"}`,
  );
  const start = performance.now();
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
  await audit.close();
  const a = audit.stats();
  const h = hub.stats();
  ctx.log(
    `in process: ${n} events in ${seconds.toFixed(1)} s; hub published ${h.published} = delivered ${h.delivered} + dropped ${h.dropped}; ` +
      `audit written ${a.written}, lost ${a.lost} (as gap records: ${a.gapRecords})`,
  );
  rmSync(dir, { recursive: true, force: true });
  return summarise(
    "events through the pipeline in process (line -> hub -> audit log)",
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

      // 2. + 3. ListAgents idle, then under the flood.
      const list = (): Promise<unknown> => client.listAgents();
      await concurrentThroughput(200, 8, list);
      const idle = await concurrentThroughput(LIST_CALLS, 8, list);
      const m = findIn(cp.dataDir, /log 127\.0\.0\.1:(\d+) [\s\S]*?\{"k":"([0-9a-f]{32})"/);
      if (m === undefined) throw new Error("no proxy decision log port and token in the data dir");
      const proxyCounts = async (): Promise<{ published: number; delivered: number; dropped: number }> => {
        const s = (await client.firewallStatus()).eventSources.find((e) => e.source === "proxy")!;
        return {
          published: Number(s.published),
          delivered: Number(s.delivered),
          dropped: Number(s.droppedRateLimited + s.droppedUpstream),
        };
      };
      const before = await proxyCounts();
      const daemonCpuBefore = cpuMs(cp.proc.pid!);
      const flooder = spawn(
        process.execPath,
        [
          "--import",
          import.meta.resolve("tsx"),
          join(import.meta.dirname, "udp-line-flood.ts"),
          m[1]!,
          m[2]!,
          String(FLOOD_SECONDS),
        ],
        { stdio: ["ignore", "pipe", "inherit"] },
      );
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
      // ListAgents while the flood runs; a figure taken partly after it ended says so.
      const loaded = await concurrentThroughput(LIST_CALLS, 8, list);
      const listInFlood = !floodOver;
      const { sent, cpuMs: flooderCpuMs } = JSON.parse(await sentLine) as { sent: number; cpuMs: number };
      const floodMs = performance.now() - floodStart;
      const daemonCpuMs = cpuMs(cp.proc.pid!) - daemonCpuBefore;
      // The daemon may still be reading what the kernel buffered, and reads the kernel's drop
      // counter once a second: every line sent ends up published (delivered or counted dropped).
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
      // Over the flood's own duration (what the kernel buffered is read within ~0.1 s after it).
      const perSecond = delivered / (Math.max(floodMs, FLOOD_SECONDS * 1000) / 1000);
      ctx.log(
        `flood: sent ${sent}, published ${published}, delivered ${delivered}, dropped (counted) ${dropped}, ` +
          `not counted anywhere (sent - published) ${sent - published}; ` +
          `CPU over ${(floodMs / 1000).toFixed(1)} s: daemon ${daemonCpuMs.toFixed(0)} ms, flooder ${flooderCpuMs.toFixed(0)} ms; ` +
          `ListAgents idle ${idle.toFixed(0)}/s, under load ${loaded.toFixed(0)}/s` +
          `${listInFlood ? "" : " (NOT all within the flood)"}; load ${loadavg()[0]!.toFixed(1)}`,
      );
      const inProcess = await pipelineInProcess(ctx);
      const figures: Figure[] = [
        inProcess,
        summarise(
          "denial to visible in events --follow",
          "ms",
          latencies,
          "lower",
          "p50 <= 100 ms, p99 <= 500 ms",
        ),
        summarise(
          "events through the daemon (UDP line -> hub -> audit log)",
          "events/s",
          [perSecond],
          "higher",
          ">= 50,000/s",
        ),
        summarise(
          "ListAgents under the event flood / idle",
          "%",
          [(loaded / idle) * 100],
          "higher",
          ">= 70%",
        ),
      ];
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
