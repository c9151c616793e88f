// The egress proxy (the real HAProxy the daemon runs, through EgressProxy with its default threads)
// against a direct connection to the same upstream, keep-alive, loopback, real TLS:
// - passthrough (SNI, no path rules): requests/s of small responses, and bytes/s of a 100 MiB body;
// - interception (a name with path rules): requests/s of small responses;
// - the latency one small HTTPS request gains through the proxy (sequential, keep-alive, p50).
// Paired rounds: direct, proxied, direct, proxied, ... in one run; each ratio figure is the median
// of the pairs' ratios (proxied / the direct pass just before it). This machine's speed drifts
// between minutes (in one quiet run every process on the path, client, upstream and proxy, took
// 20-40% more CPU per request for two rounds, then less: direct 35k then 48k requests/s), and a pair
// sees the same speed on both sides, so the drift cancels in its ratio.
// Load: h2load (nghttp2-client, HTTP/1.1, `--connect-to` keeps the name as SNI and Host), its CPU
// time reported so a saturated client shows. Small responses come from a second HAProxy (one
// thread, `http-request return`): a cheap upstream, so the proxy's cost is not hidden behind a slow
// one; the 100 MiB body from a node HTTPS server (this process). Every request passes the proxy's
// full checks (source map, SNI/Host lookups, path rules, forbidden list, session mark, log lines).
// Needs root (CAP_NET_ADMIN: session marks), haproxy, h2load and ss.
// FWP_BENCH_SECONDS (default 3) per pass after a 1 s warm-up; FWP_BENCH_PAIRS (default 2) pairs of
// each kind per run; FWP_BENCH_CLIENTS (default 64) concurrent keep-alive connections with one
// request outstanding each (`-c 64 -m 1`, HTTP/1.1 has no multiplexing: 64 agents' connections).
// Where the processes run (the layout), both measured in every run on 2+ cores:
// - "shared" (the headline figures): client, upstream and proxy may all run on every core the bench
//   has, in the direct and the proxied pass alike. Both passes get the same machine; the proxied
//   one has to fit the proxy's work into it. That is the issue's comparison ("through the proxy vs
//   direct, same run, keep-alive, loopback"): with three processes on two cores, any fixed
//   assignment decides by itself whose CPU the proxy takes;
// - "split" (the layout of earlier sessions, FWP_BENCH_PIN=0 skips it): h2load on the first core,
//   the upstreams and the proxy on the second. The direct pass gets a core for the upstream alone
//   and the proxy takes its CPU from the upstream's core only, so the ratio is about
//   upstream / (upstream + proxy) CPU per request, whatever the client costs.
// SESSIONS: h2load and the small-response upstream each run in a session of their own (setsid), as
// the proxy does (its host spawns it detached, as the daemon's SubprocessManager does). With the
// kernel's autogroup scheduling (sched_autogroup_enabled, tasks outside any cpu cgroup) a session
// is one scheduling entity: before, client and upstream shared the bench's, so the direct pass ran
// as one entity and the proxied pass as that one plus the proxy's, and the same HAProxy config
// reached 0.84 of direct requests/s in the client's session against 0.64 in a session of its own
// (bench/experiments/passgap, paired, same CPU and syscalls per request). In production every part
// is its own entity (agent containers, the daemon's helper, a remote upstream). The 100 MiB
// upstream is this process (its session).
// Beside the ratios: CPU per request (per MiB for the body) of each part of the path (client,
// upstream, proxy), which depends far less than requests/s on what else the machine runs, and the
// whole path's CPU per unit inverted (direct / proxied), the ratio a CPU-bound machine would reach.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttpsServer, type Server } from "node:https";
import type { Socket } from "node:net";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import { createCa, issueLeaf } from "@clawker/adminclient";
import { freePorts, waitFor } from "@clawker/test-support";
import { pino } from "pino";
import { EgressProxy, type ProxyEntry } from "../packages/controlplane/src/firewall/proxy/index.js";
import { RuntimeApi } from "../packages/controlplane/src/firewall/proxy/runtime-api.js";
import { ChildProcessHost } from "../packages/controlplane/test/fixtures/child-process-host.js";
import { startDnsServer, type TestDnsServer } from "../packages/controlplane/test/fixtures/dns-server.js";
import { command, root, type Requirement } from "../test/harness/preconditions.js";
import { summarise, type Benchmark, type Figure } from "./lib.js";

