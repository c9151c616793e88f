// Jobs figures (issue 13) against clawkerd as a local process (its bundle, as the agent image runs
// it) over real mTLS on loopback, on one channel as the control plane holds it: StartJob to the
// first output byte at a watcher, output to 8 concurrent watchers (aggregate), the same with a 9th
// watcher in a stopped process (a stalled reader: its cost to the others), and the GetJobStatus
// answer. The first byte also as a
// user gets it: the real AdminClient (bearer token) through the control plane's JobService on an
// admin listener with the real auth interceptor, which (root and v1 controllers: this hybrid host)
// places each job in v1 groups under the agent's stand-in container groups (clawkerd's processes
// are moved into them), as in the daemon: into the groups of the spare gate it reserved ahead, and
// for reference (alternating, same run) with the spare ahead turned off: held, placed, opened.
import { execFileSync, spawn } from "node:child_process";
import { X509Certificate, randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, rmdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import tls from "node:tls";
import { fileURLToPath } from "node:url";
import { credentials, type ServiceError } from "@grpc/grpc-js";
import { openAdminClient } from "@clawker/adminclient";
import { Overseer } from "@clawker/overseer";
import { jobs, LABELS } from "@clawker/proto";
import pino from "pino";
import { makeTestAgent, type TestAgent } from "../packages/clawkerd/test/fixtures/bootstrap.js";
import {
  bundlePath,
  repoRoot,
  spawnClawkerd,
  type ClawkerdProcess,
} from "../packages/clawkerd/test/fixtures/clawkerd-process.js";
import { ContainerAddressIndex } from "../packages/controlplane/src/agents/address-index.js";
import { localDialer } from "../packages/controlplane/test/fixtures/local-dialer.js";
import { thumbprintOf } from "../packages/controlplane/src/agents/identity-gate.js";
import { Registry } from "../packages/controlplane/src/agents/registry.js";
import {
  AuthInterceptor,
  CachingIntrospector,
  HttpIntrospector,
  withRecovery,
} from "../packages/controlplane/src/auth/index.js";
import { SETPRIV } from "../packages/clawkerd/src/spare-gate.js";
import { V1_CONTROLLERS, v1Mounts } from "../packages/controlplane/src/jobs/cgroups-v1.js";
import { jobService } from "../packages/controlplane/src/jobs/job-service.js";
import { JobPlacement } from "../packages/controlplane/src/jobs/placement.js";
import { GrpcListener } from "../packages/controlplane/src/server/grpc-listener.js";
import { startControlPlane } from "../test/harness/controlplane.js";
import { mintTestTrust, type TestTrust } from "../test/harness/trust.js";
import { waitFor } from "../test/harness/wait-for.js";
import { type Benchmark, type Figure, repeat, summarise } from "./lib.js";
import { cpuMs, reapedChildrenCpuMs } from "./proc-stat.js";

const FIRST_BYTE_SAMPLES = 60;
const STATUS_SAMPLES = 400;
const WATCHERS = 8;
/** What a user's `clawker job start --cpu 0.5 --memory 256M` asks for. */
const PLACED_LIMITS: jobs.JobLimits = {
  cpuMillis: 500,
  memoryMaxBytes: BigInt(256 << 20),
  ioReadBps: 0n,
  ioWriteBps: 0n,
  ioReadIops: 0,
  ioWriteIops: 0,
  pidsMax: 0,
};
const FANOUT_MIB = 64;
const watcherChild = fileURLToPath(
  new URL("../packages/clawkerd/test/fixtures/job-watcher-child.ts", import.meta.url),
);

function unary<Res>(
  c: jobs.JobServiceClient,
  method: "startJob" | "getJobStatus",
  req: object,
): Promise<Res> {
  return new Promise((resolve, reject) =>
    (c[method].bind(c) as unknown as (r: object, cb: (e: ServiceError | null, v: Res) => void) => void)(
      req,
      (e, v) => (e === null ? resolve(v) : reject(e)),
    ),
  );
}

const start = (c: jobs.JobServiceClient, argv: string[]): Promise<jobs.StartJobResponse> =>
  unary(c, "startJob", { agentName: "dev", project: "proj", argv, cwd: "", env: {} });

/** Resolves with the bytes a watcher read when the job's output ended. */
function watchCount(
  c: jobs.JobServiceClient,
  name: string,
  onFirst?: (data: Buffer) => void,
): Promise<number> {
  return new Promise((resolve, reject) => {
    let n = 0;
    const s = c.watchJobOutput({ name });
    s.on("data", (m: jobs.WatchJobOutputResponse) => {
      if (n === 0 && m.data.length > 0) onFirst?.(m.data);
      n += m.data.length;
    });
    s.on("end", () => resolve(n));
    s.on("error", reject);
  });
}

const bench: Benchmark = {
  name: "jobs",
  async run(ctx): Promise<Figure[]> {
    const trust = await mintTestTrust();
    const agent = await makeTestAgent({ trust });
    // clawkerd at its default level: at debug its logging cost a job ~8 ms of its first byte
    // (quiet: 27.1 against 14.5 ms p50), so the figures run at info. BENCH_JOBS_TIMELINE=1 runs
    // clawkerd at debug for each job's `job_timeline` line (the clawkerd pieces below), figures
    // then inflated by that logging.
    const timeline = process.env["BENCH_JOBS_TIMELINE"] === "1";
    // clawkerd as the agent image runs it: its esbuild bundle with plain node, not its sources
    // through tsx, whose loader left clawkerd ~20 MiB larger (RSS 104 against 82 MiB), and every
    // spare gate's fork of clawkerd dearer (clawkerd's CPU per started job 13.3 against 11.8 ms).
    execFileSync("npm", ["run", "--silent", "bundle", "-w", "@clawker/clawkerd"], {
      cwd: repoRoot,
      stdio: "pipe",
    });
    const proc = spawnClawkerd(agent, {
      bundle: bundlePath,
      env: { CLAWKERD_JOB_OUTPUT_BYTES: String(256 << 20), CLAWKERD_LOG_LEVEL: timeline ? "debug" : "info" },
    });
    if (!timeline)
      ctx.log("clawkerd at info: its pieces show '-' (BENCH_JOBS_TIMELINE=1 for them, figures inflated)");
    const stopped: Array<ReturnType<typeof spawn>> = [];
    let client: jobs.JobServiceClient | undefined;
    let container: { remove(): void } | undefined;
    let viaCp: ControlPlanePath | undefined;
    /** The same without the spare reserved ahead: every start held, placed, then opened. */
    let viaCpHeld: ControlPlanePath | undefined;
    try {
      await proc.waitListening();
      container = standInContainer(agent.containerId, proc.child.pid!);
      if (container === undefined)
        ctx.log("no root or no v1 controllers: the control plane path runs unplaced");
      viaCp = await controlPlanePath(trust, agent, proc, container !== undefined, true);
      viaCpHeld = await controlPlanePath(trust, agent, proc, container !== undefined, false);
      tls.DEFAULT_MIN_VERSION = "TLSv1.3";
      const set = agent.trust.set;
      client = new jobs.JobServiceClient(
        proc.address,
        credentials.createSsl(
          Buffer.from(set.ca.certPem),
          Buffer.from(set.controlPlaneClient.keyPem),
          Buffer.from(set.controlPlaneClient.certPem),
          { checkServerIdentity: () => undefined },
        ),
        { "grpc.ssl_target_name_override": "localhost", "grpc-node.flow_control_window": 4 << 20 },
      );
      const c = client;

      // StartJob -> first output byte at a watcher opened when StartJob answered.
      const alone = clientSide();
      const firstByte = async (): Promise<number> => {
        const t0 = performance.now();
        const { job } = await start(c, timeline ? TIMED_TARGET : ["echo", "x"]);
        const answered = performance.now();
        let at = 0;
        let first: Buffer = Buffer.alloc(0);
        await watchCount(c, job!.name, (d) => {
          at = performance.now();
          first = d;
        });
        alone.add(job!.name, t0, answered, at, first);
        return at - t0;
      };
      // Alternating, so load drift on the shared machine hits both paths alike.
      const cpPath = viaCp;
      const heldPath = viaCpHeld;
      for (let i = 0; i < 5; i++) {
        await firstByte();
        await cpPath.firstByte();
        await heldPath.firstByte();
      }
      const firstBytes: number[] = [];
      const cpFirstBytes: number[] = [];
      const heldFirstBytes: number[] = [];
      alone.clear();
      cpPath.client.clear();
      heldPath.client.clear();
      const pid = proc.child.pid!;
      const k0 = cpuMs(pid) + reapedChildrenCpuMs(pid);
      const b0 = process.cpuUsage();
      for (let i = 0; i < FIRST_BYTE_SAMPLES; i++) {
        firstBytes.push(await firstByte());
        cpFirstBytes.push(await cpPath.firstByte());
        heldFirstBytes.push(await heldPath.firstByte());
      }
      const jobsRun = 3 * FIRST_BYTE_SAMPLES;
      const b1 = process.cpuUsage(b0);
      ctx.log(
        `CPU per started job (${jobsRun}, the three paths alternating): clawkerd and its jobs (reaped) ${((cpuMs(pid) + reapedChildrenCpuMs(pid) - k0) / jobsRun).toFixed(2)} ms, this process (control plane, clients) ${((b1.user + b1.system) / 1000 / jobsRun).toFixed(2)} ms`,
      );
      const clawkerdLines = proc.lines.filter((l) => l["event"] === "job_timeline");
      ctx.log(`clawkerd alone, p50 ms since the client sent StartJob: ${chain(alone, clawkerdLines, [])}`);
      ctx.log(
        `through the control plane, p50 ms since the client sent StartJob: ${chain(cpPath.client, clawkerdLines, cpPath.timelines)}`,
      );
      ctx.log(
        `through the control plane without the spare ahead (held, placed, opened), p50 ms since the client sent StartJob: ${chain(heldPath.client, clawkerdLines, heldPath.timelines)}`,
      );
      const starts = cpPath.timelines.filter((l) => l["event"] === "job_timeline");
      ctx.log(
        `through the control plane: ${starts.filter((l) => l["spareAhead"] === true).length} of ${starts.length} starts found the spare placed ahead (the others were held)`,
      );
      const ratio = (p50(cpFirstBytes) ?? 0) / (p50(heldFirstBytes) ?? 1);
      ctx.log(
        `first byte through the control plane, spare ahead / held (same run, alternating): ${ratio.toFixed(3)}`,
      );
      if (timeline) ctx.log(await dropCost());
      ctx.log(
        await cpuPerPath(pid, [
          ["clawkerd alone", firstByte],
          ["through the control plane, spare ahead", () => cpPath.firstByte()],
          ["through the control plane, held", () => heldPath.firstByte()],
        ]),
      );

      // GetJobStatus of a running job.
      const { job: sleeper } = await start(c, ["sleep", "600"]);
      const statusMs: number[] = [];
      for (let i = 0; i < 20 + STATUS_SAMPLES; i++) {
        const t0 = performance.now();
        await unary(c, "getJobStatus", { name: sleeper!.name });
        if (i >= 20) statusMs.push(performance.now() - t0);
      }

      // Output to 8 watchers, with or without a 9th in a stopped process.
      const size = FANOUT_MIB << 20;
      const fanout = async (withStalled: boolean): Promise<number> => {
        const { job } = await start(c, ["/bin/sh", "-c", `head -c ${size} /dev/zero`]);
        if (withStalled) await stalledWatcher(agent, proc.address, job!.name, stopped);
        const t0 = performance.now();
        const counts = await Promise.all(Array.from({ length: WATCHERS }, () => watchCount(c, job!.name)));
        const seconds = (performance.now() - t0) / 1000;
        if (counts.some((n) => n !== size)) throw new Error(`a watcher got ${counts.join(",")} of ${size}`);
        return (WATCHERS * FANOUT_MIB) / seconds;
      };
      const free = await repeat(ctx, () => fanout(false));
      const withStall = await repeat(ctx, () => fanout(true));
      const freeMedian = summarise("x", "x", free, "higher").median;
      const stallMedian = summarise("x", "x", withStall, "higher").median;
      ctx.log(
        `stalled watcher costs the others ${(100 * (1 - stallMedian / freeMedian)).toFixed(1)}% (target < 10%)`,
      );
      await unary(c, "getJobStatus", { name: sleeper!.name });
      return [
        summarise(
          `StartJob to the first output byte at a watcher, through the control plane${container === undefined ? "" : " (placed in v1 groups)"}`,
          "ms",
          cpFirstBytes,
          "lower",
          "p50 <= 15 ms",
        ),
        summarise(
          `StartJob to the first output byte at a watcher, through the control plane without the spare ahead${container === undefined ? "" : " (held, placed in v1 groups, opened)"}`,
          "ms",
          heldFirstBytes,
          "lower",
          "reference for the line above",
        ),
        summarise(
          "StartJob to the first output byte at a watcher, clawkerd alone",
          "ms",
          firstBytes,
          "lower",
          "p50 <= 15 ms",
        ),
        summarise(
          `output to ${WATCHERS} concurrent watchers, aggregate`,
          "MiB/s",
          free,
          "higher",
          ">= 100 MiB/s",
        ),
        summarise(
          `output to ${WATCHERS} concurrent watchers with a 9th stalled (stopped process), aggregate`,
          "MiB/s",
          withStall,
          "higher",
          "< 10% below the line above",
        ),
        summarise("GetJobStatus answer", "ms", statusMs, "lower", "p50 <= 5 ms"),
      ];
    } finally {
      for (const p of stopped) {
        p.kill("SIGCONT");
        p.kill("SIGKILL");
      }
      client?.close();
      await viaCp?.close();
      await viaCpHeld?.close();
      await proc.kill();
      container?.remove();
      await agent.close();
      await trust.close();
    }
  },
};

/** A watcher in its own process that read its first bytes and was then stopped (SIGSTOP). */
async function stalledWatcher(
  agent: TestAgent,
  address: string,
  name: string,
  stopped: Array<ReturnType<typeof spawn>>,
): Promise<void> {
  const set = agent.trust.set;
  const child = spawn(
    process.execPath,
    ["--import", "tsx", "--conditions=source", watcherChild, address, name],
    {
      cwd: repoRoot,
      env: {
        ...process.env,
        WATCH_CA: set.ca.certPem,
        WATCH_CERT: set.controlPlaneClient.certPem,
        WATCH_KEY: set.controlPlaneClient.keyPem,
      },
      stdio: ["ignore", "pipe", "ignore"],
    },
  );
  stopped.push(child);
  await new Promise<void>((resolve, reject) => {
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      out += d;
      if (out.includes("first")) {
        child.kill("SIGSTOP");
        resolve();
      }
    });
    child.once("exit", () => reject(new Error(`the stalled watcher exited: ${out}`)));
  });
}

