// The DNS gate as the daemon runs it (the built process, dist/.../main.js, recording into the real
// eBPF manager) against Debian's dnsmasq, both forwarding to the same upstream and answering from
// a warm cache, under dnsperf with the same query file in the same run (alternating, so load
// changes on this shared machine hit both alike). Figures: answers/s of each, their ratio, and
// the memory the firewall adds while idle: the gate (with the daemon's node flags) and HAProxy (the
// egress proxy as the firewall starts it), each process's RSS and what is its own (USS). Needs
// root, cgroup2, bpffs (the manager), dnsperf, dnsmasq and haproxy (apt), and a build (npx tsc -b).
// DNS_BENCH_NODE_FLAGS="..." gives the gate node flags (A/B runs).
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { freePort, freePorts, waitFor } from "@clawker/test-support";
import { pino } from "pino";
import { ensureBpffs, Lab } from "../packages/ebpf-manager/test/fixture.js";
import { EgressProxy } from "../packages/controlplane/src/firewall/proxy/index.js";
import { ChildProcessHost } from "../packages/controlplane/test/fixtures/child-process-host.js";
import { startGateProcess } from "../packages/controlplane/test/fixtures/dns-gate-process.js";
import { TestUpstream, type ZoneEntry } from "../packages/controlplane/test/fixtures/dns-upstream.js";
import { REPO_ROOT } from "../test/harness/images.js";
import { bpffs, cgroup2, command, root, type Requirement } from "../test/harness/preconditions.js";
import { summarise, type Benchmark, type Figure } from "./lib.js";

const run = promisify(execFile);
const MAIN_JS = join(REPO_ROOT, "packages/controlplane/dist/firewall/dns/main.js");
const NAMES = 200;
const SECONDS = Number(process.env["DNS_BENCH_SECONDS"] ?? 5);
const DNSPERF_ARGS = ["-c", "4", "-q", "200", "-t", "2"];

interface Memory {
  /** Resident set: includes the node binary's file pages, shared with every node process of that binary. */
  readonly rss: number;
  /** Private anonymous memory: heap, stacks, malloc. */
  readonly anon: number;
  /** Proportional set size: shared pages divided among the processes mapping them. */
  readonly pss: number;
  /**
   * Unique set size (private clean + dirty pages): what would be freed if the process exited, so
   * what it adds to the machine. The node binary's pages the daemon (the same binary) also maps
   * are not in it; RSS counts them again in every node process.
   */
  readonly uss: number;
}

function memoryMiB(pid: number): Memory {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  const field = (text: string, name: string): number => {
    const kb = new RegExp(`${name}:\\s+(\\d+) kB`).exec(text)?.[1];
    if (kb === undefined) throw new Error(`no ${name} for ${pid}`);
    return Number(kb) / 1024;
  };
  return {
    rss: field(status, "VmRSS"),
    anon: field(status, "RssAnon"),
    pss: field(rollup, "Pss"),
    uss: field(rollup, "Private_Clean") + field(rollup, "Private_Dirty"),
  };
}

/** The firewall's budget for idle memory it adds (DNS gate + HAProxy): 60 MB. */
const BUDGET_MIB = 60e6 / 1048576;

/**
 * Node flags for the gate: none, as the daemon runs it, unless DNS_BENCH_NODE_FLAGS says otherwise
 * (A/B runs: a 1 MiB young generation saved 3 MiB idle but cost ~30% more CPU per answer).
 */
function gateNodeFlags(): string[] {
  return (process.env["DNS_BENCH_NODE_FLAGS"] ?? "").split(" ").filter((f) => f !== "");
}

/** HAProxy as the firewall starts it (default threads, 64 route listeners), idle: its two processes. */
async function idleProxyMemory(dir: string, runs: number): Promise<Memory[]> {
  const host = new ChildProcessHost();
  const ports = await freePorts(2);
  const proxy = new EgressProxy({
    config: {
      dir: join(dir, "proxy"),
      listen: {
        address: "127.0.0.1",
        tlsPort: ports[0]!,
        httpPort: ports[1]!,
        routePorts: { first: ports[1]! + 1, count: 64 },
      },
      clients: ["127.0.0.0/8"],
      resolvers: [{ address: "127.0.0.1", port: 9 }],
    },
    host,
    log: pino({ level: "silent" }),
  });
  try {
    await proxy.start(AbortSignal.timeout(30_000));
    const samples: Memory[] = [];
    for (let i = 0; i < runs; i++) {
      await new Promise((r) => setTimeout(r, 200));
      const { masterPid, workerPid } = await proxy.health();
      const [m, w] = [memoryMiB(masterPid), memoryMiB(workerPid)];
      samples.push({ rss: m.rss + w.rss, anon: m.anon + w.anon, pss: m.pss + w.pss, uss: m.uss + w.uss });
    }
    return samples;
  } finally {
    await proxy.close();
    await host.close();
  }
}