const run = promisify(execFile);
const SECONDS = Number(process.env["FWP_BENCH_SECONDS"] ?? 3);
const PAIRS = Number(process.env["FWP_BENCH_PAIRS"] ?? 2);
const CLIENTS = Number(process.env["FWP_BENCH_CLIENTS"] ?? 64);
const BIG_MIB = 100;
const BIG_REQUESTS = 3;
const LATENCY_REQUESTS = 2_000;
/** Where the path's processes run (see the header). */
type Layout = "shared" | "split";
/** The layouts measured: "split" needs two cores. */
const LAYOUTS: readonly Layout[] =
  process.env["FWP_BENCH_PIN"] !== "0" && availableParallelism() >= 2 ? ["shared", "split"] : ["shared"];
/** The split layout's cores: the client's, and the servers' (upstreams and proxy). */
const SPLIT = { client: "0", servers: "1" } as const;

/** The proxy's listen address; the client connects from 127.0.0.1 (the "agent"). */
const PROXY = "127.0.0.4";
/** The small-response upstream (a second HAProxy) and the big-body upstream (node). */
const UPSTREAM_SMALL = "127.0.0.2";
const UPSTREAM_BIG = "127.0.0.5";
const AGENT = "127.0.0.1";
const SMALL = "small.bench.test";
const MITM = "mitm.bench.test";
const BIG = "big.bench.test";

interface Pass {
  readonly requestsPerSecond: number;
  readonly bytesPerSecond: number;
  readonly succeeded: number;
  readonly failed: number;
  /** h2load's own CPU seconds (user + system) per wall second: near 1 means the client is saturated. */
  readonly clientCpu: number;
  /** The proxy's worker CPU seconds per wall second (0 for a direct pass). */
  readonly proxyCpu: number;
  /** CPU seconds per request of h2load, the proxy's worker (0 direct) and the upstream. */
  readonly perRequest: { readonly client: number; readonly proxy: number; readonly upstream: number };
  /**
   * CPU seconds per request of everything on the path: h2load, the proxy (if any) and the upstream
   * (its pid, or this process when none is given). Where client, proxy and upstream share the same
   * cores, requests/s is bound by this sum, whatever else the machine runs.
   */
  readonly cpuPerRequest: number;
}

/** CPU seconds (user + system) a process has used so far. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  // Fields 14 and 15 of stat (utime, stime), counted after the command's ")".
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** This process's CPU seconds so far: the 100 MiB upstream is this process's HTTPS server. */
function ownCpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

/**
 * CPU µs this process takes for a fixed amount of arithmetic: the machine's speed at this moment,
 * whatever share of a core the bench gets (CPU time, not wall time). Logged with every pair, so a
 * slow phase of the machine shows beside the pair it slowed.
 */
function speedProbeUs(): number {
  const t0 = process.cpuUsage();
  let x = 0;
  for (let i = 0; i < 2_000_000; i++) x = (x * 31 + i) % 1_000_003;
  const t1 = process.cpuUsage(t0);
  if (x < 0) throw new Error("unreachable");
  return t1.user + t1.system;
}

/** The pid of a process's first child (h2load under the bash that reports its `times`). */
function firstChild(pid: number): number {
  const children = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(" ");
  const child = Number(children[0]);
  if (!Number.isInteger(child) || child <= 0) throw new Error(`no child of ${pid}`);
  return child;
}