export default bench;

/**
 * With BENCH_JOBS_TIMELINE=1 the job prints the time it started running (its target exec'd) in
 * ns since the epoch, a coreutils program as `echo` is, so the exec of the target is on the clock.
 */
const TIMED_TARGET = ["date", "+%s%N"];

/** One first-byte sample as the client saw it, ms on the Unix clock (µs precision). */
interface Sample {
  readonly name: string;
  readonly sentUnixMs: number;
  readonly answeredMs: number;
  readonly firstByteMs: number;
  /** The first data's text (the target's start time with TIMED_TARGET). */
  readonly first: string;
}

/** The samples of one path. */
interface ClientSide {
  readonly samples: Sample[];
  add(name: string, t0: number, answered: number, firstByte: number, first: Buffer): void;
  clear(): void;
}

function clientSide(): ClientSide {
  const samples: Sample[] = [];
  return {
    samples,
    add(name, t0, answered, firstByte, first) {
      const sentUnixMs = performance.timeOrigin + t0;
      samples.push({
        name,
        sentUnixMs,
        answeredMs: answered - t0,
        firstByteMs: firstByte - t0,
        first: first.toString("latin1"),
      });
    },
    clear: () => void (samples.length = 0),
  };
}

// Where each piece of a line is, relative to its t0UnixMs: [field, label].
const CLAWKERD_PIECES: ReadonlyArray<[string, string]> = [
  ["", "clawkerd: StartJob arrived"],
  ["spawned", "clawkerd: gate taken/spawned"],
  ["gateOpened", "clawkerd: gate line written"],
  ["firstByte", "clawkerd: first byte read"],
  ["logWritten", "clawkerd: written to the job's log"],
  ["watchAttached", "clawkerd: watch arrived"],
  ["firstChunkSent", "clawkerd: first chunk on the watch stream"],
];
const CP_PIECES: ReadonlyArray<[string, string]> = [
  ["", "cp: StartJob arrived"],
  ["preparedMs", "cp: groups made (spare ahead: limits written)"],
  ["heldMs", "cp: clawkerd's StartJob answered"],
  ["placedMs", "cp: process moved"],
];
const CP_GATE_PIECES: ReadonlyArray<[string, string]> = [["gateOpenedMs", "cp: OpenJobGate answered"]];
const CP_WATCH_PIECES: ReadonlyArray<[string, string]> = [
  ["", "cp: watch arrived"],
  ["firstDataMs", "cp: first data from clawkerd"],
  ["relayedMs", "cp: first data written to the client's stream"],
];

