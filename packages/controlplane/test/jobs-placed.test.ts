// The control plane's placed StartJob end to end on this (hybrid) host, everything real: the real
// clawkerd process moved into a stand-in container's v1 groups (named by its container id, as
// Docker's), the real Dialer holding its Session over mTLS, JobService with JobPlacement on a real
// listener. After a placed start the control plane reserves clawkerd's next spare gate and moves
// it into the next job's groups ahead (as soon as the start's first output went to its watcher);
// that job's limits are written before clawkerd is asked, and its target runs in those groups from
// its first instruction. Concurrent starts each get groups of their own, whether they find the
// reserved spare or are held. Needs root and v1 controllers.
import assert from "node:assert/strict";
import { X509Certificate, randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, rmdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { after, before, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { Overseer } from "@clawker/overseer";
import { jobs, LABELS } from "@clawker/proto";
import pino from "pino";
import { ContainerAddressIndex } from "../src/agents/address-index.js";
import type { Dialer } from "../src/agents/dialer.js";
import { localDialer } from "./fixtures/local-dialer.js";
import { thumbprintOf } from "../src/agents/identity-gate.js";
import { Registry } from "../src/agents/registry.js";
import { V1_CONTROLLERS, v1Mounts } from "../src/jobs/cgroups-v1.js";
import { jobService } from "../src/jobs/job-service.js";
import { JobPlacement } from "../src/jobs/placement.js";
import { GrpcListener } from "../src/server/grpc-listener.js";
import { requires, root, type Requirement } from "../../../test/harness/preconditions.js";
import { mintTestTrust, type TestTrust } from "../../../test/harness/trust.js";
import { waitFor } from "../../../test/harness/wait-for.js";
import { makeTestAgent, type TestAgent } from "../../clawkerd/test/fixtures/bootstrap.js";
import { spawnClawkerd, type ClawkerdProcess } from "../../clawkerd/test/fixtures/clawkerd-process.js";

tls.DEFAULT_MIN_VERSION = "TLSv1.3";
const log = pino({ level: process.env["LOG_LEVEL"] ?? "silent" });
const mounts = v1Mounts(readFileSync("/proc/self/mounts", "utf8"));
const v1: Requirement = {
  name: "cgroup v1 controllers",
  check: () =>
    V1_CONTROLLERS.every((c) => mounts[c] !== undefined)
      ? undefined
      : "needs the v1 cpu, cpuacct, memory, blkio and pids controllers mounted (a hybrid host)",
};
const S = jobs.JobState;
const LIMITS: jobs.JobLimits = {
  cpuMillis: 300,
  memoryMaxBytes: BigInt(128 << 20),
  ioReadBps: 0n,
  ioWriteBps: 0n,
  ioReadIops: 0,
  ioWriteIops: 0,
  pidsMax: 50,
};

let trust: TestTrust;
let agent: TestAgent;
let proc: ClawkerdProcess;
let tmp: string;
let registry: Registry;
let dialer: Dialer;
let placement: JobPlacement;
let listener: GrpcListener;
let client: jobs.JobServiceClient;
/** The stand-in container's directory per controller (cpu and cpuacct may share one). */
const dirs = new Map<string, string>();
const overseer = new Overseer();
const skipped = (): boolean =>
  process.getuid?.() !== 0 || V1_CONTROLLERS.some((c) => mounts[c] === undefined);

before(async () => {
  if (skipped()) return;
  trust = await mintTestTrust();
  agent = await makeTestAgent({ trust });
  proc = spawnClawkerd(agent);
  await proc.waitListening();
  // The stand-in container: under this process's own groups, named by the agent's container id.
  const own = v1PathsOf(readFileSync("/proc/self/cgroup", "utf8"));
  const parent = `clawker-jobs-placed-${randomBytes(4).toString("hex")}`;
  for (const c of V1_CONTROLLERS) dirs.set(c, join(mounts[c]!, own.get(c) ?? "/", parent, agent.containerId));
  // clawkerd and every process it started (its spare gate and the gate's checks), as in a
  // container. clawkerd may fork while it is being moved: a child forked before its move into
  // every controller is born (partly) outside, so the move repeats until a pass finds all of them
  // in the stand-in's groups.
  for (const d of new Set(dirs.values())) mkdirSync(d, { recursive: true });
  await waitFor(
    () => {
      const outside = treeOf(proc.child.pid!).filter((p) => !inStandIn(p));
      for (const d of new Set(dirs.values())) for (const p of outside) moveQuietly(d, p);
      return outside.length === 0 ? true : undefined;
    },
    { what: "clawkerd's processes all in the stand-in container's groups" },
  );
  tmp = mkdtempSync(join(tmpdir(), "cp-jobs-placed-"));
  registry = new Registry(join(tmp, "registry.db"));
  const certThumbprint = thumbprintOf(new X509Certificate(agent.leaf.certPem).raw);
  registry.register({ containerId: agent.containerId, agentName: "dev", project: "proj", certThumbprint }, 1);
  const index = new ContainerAddressIndex({ inspect: () => Promise.resolve(undefined), log });
  index.put({
    id: agent.containerId,
    labels: { [LABELS.managed]: "true", [LABELS.agent]: "dev", [LABELS.project]: "proj" },
    addresses: ["127.0.0.1"],
  });
  dialer = localDialer({
    index,
    registry,
    agents: overseer.agents,
    trust,
    log,
    address: () => proc.address,
  });
  dialer.start();
  await waitFor(() => dialer.status(agent.containerId)?.state === "ready", {
    timeoutMs: 30_000,
    what: "agent ready",
  });
  placement = new JobPlacement({
    initPid: () => Promise.resolve(proc.child.pid!),
    registry,
    dialer,
    log,
    // Far beyond the tests' waits: a spare is reserved because a start's first output was watched.
    spareAheadDelayMs: 600_000,
  });
  listener = new GrpcListener({
    name: "admin",
    host: "127.0.0.1",
    port: 0,
    tls: {
      ca: Buffer.from(trust.set.ca.certPem),
      cert: Buffer.from(trust.set.controlPlaneServer.certPem),
      key: Buffer.from(trust.set.controlPlaneServer.keyPem),
    },
    services: [jobService({ dialer, registry, log, placement })],
    log,
  });
  await listener.start();
  client = new jobs.JobServiceClient(
    `127.0.0.1:${listener.port}`,
    grpc.credentials.createSsl(
      Buffer.from(trust.set.ca.certPem),
      Buffer.from(trust.set.cli.keyPem),
      Buffer.from(trust.set.cli.certPem),
      { checkServerIdentity: () => undefined },
    ),
  );
});

after(async () => {
  client?.close();
  await listener?.close(0);
  placement?.close();
  await dialer?.close();
  // SIGTERM: clawkerd kills its jobs and spares and exits; then the groups can go.
  await proc?.kill();
  for (const d of new Set(dirs.values())) {
    for (const sub of readdirSync(d, { withFileTypes: true }))
      if (sub.isDirectory()) rmdirQuietly(join(d, sub.name));
    for (const g of [d, join(d, "..")]) rmdirQuietly(g);
  }
  registry?.close();
  if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
  await agent?.close();
  await trust?.close();
  await overseer.close();
});

/** `pid` and its descendants (those alive now). */
function treeOf(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    try {
      for (const task of readdirSync(`/proc/${out[i]}/task`)) {
        const kids = readFileSync(`/proc/${out[i]}/task/${task}/children`, "utf8").trim();
        if (kids !== "") out.push(...kids.split(/\s+/).map(Number));
      }
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** Whether `pid` is in the stand-in container's group in every v1 controller (an exited one is). */
function inStandIn(pid: number): boolean {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/cgroup`, "utf8");
  } catch {
    return true;
  }
  const paths = v1PathsOf(text);
  return V1_CONTROLLERS.every((c) => paths.get(c)?.endsWith(`/${agent.containerId}`) === true);
}

/** Each v1 controller's group path in a /proc/<pid>/cgroup text (cpu and cpuacct may share a line). */
function v1PathsOf(cgroupText: string): Map<string, string> {
  const paths = new Map<string, string>();
  for (const line of cgroupText.split("\n")) {
    const m = /^\d+:([^:]+):(\/.*)$/.exec(line);
    if (m !== null) for (const c of m[1]!.split(",")) paths.set(c, m[2]!);
  }
  return paths;
}

function moveQuietly(dir: string, pid: number): void {
  try {
    writeFileSync(join(dir, "cgroup.procs"), String(pid));
  } catch {
    // exited meanwhile
  }
}

function rmdirQuietly(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    // already gone, or shared by two controllers (cpu,cpuacct)
  }
}

function call<Req, Res>(method: "startJob" | "getJobStatus", req: Req): Promise<Res> {
  return new Promise((resolve, reject) =>
    (
      client[method].bind(client) as unknown as (
        r: Req,
        cb: (e: grpc.ServiceError | null, v: Res) => void,
      ) => void
    )(req, (e, v) => (e === null ? resolve(v) : reject(e))),
  );
}

async function start(argv: string[]): Promise<jobs.Job> {
  const { job } = await call<jobs.StartJobRequest, jobs.StartJobResponse>("startJob", {
    agentName: "dev",
    project: "proj",
    argv,
    cwd: "",
    env: {},
    limits: LIMITS,
    holdForPlacement: false,
    jobUuid: "",
  });
  return job!;
}

async function outputOf(name: string): Promise<string> {
  let out = "";
  for await (const m of client.watchJobOutput({ name }) as AsyncIterable<jobs.WatchJobOutputResponse>)
    out += Buffer.from(m.data).toString();
  return out;
}

async function ended(name: string): Promise<jobs.Job> {
  return waitFor(
    async () => {
      const { job } = await call<jobs.GetJobStatusRequest, jobs.GetJobStatusResponse>("getJobStatus", {
        name,
      });
      return job!.state === S.JOB_STATE_RUNNING ? undefined : job!;
    },
    { timeoutMs: 20_000, what: `${name} to end` },
  );
}

/** The uuid of the job group that holds a waiting spare (the reservation), if one does. */
function reservedGroup(): string | undefined {
  const memory = dirs.get("memory")!;
  for (const e of readdirSync(memory, { withFileTypes: true })) {
    if (!e.isDirectory() || !e.name.startsWith("job-")) continue;
    const pids = readFileSync(join(memory, e.name, "cgroup.procs"), "utf8").trim();
    if (pids === "") continue;
    const cmdline = readFileSync(`/proc/${pids.split("\n")[0]}/cmdline`, "utf8");
    if (/my \$l = <STDIN>|__clawker_line/.test(cmdline)) return e.name.slice(4);
  }
  return undefined;
}

/** A target that prints its own memory and pids groups and its cpu quota, read from its group. */
function selfReport(): string[] {
  return [
    "/bin/sh",
    "-c",
    `grep -E ':(memory|pids):' /proc/self/cgroup; q=$(grep -E ':cpu,cpuacct:|:cpu:' /proc/self/cgroup | head -1 | cut -d: -f3); cat "${mounts.cpu}$q/cpu.cfs_quota_us"`,
  ];
}

void test("after a placed start the next job's spare waits in its groups; that job is limited before its target runs, and runs without a hold", async (t) => {
  if (!requires(t, root, v1)) return;
  const first = await start(["echo", "first"]);
  assert.equal(first.isLimited, true, first.limitsNote);
  assert.equal(await outputOf(first.name), "first\n");
  assert.equal((await ended(first.name)).state, S.JOB_STATE_COMPLETED);
  // Reserved once the first job's output went to its watcher (the delay is 10 minutes here).
  const uuid = await waitFor(reservedGroup, { what: "a spare reserved in the next job's groups" });
  const quota = readFileSync(join(dirs.get("cpu")!, `job-${uuid}`, "cpu.cfs_quota_us"), "utf8").trim();
  assert.equal(quota, "-1", "no limits while the spare waits: they are the next job's");

  const next = await start(selfReport());
  assert.equal(next.name, `agents/proj.dev/jobs/${uuid}`, "the job took the reserved spare's groups");
  assert.equal(next.isLimited, true, next.limitsNote);
  assert.equal((await ended(next.name)).state, S.JOB_STATE_COMPLETED);
  const out = await outputOf(next.name);
  for (const ctl of ["memory", "pids"])
    assert.match(out, new RegExp(`^\\d+:${ctl}:.*/${agent.containerId}/job-${uuid}$`, "m"), out);
  assert.match(out, /^30000$/m, "its cpu limit was in place when the target read it");
  const started = await waitFor(() =>
    proc.lines.find((l) => l["event"] === "job_started" && l["job"] === next.name),
  );
  assert.equal(started["placedAhead"], true);
  assert.equal(started["held"], false, "never held at a gate");
});

void test("concurrent placed starts each run limited in groups of their own, with or without the reserved spare", async (t) => {
  if (!requires(t, root, v1)) return;
  await waitFor(reservedGroup, { what: "a spare reserved" });
  const started = await Promise.all(Array.from({ length: 4 }, () => start(selfReport())));
  assert.equal(new Set(started.map((j) => j.name)).size, 4);
  for (const job of started) {
    assert.equal(job.isLimited, true, job.limitsNote);
    assert.equal((await ended(job.name)).state, S.JOB_STATE_COMPLETED);
    const uuid = job.name.slice(job.name.lastIndexOf("/") + 1);
    const out = await outputOf(job.name);
    assert.match(out, new RegExp(`^\\d+:memory:.*/job-${uuid}$`, "m"), out);
    assert.match(out, /^30000$/m, out);
  }
  const ahead = proc.lines.filter(
    (l) =>
      l["event"] === "job_started" && started.some((j) => j.name === l["job"]) && l["placedAhead"] === true,
  );
  assert.ok(ahead.length <= 1, "one reserved spare, taken once");
});