interface PerfResult {
  readonly qps: number;
  readonly completed: number;
  readonly lost: number;
  readonly noerrorPct: number;
}

/** One dnsperf pass against 127.0.0.1:port; throws when answers are lost or not NOERROR. */
async function dnsperf(port: number, file: string, seconds: number): Promise<PerfResult> {
  const { stdout } = await run(
    "dnsperf",
    ["-s", "127.0.0.1", "-p", String(port), "-d", file, "-l", String(seconds), ...DNSPERF_ARGS],
    { timeout: (seconds + 30) * 1000 },
  );
  const num = (re: RegExp): number => Number(re.exec(stdout)?.[1] ?? Number.NaN);
  const result = {
    qps: num(/Queries per second:\s+([\d.]+)/),
    completed: num(/Queries completed:\s+(\d+)/),
    lost: num(/Queries lost:\s+(\d+)/),
    noerrorPct: num(/NOERROR\s+\d+ \(([\d.]+)%\)/),
  };
  if (!Number.isFinite(result.qps) || result.noerrorPct < 99.9) {
    throw new Error(`dnsperf against port ${port}: ${stdout}`);
  }
  return result;
}

function startDnsmasq(port: number, upstream: TestUpstream): ChildProcess {
  return spawn(
    "dnsmasq",
    [
      "--keep-in-foreground",
      "--conf-file=/dev/null",
      "--no-resolv",
      "--no-hosts",
      "--no-poll",
      "--bind-interfaces",
      "--listen-address=127.0.0.1",
      `--port=${port}`,
      `--server=127.0.0.1#${upstream.port}`,
      "--cache-size=10000",
      "--pid-file=",
      "--user=root",
    ],
    { stdio: ["ignore", "ignore", "inherit"] },
  );
}

const requirements: Requirement[] = [
  root,
  cgroup2,
  bpffs,
  command("dnsperf"),
  command("dnsmasq"),
  command("ip"),
  command("haproxy"),
];