function p50(xs: readonly number[]): number | undefined {
  if (xs.length === 0) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/**
 * Every piece of the samples' starts on one clock, p50 ms since the client sent StartJob, in the
 * order they happen: the client's, clawkerd's `job_timeline`, the control plane's `job_timeline`
 * and `job_watch_timeline` (lines carry t0UnixMs), and the target's own start (TIMED_TARGET).
 */
function chain(
  side: ClientSide,
  clawkerdLines: readonly Record<string, unknown>[],
  cpLines: readonly Record<string, unknown>[],
): string {
  const at = new Map<string, number[]>();
  const put = (label: string, v: number): void => void at.set(label, [...(at.get(label) ?? []), v]);
  const byJob = (
    lines: readonly Record<string, unknown>[],
    event: string,
  ): Map<string, Record<string, unknown>> =>
    new Map(lines.filter((l) => l["event"] === event).map((l) => [String(l["job"]), l]));
  const sources: Array<[Map<string, Record<string, unknown>>, ReadonlyArray<[string, string]>]> = [
    [byJob(clawkerdLines, "job_timeline"), CLAWKERD_PIECES],
    [byJob(cpLines, "job_timeline"), CP_PIECES],
    [byJob(cpLines, "job_gate_timeline"), CP_GATE_PIECES],
    [byJob(cpLines, "job_watch_timeline"), CP_WATCH_PIECES],
  ];
  for (const s of side.samples) {
    put("client: StartJob answered (its watch sent)", s.answeredMs);
    put("client: first byte", s.firstByteMs);
    if (/^\d{19}\n?$/.test(s.first))
      put("target running (its own clock)", Number(BigInt(s.first.trim()) / 1000n) / 1000 - s.sentUnixMs);
    for (const [lines, fields] of sources) {
      const l = lines.get(s.name);
      const t0 = l?.["t0UnixMs"];
      if (typeof t0 !== "number") continue;
      for (const [f, label] of fields) {
        const v = f === "" ? 0 : l![f];
        if (typeof v === "number") put(label, t0 + v - s.sentUnixMs);
      }
    }
  }
  const rows = [...at].map(([label, xs]) => [label, p50(xs)!] as const).sort((a, b) => a[1] - b[1]);
  return rows.map(([label, v]) => `${label} ${v.toFixed(2)}`).join("; ");
}

/**
 * The exec of setpriv in the gate's chain, measured apart (its exec is not on any log): the gate's
 * shell executing the timed target through setpriv to uid 1000 and directly, alternating, spawn
 * to the target's start, p50.
 */
async function dropCost(): Promise<string> {
  if (process.getuid?.() !== 0) return "setpriv's exec: not measured (not root)";
  const run = (line: string): Promise<number> =>
    new Promise((resolve, reject) => {
      const t0 = performance.timeOrigin + performance.now();
      const child = spawn("/bin/sh", ["-c", line], { stdio: ["ignore", "pipe", "ignore"] });
      let out = "";
      child.stdout.setEncoding("latin1").on("data", (d: string) => (out += d));
      child.once("error", reject);
      child.once("close", () => resolve(Number(BigInt(out.trim()) / 1000n) / 1000 - t0));
    });
  const via: number[] = [];
  const direct: number[] = [];
  for (let i = 0; i < 25; i++) {
    via.push(await run(`exec ${SETPRIV} --reuid=1000 --regid=1000 --clear-groups -- date +%s%N`));
    direct.push(await run("exec date +%s%N"));
  }
  return `spawn of the gate's shell to the target running, p50 ms: through setpriv ${p50(via)!.toFixed(2)}, direct ${p50(direct)!.toFixed(2)}`;
}

/** Starts per block in cpuPerPath(). */
const CPU_BLOCK = 20;

/**
 * CPU per started job of each path: blocks of CPU_BLOCK starts, the paths in turn, three rounds,
 * so a path's background work (the next spare's reservation) falls in its own block but once.
 * clawkerd with its reaped children (the jobs, the spares), and this process (control plane and
 * clients); the ratio of the spare ahead to the held path.
 */
async function cpuPerPath(
  pid: number,
  paths: ReadonlyArray<readonly [string, () => Promise<number>]>,
): Promise<string> {
  const sums = paths.map(() => ({ clawkerd: 0, here: 0, n: 0 }));
  for (let round = 0; round < 3; round++) {
    for (const [i, [, run]] of paths.entries()) {
      const k0 = cpuMs(pid) + reapedChildrenCpuMs(pid);
      const b0 = process.cpuUsage();
      for (let j = 0; j < CPU_BLOCK; j++) await run();
      const b1 = process.cpuUsage(b0);
      sums[i]!.clawkerd += cpuMs(pid) + reapedChildrenCpuMs(pid) - k0;
      sums[i]!.here += (b1.user + b1.system) / 1000;
      sums[i]!.n += CPU_BLOCK;
    }
  }
  const per = sums.map((x) => ({ clawkerd: x.clawkerd / x.n, here: x.here / x.n }));
  const rows = paths.map(
    ([name], i) =>
      `${name}: clawkerd and its jobs ${per[i]!.clawkerd.toFixed(2)} ms, this process ${per[i]!.here.toFixed(2)} ms`,
  );
  const [, ahead, held] = per;
  const ratio =
    ahead !== undefined && held !== undefined
      ? `; spare ahead / held, both processes: ${((ahead.clawkerd + ahead.here) / (held.clawkerd + held.here)).toFixed(3)}`
      : "";
  return `CPU per started job (blocks of ${CPU_BLOCK}, paths in turn, 3 rounds): ${rows.join("; ")}${ratio}`;
}

/** StartJob to the first byte through the control plane's admin listener, and its teardown. */
interface ControlPlanePath {
  firstByte(): Promise<number>;
  /** The samples' names and StartJob answer times, at the client. */
  readonly client: ClientSide;
  /** The control plane's `job_timeline` and `job_watch_timeline` lines. */
  readonly timelines: Record<string, unknown>[];
  close(): Promise<void>;
}

async function controlPlanePath(
  trust: TestTrust,
  agent: TestAgent,
  proc: ClawkerdProcess,
  placed: boolean,
  spareAhead: boolean,
): Promise<ControlPlanePath> {
  // Debug, kept in memory: the JobService's `job_timeline` lines; everything else is dropped.
  const timelines: Record<string, unknown>[] = [];
  const log = pino({ level: "silent" });
  const jobsLog = pino(
    { level: "debug" },
    {
      write(line: string): void {
        if (line.includes('_timeline"')) timelines.push(JSON.parse(line) as Record<string, unknown>);
      },
    },
  );
  const closers: Array<() => Promise<void> | void> = [];
  const close = async (): Promise<void> => {
    for (const c of closers.reverse()) await c();
  };
  try {
    const cp = await startControlPlane({ trustDir: trust.trustDir });
    closers.push(async () => {
      await cp.close();
    });
    const tmp = mkdtempSync(join(tmpdir(), "bench-jobs-"));
    closers.push(() => rmSync(tmp, { recursive: true, force: true }));
    const registry = new Registry(join(tmp, "registry.db"));
    closers.push(() => registry.close());
    const certThumbprint = thumbprintOf(new X509Certificate(agent.leaf.certPem).raw);
    registry.register(
      { containerId: agent.containerId, agentName: "dev", project: "proj", certThumbprint },
      1,
    );
    const overseer = new Overseer();
    closers.push(() => overseer.close());
    const index = new ContainerAddressIndex({ inspect: () => Promise.resolve(undefined), log });
    index.put({
      id: agent.containerId,
      labels: { [LABELS.managed]: "true", [LABELS.agent]: "dev", [LABELS.project]: "proj" },
      addresses: ["127.0.0.1"],
    });
    const dialer = localDialer({
      index,
      registry,
      agents: overseer.agents,
      trust,
      log,
      address: () => proc.address,
    });
    dialer.start();
    closers.push(() => dialer.close());
    await waitFor(() => dialer.status(agent.containerId)?.state === "ready", {
      timeoutMs: 30_000,
      what: "agent ready",
    });
    let placement: JobPlacement | undefined;
    if (placed) {
      placement = new JobPlacement({
        initPid: () => Promise.resolve(proc.child.pid!),
        registry,
        dialer,
        log,
        ...(spareAhead ? {} : { spareAheadDelayMs: false as const }),
      });
    }
    const introspector = new HttpIntrospector({
      adminUrl: cp.authAdminUrl,
      ca: Buffer.from(trust.set.ca.certPem),
      timeoutMs: 2000,
    });
    closers.push(() => introspector.close());
    const cached = new CachingIntrospector(introspector, { maxTtlMs: 60_000, maxEntries: 100 });
    const binding = jobService({ dialer, registry, log: jobsLog, placement });
    const listener = new GrpcListener({
      name: "admin",
      host: "127.0.0.1",
      port: 0,
      tls: {
        ca: Buffer.from(trust.set.ca.certPem),
        cert: Buffer.from(trust.set.controlPlaneServer.certPem),
        key: Buffer.from(trust.set.controlPlaneServer.keyPem),
      },
      services: [
        {
          definition: binding.definition,
          implementation: withRecovery(binding.definition, binding.implementation, log),
        },
      ],
      // As the daemon's admin listener: auth runs as a gate of the call guard, which also recovers.
      gates: [new AuthInterceptor({ introspector: cached, log }).gate],
      log,
    });
    await listener.start();
    closers.push(() => listener.close(0));
    const client = openAdminClient({
      trust: trust.set,
      target: `127.0.0.1:${listener.port}`,
      tokenEndpoint: cp.tokenEndpoint,
    });
    closers.push(() => client.close());
    const names: string[] = [];
    const side = clientSide();
    const timed = process.env["BENCH_JOBS_TIMELINE"] === "1";
    const firstByte = async (): Promise<number> => {
      const t0 = performance.now();
      const { job } = await client.callMethod(jobs.JobServiceService.startJob, {
        agentName: "dev",
        project: "proj",
        argv: timed ? TIMED_TARGET : ["echo", "x"],
        cwd: "",
        env: {},
        limits: PLACED_LIMITS,
        holdForPlacement: false,
        jobUuid: "",
      });
      if (placement !== undefined && job?.isLimited !== true)
        throw new Error(`not placed: ${job?.limitsNote}`);
      const answered = performance.now();
      names.push(job!.name);
      let at = 0;
      let first: Buffer = Buffer.alloc(0);
      for await (const m of client.streamMethod(jobs.JobServiceService.watchJobOutput, { name: job!.name }))
        if (at === 0 && m.data.length > 0) [at, first] = [performance.now(), Buffer.from(m.data)];
      side.add(job!.name, t0, answered, at, first);
      return at - t0;
    };
    // The ended jobs' groups go (the reaper's work in the daemon).
    closers.push(() => {
      for (const name of names)
        placement?.removeIfEmpty(agent.containerId, name.slice(name.lastIndexOf("/") + 1));
    });
    return { firstByte, close, client: side, timelines };
  } catch (err) {
    await close();
    throw err;
  }
}

/**
 * Groups named by the container id in every v1 controller with clawkerd's process moved in, as
 * Docker makes a container's; undefined without root or v1 controllers (then no placement).
 */
function standInContainer(containerId: string, pid: number): { remove(): void } | undefined {
  const mounts = v1Mounts(readFileSync("/proc/self/mounts", "utf8"));
  if (process.getuid?.() !== 0 || V1_CONTROLLERS.some((c) => mounts[c] === undefined)) return undefined;
  // Under this process's own groups (whatever accounts for it keeps doing so), named by the id.
  const own = new Map<string, string>();
  for (const line of readFileSync("/proc/self/cgroup", "utf8").split("\n")) {
    const m = /^\d+:([^:]+):(\/.*)$/.exec(line);
    if (m !== null) for (const c of m[1]!.split(",")) own.set(c, m[2]!);
  }
  const parent = `clawker-bench-${randomBytes(4).toString("hex")}`;
  const dirs = new Set(V1_CONTROLLERS.map((c) => join(mounts[c]!, own.get(c) ?? "/", parent, containerId)));
  // clawkerd and its spare gate (started before the move): all its processes, as in a container.
  const children = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/);
  for (const d of dirs) {
    mkdirSync(d, { recursive: true });
    for (const p of [String(pid), ...children.filter(Boolean)]) writeFileSync(join(d, "cgroup.procs"), p);
  }
  return {
    remove(): void {
      // After clawkerd and its jobs exited: the job groups, the container's, the parent.
      for (const d of dirs) {
        for (const sub of readdirSync(d, { withFileTypes: true }))
          if (sub.isDirectory()) rmdirQuietly(join(d, sub.name));
        for (const g of [d, join(d, "..")]) rmdirQuietly(g);
      }
    },
  };
}

function rmdirQuietly(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    // already gone, or shared by two controllers (cpu,cpuacct)
  }
}