/**
 * When a timed pass's CPU is read, in ms after h2load starts: after its connections' handshakes
 * and the 1 s warm-up, and before its measured seconds end. h2load counts requests from the end
 * of the warm-up only, so CPU over the whole run divided by those requests charged the warm-up's
 * and the handshakes' CPU to them (every part's CPU per request ~1.3x too high at 3 s).
 */
const WINDOW = { fromMs: 1_300, toMs: 1_000 + SECONDS * 1000 - 300 } as const;

/**
 * One h2load pass: HTTP/1.1 over TLS to `https://<name>:<port><path>`, connecting to `to` (the
 * upstream or the proxy). A timed pass (`-D`) reads every part's CPU in WINDOW, inside its
 * measured seconds; any other pass over the whole run, the client's from bash's `times`.
 */
async function h2load(
  name: string,
  port: number,
  path: string,
  to: string,
  args: readonly string[],
  layout: Layout,
  proxyPid: number | undefined,
  upstreamPid?: number,
): Promise<Pass & { readonly stdout: string }> {
  const proxyBefore = proxyPid === undefined ? 0 : cpuSeconds(proxyPid);
  const upstreamBefore = upstreamPid === undefined ? ownCpuSeconds() : cpuSeconds(upstreamPid);
  const t0 = performance.now();
  const pass = run(
    "bash",
    [
      "-c",
      '"$@"; rc=$?; times; exit $rc',
      "h2load",
      // A session of its own, like the upstream and the proxy (see SESSIONS in the header):
      // setsid(1) execs in place (this child leads no process group), so bash's child is h2load.
      "setsid",
      ...(layout === "split" ? ["taskset", "-c", SPLIT.client] : []),
      "h2load",
      "--h1",
      `--connect-to=${to}:${port}`,
      ...args,
      `https://${name}:${port}${path}`,
    ],
    { timeout: (SECONDS + 60) * 1000, maxBuffer: 16 << 20 },
  );
  // Awaited below; a failure while the window is read must not go unhandled meanwhile.
  pass.catch(() => undefined);
  /** CPU seconds of client, proxy and upstream over WINDOW; undefined if h2load ended early. */
  const cpuWindow = async (): Promise<
    { seconds: number; client: number; proxy: number; upstream: number } | undefined
  > => {
    const read = (client: number): { at: number; client: number; proxy: number; upstream: number } => ({
      at: performance.now(),
      client: cpuSeconds(client),
      proxy: proxyPid === undefined ? 0 : cpuSeconds(proxyPid),
      upstream: cpuSeconds(upstreamPid!),
    });
    try {
      await sleep(WINDOW.fromMs - (performance.now() - t0));
      const client = firstChild(pass.child.pid!);
      const a = read(client);
      await sleep(WINDOW.toMs - (performance.now() - t0));
      const b = read(client);
      return {
        seconds: (b.at - a.at) / 1000,
        client: b.client - a.client,
        proxy: b.proxy - a.proxy,
        upstream: b.upstream - a.upstream,
      };
    } catch {
      return undefined;
    }
  };
  const window = args.includes("-D") && upstreamPid !== undefined ? await cpuWindow() : undefined;
  const { stdout } = await pass;
  const wall = (performance.now() - t0) / 1000;
  const proxySeconds = proxyPid === undefined ? 0 : cpuSeconds(proxyPid) - proxyBefore;
  const upstreamSeconds =
    (upstreamPid === undefined ? ownCpuSeconds() : cpuSeconds(upstreamPid)) - upstreamBefore;
  const finished = /finished in ([\d.]+)(m?s), ([\d.]+) req\/s, ([\d.]+)([KMG]?)B\/s/.exec(stdout);
  const requests = /requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed/.exec(stdout);
  const status = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(stdout);
  // `times`: the shell's user/system, then its children's (h2load): "0m1.234s 0m0.567s".
  const times = [...stdout.matchAll(/(\d+)m([\d.]+)s (\d+)m([\d.]+)s/g)].at(-1);
  if (finished === null || requests === null || status === null || times === undefined) {
    throw new Error(`h2load output not understood: ${stdout}`);
  }
  const unit = { "": 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[finished[5]!]!;
  const clientSeconds = Number(times[1]) * 60 + Number(times[2]) + Number(times[3]) * 60 + Number(times[4]);
  const failed = Number(requests[2]) + Number(status[2]) + Number(status[3]) + Number(status[4]);
  if (failed > 0 || Number(requests[1]) === 0) throw new Error(`h2load: requests failed: ${stdout}`);
  const rate = Number(finished[3]);
  // The window's requests at the pass's rate, or the whole run's CPU over the requests counted.
  const cpu = window ?? {
    seconds: wall,
    client: clientSeconds,
    proxy: proxySeconds,
    upstream: upstreamSeconds,
  };
  const done = window === undefined ? Number(requests[1]) : rate * window.seconds;
  return {
    requestsPerSecond: rate,
    bytesPerSecond: Number(finished[4]) * unit,
    succeeded: Number(requests[1]),
    failed,
    clientCpu: cpu.client / cpu.seconds,
    proxyCpu: cpu.proxy / cpu.seconds,
    perRequest: {
      client: cpu.client / done,
      proxy: cpu.proxy / done,
      upstream: cpu.upstream / done,
    },
    cpuPerRequest: (cpu.client + cpu.proxy + cpu.upstream) / done,
    stdout,
  };
}

/** Median of per-request latencies (µs) from an h2load --log-file. */
function medianLatencyMs(logFile: string): number {
  const us = readFileSync(logFile, "utf8")
    .trim()
    .split("\n")
    .map((l) => Number(l.split("\t")[2]))
    .filter((n) => Number.isFinite(n))
    .sort((a, b) => a - b);
  if (us.length === 0) throw new Error(`no latencies in ${logFile}`);
  return us[Math.floor(us.length / 2)]! / 1000;
}

/** New vs reused upstream connections of be_mitm_verify so far (HAProxy's `show stat`). */
async function upstreamConnections(proxy: EgressProxy): Promise<string> {
  const csv = await new RuntimeApi({ socketPath: proxy.layout.runtimeSocket }).command(["show", "stat"]);
  const [header, ...rows] = csv.replace(/^# /, "").trim().split("\n");
  const cols = header!.split(",");
  const row = rows.map((r) => r.split(",")).find((r) => r[0] === "be_mitm_verify" && r[1] === "BACKEND");
  if (row === undefined) return "no be_mitm_verify in show stat";
  const at = (c: string): string => row[cols.indexOf(c)] ?? "?";
  return `${at("connect")} connects, ${at("reuse")} reuses, ${at("stot")} sessions`;
}

/** The small-response upstream: HAProxy, one thread, TLS, a fixed 200 from memory. */
function upstreamConfig(port: number, pem: string): string {
  return [
    "global",
    "  nbthread 1",
    "  maxconn 4096",
    "defaults",
    "  mode http",
    "  timeout connect 5s",
    "  timeout client 60s",
    "  timeout server 60s",
    "  timeout http-keep-alive 60s",
    "frontend up",
    `  bind ${UPSTREAM_SMALL}:${port} ssl crt ${pem} alpn http/1.1`,
    '  http-request return status 200 content-type text/plain string "ok\\n"',
    "",
  ].join("\n");
}

const requirements: Requirement[] = [root, command("haproxy"), command("h2load"), command("ss")];

const bench: Benchmark = {
  name: "firewall-proxy",
  skip() {
    const missing = requirements.map((r) => r.check()).filter((m) => m !== undefined);
    return missing.length === 0 ? undefined : missing.join("; ");
  },
  async run(ctx) {
    const figures: Figure[] = [];
    const dir = mkdtempSync(join(tmpdir(), "firewall-proxy-bench-"));
    const cleanup: (() => unknown)[] = [() => rmSync(dir, { recursive: true, force: true })];
    const host = new ChildProcessHost();
    try {
      const [tlsPort, httpPort] = await freePorts(2, {
        hosts: [PROXY, UPSTREAM_SMALL, UPSTREAM_BIG],
        consecutive: true,
      });
      const dns: TestDnsServer = await startDnsServer({
        [SMALL]: UPSTREAM_SMALL,
        [MITM]: UPSTREAM_SMALL,
        [BIG]: UPSTREAM_BIG,
      });
      cleanup.push(() => dns.close());

      // Upstreams: one leaf for the three names from a test CA the proxy trusts.
      const upstreamCa = await createCa({ commonName: "firewall-proxy bench upstream CA" });
      const leaf = await issueLeaf(upstreamCa, {
        commonName: SMALL,
        dnsNames: [SMALL, MITM, BIG],
        usage: "server",
      });
      const caFile = join(dir, "upstream-ca.pem");
      writeFileSync(caFile, upstreamCa.certPem, { mode: 0o600 });
      const pem = join(dir, "upstream.pem");
      writeFileSync(pem, leaf.certPem + leaf.keyPem, { mode: 0o600 });
      const upstreamCfg = join(dir, "upstream.cfg");
      writeFileSync(upstreamCfg, upstreamConfig(tlsPort!, pem));
      const upstream: ChildProcess = spawn("haproxy", ["-db", "-f", upstreamCfg], {
        stdio: ["ignore", "ignore", "inherit"],
        // A session of its own, like h2load and the proxy (see SESSIONS in the header).
        detached: true,
      });
      cleanup.push(async () => {
        const gone = new Promise((r) => upstream.once("exit", r));
        upstream.kill("SIGTERM");
        await gone;
      });

      const body = Buffer.alloc(1 << 20, 0x61);
      const sockets = new Set<Socket>();
      const big: Server = createHttpsServer({ cert: leaf.certPem, key: leaf.keyPem }, (_req, res) => {
        res.writeHead(200, { "content-type": "application/octet-stream", "content-length": BIG_MIB << 20 });
        let left = BIG_MIB;
        const pump = (): void => {
          while (left > 0) {
            left--;
            if (!res.write(body)) return void res.once("drain", pump);
          }
          res.end();
        };
        pump();
      });
      big.keepAliveTimeout = 60_000;
      big.on("connection", (s: Socket) => {
        sockets.add(s);
        s.on("close", () => sockets.delete(s));
      });
      await new Promise<void>((resolve, reject) => {
        big.once("error", reject);
        big.listen(tlsPort, UPSTREAM_BIG, () => resolve());
      });
      cleanup.push(async () => {
        for (const s of sockets) s.destroy();
        await new Promise((r) => big.close(r));
      });

      // The proxy as the daemon runs it: default threads, the full rule set of checks.
      cleanup.push(() => host.close());
      let decisions = 0;
      const proxy = new EgressProxy({
        config: {
          dir: join(dir, "proxy"),
          listen: { address: PROXY, tlsPort: tlsPort!, httpPort: httpPort! },
          clients: ["127.0.0.0/8"],
          resolvers: [{ address: dns.address, port: dns.port }],
          upstreamCaFile: caFile,
        },
        host,
        log: pino({ level: "silent" }),
        onDecision: () => void decisions++,
      });
      cleanup.push(() => proxy.close());
      // start()'s signal is the proxy's lifetime (aborting it closes the proxy), not a start deadline.
      const lifetime = new AbortController();
      cleanup.push(() => lifetime.abort());
      await proxy.start(lifetime.signal);
      const firewallCa = await createCa({ commonName: "firewall-proxy bench firewall CA" });
      const mitmLeaf = await issueLeaf(firewallCa, { commonName: MITM, dnsNames: [MITM], usage: "server" });
      await proxy.installCertificate(MITM, mitmLeaf.certPem, mitmLeaf.keyPem);
      const entry = (dst: string, extra: Partial<ProxyEntry> = {}): ProxyEntry => ({
        ruleId: `bench-${dst}`,
        scope: { kind: "global" },
        kind: "tls-passthrough",
        action: "allow",
        dst,
        port: tlsPort!,
        ...extra,
      });
      await proxy.apply({
        entries: [
          entry(SMALL),
          entry(BIG),
          entry(MITM, {
            kind: "tls-intercept",
            pathRules: [
              { path: "/admin", action: "deny" },
              { path: "/", action: "allow", methods: ["GET", "HEAD"] },
            ],
            pathDefault: "deny",
          }),
        ],
        sources: [{ address: AGENT, agent: "bench", project: "bench" }],
        forbidden: [`${PROXY}/32`],
      });
      const { workerPid, masterPid } = await proxy.health();
      // Both HAProxies (every thread) and this process (the 100 MiB upstream) are the servers; h2load
      // is started on the client's core by taskset itself in the split layout.
      const servers = [upstream.pid!, masterPid, workerPid, process.pid];
      // This process runs the benchmarks after this one too: it gets back every core it had.
      const cores = (await run("taskset", ["-c", "-p", String(process.pid)])).stdout.split(": ")[1]!.trim();
      cleanup.push(() => place("shared"));
      let placed: Layout = "shared";
      const place = async (layout: Layout): Promise<void> => {
        if (layout === placed) return;
        for (const pid of servers) {
          await run("taskset", ["-a", "-p", "-c", layout === "split" ? SPLIT.servers : cores, String(pid)]);
        }
        placed = layout;
      };
      ctx.log(
        `layouts: shared (every process on cores ${cores})` +
          (LAYOUTS.includes("split")
            ? `, split (h2load on core ${SPLIT.client}; upstreams and proxy on core ${SPLIT.servers})`
            : ""),
      );
      await waitFor(
        async () =>
          (await h2load(SMALL, tlsPort!, "/", UPSTREAM_SMALL, ["-n", "1"], "shared", undefined).catch(
            () => undefined,
          )) !== undefined,
        { timeoutMs: 30_000, what: "the upstream answering" },
      );

      const load = [
        "-c",
        String(CLIENTS),
        "-t",
        "1",
        "-m",
        "1",
        "-D",
        String(SECONDS),
        "--warm-up-time",
        "1",
      ];
      const bigArgs = ["-c", "1", "-t", "1", "-n", String(BIG_REQUESTS)];
      const latencyArgs = (file: string): string[] => [
        "-c",
        "1",
        "-t",
        "1",
        "-n",
        String(LATENCY_REQUESTS),
        `--log-file=${file}`,
      ];

      /** The samples of one kind of pair in one layout. */
      interface Pairs {
        readonly direct: Pass[];
        readonly proxied: Pass[];
      }
      const pairs = new Map<string, Pairs>();
      const samples = (kind: string, layout: Layout): Pairs => {
        const key = `${kind} ${layout}`;
        let p = pairs.get(key);
        if (p === undefined) pairs.set(key, (p = { direct: [], proxied: [] }));
        return p;
      };
      const us = (x: number): string => (x * 1e6).toFixed(0);
      /** PAIRS rounds of direct then proxied, each pair logged as it ends. */
      const rounds = async (
        kind: string,
        layout: Layout,
        name: string,
        args: readonly string[],
        to: string,
        upstreamPid: number | undefined,
        keep: boolean,
      ): Promise<void> => {
        await place(layout);
        for (let i = 0; i < PAIRS; i++) {
          const probe = speedProbeUs();
          const d = await h2load(name, tlsPort!, "/", to, args, layout, undefined, upstreamPid);
          const p = await h2load(name, tlsPort!, "/", PROXY, args, layout, workerPid, upstreamPid);
          ctx.log(
            `${kind} ${layout}: ${(p.requestsPerSecond / d.requestsPerSecond).toFixed(3)} of direct ` +
              `(${d.requestsPerSecond.toFixed(0)} vs ${p.requestsPerSecond.toFixed(0)} req/s, ` +
              `${(d.bytesPerSecond / 2 ** 20).toFixed(0)} vs ${(p.bytesPerSecond / 2 ** 20).toFixed(0)} MiB/s); ` +
              `CPU/request µs client ${us(d.perRequest.client)}/${us(p.perRequest.client)}, ` +
              `upstream ${us(d.perRequest.upstream)}/${us(p.perRequest.upstream)}, proxy ${us(p.perRequest.proxy)}; ` +
              `client cpu ${d.clientCpu.toFixed(2)}/${p.clientCpu.toFixed(2)}, proxy cpu ${p.proxyCpu.toFixed(2)}; ` +
              `speed probe ${probe} µs CPU; load ${loadavg()[0]!.toFixed(1)}`,
          );
          if (!keep) continue;
          samples(kind, layout).direct.push(d);
          samples(kind, layout).proxied.push(p);
        }
      };

      const added: number[] = [];
      for (let i = 0; i < ctx.warmup + ctx.runs; i++) {
        const keep = i >= ctx.warmup;
        for (const layout of LAYOUTS) {
          await rounds("passthrough", layout, SMALL, load, UPSTREAM_SMALL, upstream.pid, keep);
          await rounds("interception", layout, MITM, load, UPSTREAM_SMALL, upstream.pid, keep);
          await rounds("body", layout, BIG, bigArgs, UPSTREAM_BIG, undefined, keep);
        }
        ctx.log(`upstream connections of the interception backend: ${await upstreamConnections(proxy)}`);
        await place("shared");
        const directLog = join(dir, "direct.log");
        const proxiedLog = join(dir, "proxied.log");
        await h2load(SMALL, tlsPort!, "/", UPSTREAM_SMALL, latencyArgs(directLog), "shared", undefined);
        await h2load(SMALL, tlsPort!, "/", PROXY, latencyArgs(proxiedLog), "shared", workerPid);
        const latency = [medianLatencyMs(directLog), medianLatencyMs(proxiedLog)] as const;
        ctx.log(`latency p50: direct ${latency[0].toFixed(3)} ms, proxied ${latency[1].toFixed(3)} ms`);
        if (keep) added.push(latency[1] - latency[0]);
      }
      ctx.log(`decision lines received: ${decisions}`);

      const MiB = 2 ** 20;
      const per = (p: Pairs, f: (x: Pass) => number): { d: number[]; p: number[] } => ({
        d: p.direct.map(f),
        p: p.proxied.map(f),
      });
      /** proxied / direct of each pair. */
      const ratios = (p: Pairs, f: (x: Pass) => number): number[] =>
        p.proxied.map((x, i) => f(x) / f(p.direct[i]!));
      for (const layout of LAYOUTS) {
        const tag = layout === "shared" ? "" : `, ${layout} layout`;
        // The headline figures keep the names of earlier sessions; the split ones are marked.
        const pass = samples("passthrough", layout);
        const mitm = samples("interception", layout);
        const body = samples("body", layout);
        const rps = (x: Pass): number => x.requestsPerSecond;
        const mibs = (x: Pass): number => x.bytesPerSecond / MiB;
        const target = (t: string): string | undefined => (layout === "shared" ? t : undefined);
        const fig = (name: string, unit: string, v: number[], better: Figure["better"], t?: string): void =>
          void figures.push(
            summarise(`${name}${tag}`, unit, v, better, t === undefined ? undefined : target(t)),
          );
        fig("direct requests/s (small, keep-alive)", "1/s", per(pass, rps).d, "higher");
        fig("passthrough requests/s (small)", "1/s", per(pass, rps).p, "higher");
        fig(
          "passthrough / direct requests/s (median of pairs)",
          "ratio",
          ratios(pass, rps),
          "higher",
          ">= 0.6",
        );
        fig("interception requests/s (small, path rules)", "1/s", per(mitm, rps).p, "higher");
        fig(
          "interception / direct requests/s (median of pairs)",
          "ratio",
          ratios(mitm, rps),
          "higher",
          ">= 0.3",
        );
        fig(`direct MiB/s (${BIG_MIB} MiB body)`, "MiB/s", per(body, mibs).d, "higher");
        fig(`passthrough MiB/s (${BIG_MIB} MiB body)`, "MiB/s", per(body, mibs).p, "higher");
        fig(
          "passthrough / direct bytes/s (median of pairs)",
          "ratio",
          ratios(body, mibs),
          "higher",
          ">= 0.8",
        );
        // Direct's whole-path CPU per unit over the proxied one's: the ratio a CPU-bound machine reaches.
        const inverted = (p: Pairs): number[] =>
          p.direct.map((x, i) => x.cpuPerRequest / p.proxied[i]!.cpuPerRequest);
        fig(
          "passthrough / direct, CPU per request of the whole path inverted",
          "ratio",
          inverted(pass),
          "higher",
        );
        fig(
          "interception / direct, CPU per request of the whole path inverted",
          "ratio",
          inverted(mitm),
          "higher",
        );
        fig(
          "passthrough / direct bytes, CPU per byte of the whole path inverted",
          "ratio",
          inverted(body),
          "higher",
        );
        if (layout !== "shared") continue;
        const micro = (f: (x: Pass) => number) => (x: Pass) => f(x) * 1e6;
        const part = (what: string, v: number[]): void =>
          void figures.push(summarise(`CPU per request (small): ${what}`, "µs", v, "lower"));
        const client = micro((x) => x.perRequest.client);
        const upstreamCpu = micro((x) => x.perRequest.upstream);
        const proxyCpu = micro((x) => x.perRequest.proxy);
        part("h2load, direct", [...per(pass, client).d, ...per(mitm, client).d]);
        part("h2load, passthrough", per(pass, client).p);
        part("h2load, interception", per(mitm, client).p);
        part("upstream, direct", [...per(pass, upstreamCpu).d, ...per(mitm, upstreamCpu).d]);
        part("upstream, passthrough", per(pass, upstreamCpu).p);
        part("upstream, interception", per(mitm, upstreamCpu).p);
        part("proxy, passthrough", per(pass, proxyCpu).p);
        part("proxy, interception", per(mitm, proxyCpu).p);
        // CPU ms per MiB of the body: requests are BIG_MIB MiB each.
        const perMiB = (f: (x: Pass) => number) => (x: Pass) => (f(x) * 1e3) / BIG_MIB;
        const bodyPart = (what: string, v: number[]): void =>
          void figures.push(summarise(`CPU per MiB (${BIG_MIB} MiB body): ${what}`, "ms", v, "lower"));
        bodyPart(
          "h2load, direct",
          per(
            body,
            perMiB((x) => x.perRequest.client),
          ).d,
        );
        bodyPart(
          "h2load, passthrough",
          per(
            body,
            perMiB((x) => x.perRequest.client),
          ).p,
        );
        bodyPart(
          "upstream (node), direct",
          per(
            body,
            perMiB((x) => x.perRequest.upstream),
          ).d,
        );
        bodyPart(
          "upstream (node), passthrough",
          per(
            body,
            perMiB((x) => x.perRequest.upstream),
          ).p,
        );
        bodyPart(
          "proxy, passthrough",
          per(
            body,
            perMiB((x) => x.perRequest.proxy),
          ).p,
        );
      }
      figures.push(summarise("added latency, one small HTTPS request (p50)", "ms", added, "lower", "<= 0.5"));
      const clientCpu = [...pairs.values()].flatMap((p) =>
        [...p.direct, ...p.proxied].map((x) => x.clientCpu),
      );
      figures.push(summarise("h2load CPU per wall second (1 = saturated)", "cores", clientCpu, "lower"));
      return figures;
    } catch (err) {
      throw new Error(
        `firewall-proxy bench failed; haproxy said: ${host.output("egress-proxy").slice(-4_000)}`,
        {
          cause: err,
        },
      );
    } finally {
      for (const c of cleanup.reverse())
        await Promise.resolve()
          .then(c)
          .catch(() => undefined);
    }
  },
};

export default bench;