const bench: Benchmark = {
  name: "dns-gate",
  skip() {
    ensureBpffs();
    const missing = requirements.map((r) => r.check()).filter((m) => m !== undefined);
    if (!existsSync(MAIN_JS)) missing.push(`needs a build (npx tsc -b): ${MAIN_JS}`);
    return missing.length === 0 ? undefined : missing.join("; ");
  },
  async run(ctx) {
    const figures: Figure[] = [];
    const dir = mkdtempSync(join(tmpdir(), "dns-gate-bench-"));
    const lab = new Lab();
    const names = Array.from({ length: NAMES }, (_, i) => `n${i + 1}.bench.test`);
    const zone: Record<string, ZoneEntry> = Object.fromEntries(
      names.map((n, i) => [n, { addresses: [`10.88.${Math.floor(i / 250)}.${(i % 250) + 1}`], ttl: 3_600 }]),
    );
    const queryFile = join(dir, "queries.txt");
    writeFileSync(queryFile, names.map((n) => `${n} A\n`).join(""));
    let upstream: TestUpstream | undefined;
    let dnsmasq: ChildProcess | undefined;
    let gate: ReturnType<typeof startGateProcess> | undefined;
    try {
      await lab.setUp({ enroll: false });
      upstream = await TestUpstream.start(zone);
      const gatePort = await freePort({ protocols: ["udp", "tcp"] });
      const flags = gateNodeFlags();
      ctx.log(`gate node flags: ${flags.join(" ") || "(none)"}`);
      gate = startGateProcess({
        entry: { file: process.execPath, args: [...flags, MAIN_JS] },
        countDecisionsOnly: true,
        config: {
          listen: { address: "127.0.0.1", port: gatePort },
          ebpfSocket: lab.socketPath,
          logLevel: "warn",
        },
      });
      await gate.ready();
      const ack = await gate.request({
        op: "policy",
        policy: {
          rules: [
            { scope: { kind: "global", name: "" }, pattern: "*.bench.test", action: "allow", identity: 9 },
          ],
          clients: [{ address: "127.0.0.1", project: "bench", agent: "dnsperf" }],
          upstreams: [{ address: upstream.address, port: upstream.port }],
          // dnsperf is one client: the per-client limit would otherwise be what is measured.
          rateLimit: { queriesPerSecond: 1_000_000, burst: 1_000_000 },
        },
      });
      if (!ack.ok) throw new Error(`policy refused: ${JSON.stringify(ack)}`);
      const gatePid = gate.child.pid!;

      // Idle: started, policy applied, nothing asked yet.
      const idle: Memory[] = [];
      for (let i = 0; i < ctx.runs; i++) {
        await new Promise((r) => setTimeout(r, 200));
        idle.push(memoryMiB(gatePid));
      }
      const proxyIdle = await idleProxyMemory(dir, ctx.runs);
      const budget = `firewall <= 60 MB (${BUDGET_MIB.toFixed(1)} MiB)`;
      figures.push(
        summarise(
          "gate idle RSS (own process)",
          "MiB",
          idle.map((m) => m.rss),
          "lower",
        ),
      );
      figures.push(
        summarise(
          "gate idle private memory (RssAnon)",
          "MiB",
          idle.map((m) => m.anon),
          "lower",
        ),
      );
      figures.push(
        summarise(
          "gate idle PSS",
          "MiB",
          idle.map((m) => m.pss),
          "lower",
        ),
      );
      figures.push(
        summarise(
          "gate idle USS (what it adds)",
          "MiB",
          idle.map((m) => m.uss),
          "lower",
        ),
      );
      figures.push(
        summarise(
          "HAProxy idle RSS (master + worker)",
          "MiB",
          proxyIdle.map((m) => m.rss),
          "lower",
        ),
      );
      figures.push(
        summarise(
          "HAProxy idle USS (master + worker)",
          "MiB",
          proxyIdle.map((m) => m.uss),
          "lower",
        ),
      );
      figures.push(
        summarise(
          "firewall idle memory added: gate + HAProxy USS",
          "MiB",
          idle.map((m, i) => m.uss + proxyIdle[i]!.uss),
          "lower",
          budget,
        ),
      );
      figures.push(
        summarise(
          "gate + HAProxy idle RSS (counts the shared node binary again)",
          "MiB",
          idle.map((m, i) => m.rss + proxyIdle[i]!.rss),
          "lower",
        ),
      );

      const dnsmasqPort = await freePort({ protocols: ["udp", "tcp"] });
      dnsmasq = startDnsmasq(dnsmasqPort, upstream);
      await waitFor(
        async () => (await dnsperf(dnsmasqPort, queryFile, 1).catch(() => undefined)) !== undefined,
        {
          timeoutMs: 30_000,
          what: "dnsmasq answering",
        },
      );

      // Warm both caches (and the eBPF map) with the whole query file.
      for (let i = 0; i < ctx.warmup; i++) {
        await dnsperf(gatePort, queryFile, 2);
        await dnsperf(dnsmasqPort, queryFile, 2);
      }
      const gateQps: number[] = [];
      const dnsmasqQps: number[] = [];
      const ratio: number[] = [];
      for (let i = 0; i < ctx.runs; i++) {
        const a = await dnsperf(gatePort, queryFile, SECONDS);
        const b = await dnsperf(dnsmasqPort, queryFile, SECONDS);
        ctx.log(
          `run ${i + 1}: gate ${a.qps.toFixed(0)}/s (lost ${a.lost}), dnsmasq ${b.qps.toFixed(0)}/s (lost ${b.lost})`,
        );
        gateQps.push(a.qps);
        dnsmasqQps.push(b.qps);
        ratio.push(a.qps / b.qps);
      }
      figures.push(
        summarise("gate answers/s, cached allowed names (dnsperf)", "1/s", gateQps, "higher", ">= 20000"),
      );
      figures.push(summarise("dnsmasq answers/s, same query file, same run", "1/s", dnsmasqQps, "higher"));
      figures.push(summarise("gate / dnsmasq answers/s", "ratio", ratio, "higher", ">= 0.5"));
      const after = memoryMiB(gatePid);
      figures.push(summarise("gate RSS after the load (own process)", "MiB", [after.rss], "lower"));
      figures.push(summarise("gate private memory after the load (RssAnon)", "MiB", [after.anon], "lower"));
      if (dnsmasq.pid !== undefined) {
        figures.push(summarise("dnsmasq RSS after the load", "MiB", [memoryMiB(dnsmasq.pid).rss], "lower"));
      }
      const stats = await gate.request({ op: "stats" });
      ctx.log(`gate stats: ${JSON.stringify(stats.result)}; decisions received: ${gate.decisionCount()}`);
      return figures;
    } finally {
      if (dnsmasq !== undefined) {
        const gone = new Promise((r) => dnsmasq!.once("exit", r));
        dnsmasq.kill("SIGTERM");
        await gone;
      }
      if (gate !== undefined) {
        gate.child.kill("SIGTERM");
        await gate.exited;
        await gate.dispose();
      }
      await upstream?.close();
      await lab.tearDown();
      rmSync(dir, { recursive: true, force: true });
    }
  },
};

export default bench;
