// clawker.jobs.v1.JobService in the control plane (issue 13), everything real: the real clawkerd
// process, the real Dialer holding its Session over mTLS, an admin listener built from the
// daemon's parts (GrpcListener, recovery, AuthInterceptor with HTTPS introspection at the embedded
// auth server of a real clawker-cp from the harness, the scope map), and the real `clawker` CLI
// as processes: a job outlives the CLI that started it, two watchers started at different times
// see all of it, a control plane restart (a new Dialer and listener) finds it again, stop kills
// the tree, bad input is refused with its reason and exit code, no token is UNAUTHENTICATED.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { X509Certificate, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import { AdminError, cliTls, dial, openAdminClient, type AdminClient } from "@clawker/adminclient";
import { Overseer } from "@clawker/overseer";
import { CLAWKER_ERROR_DOMAIN, jobs, LABELS } from "@clawker/proto";
import pino from "pino";
import { ContainerAddressIndex } from "../src/agents/address-index.js";
import type { Dialer } from "../src/agents/dialer.js";
import { localDialer } from "./fixtures/local-dialer.js";
import { thumbprintOf } from "../src/agents/identity-gate.js";
import { Registry } from "../src/agents/registry.js";
import {
  AuthInterceptor,
  CachingIntrospector,
  HttpIntrospector,
  recoveryInterceptor,
  withRecovery,
} from "../src/auth/index.js";
import { EarlyWatches, type ClaimedWatch } from "../src/jobs/early-watch.js";
import { jobService } from "../src/jobs/job-service.js";
import { adminService } from "../src/server/admin-service.js";
import { GrpcListener, type ServiceBinding } from "../src/server/grpc-listener.js";
import { SosBoard } from "../src/server/sos-board.js";
import { startControlPlane, type ControlPlane } from "../../../test/harness/controlplane.js";
import { mintTestTrust, type TestTrust } from "../../../test/harness/trust.js";
import { waitFor } from "../../../test/harness/wait-for.js";
import { makeTestAgent, type TestAgent } from "../../clawkerd/test/fixtures/bootstrap.js";
import { spawnClawkerd, type ClawkerdProcess } from "../../clawkerd/test/fixtures/clawkerd-process.js";
import { processesWith } from "../../clawkerd/test/fixtures/processes.js";

tls.DEFAULT_MIN_VERSION = "TLSv1.3";
const log = pino({ level: process.env["LOG_LEVEL"] ?? "silent" });
const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));
const cliMain = join(repoRoot, "packages/cli/src/main.ts");
const S = jobs.JobState;

let trust: TestTrust;
let cp: ControlPlane;
let tmp: string;
let registry: Registry;
let introspector: HttpIntrospector;
let agent: TestAgent;
let proc: ClawkerdProcess;
let dialer: Dialer;
let listener: GrpcListener | undefined;
let client: AdminClient;
const dialers: Dialer[] = [];

/** The service's early watches, counting the ones a watcher took. */
class CountedEarlyWatches extends EarlyWatches {
  readonly claimed: string[] = [];
  override claim(name: string): ClaimedWatch | undefined {
    const c = super.claim(name);
    if (c !== undefined) this.claimed.push(name);
    return c;
  }
}
const earlyWatches = new CountedEarlyWatches();
const overseer = new Overseer();
const index = new ContainerAddressIndex({ inspect: () => Promise.resolve(undefined), log });

function newDialer(): Dialer {
  const d = localDialer({
    index,
    registry,
    agents: overseer.agents,
    trust,
    log,
    address: () => proc.address,
  });
  dialers.push(d);
  d.start();
  return d;
}

/** The admin listener as the daemon builds it, serving JobService over `d`. */
async function serve(d: Dialer): Promise<void> {
  await listener?.close(0);
  // A short stall bound, so the stalled-watcher test does not wait 5 s per cut.
  const binding = jobService({ dialer: d, registry, log, maxStallMs: 1500, earlyWatch: earlyWatches });
  const cached = new CachingIntrospector(introspector, { maxTtlMs: 60_000, maxEntries: 100 });
  listener = new GrpcListener({
    name: "admin",
    host: "127.0.0.1",
    port: 0,
    tls: {
      ca: Buffer.from(trust.set.ca.certPem),
      cert: Buffer.from(trust.set.controlPlaneServer.certPem),
      key: Buffer.from(trust.set.controlPlaneServer.keyPem),
    },
    // AdminService beside it, as in the daemon: the CLI reads the clock (GetSystemTime) first.
    services: [binding, adminService({ agents: registry, sos: new SosBoard() })].map(
      (b: ServiceBinding): ServiceBinding => ({
        definition: b.definition,
        implementation: withRecovery(b.definition, b.implementation, log),
      }),
    ),
    interceptors: [recoveryInterceptor(log), new AuthInterceptor({ introspector: cached, log }).interceptor],
    log,
  });
  await listener.start();
}

before(async () => {
  trust = await mintTestTrust();
  cp = await startControlPlane({ trustDir: trust.trustDir });
  tmp = mkdtempSync(join(tmpdir(), "cp-jobs-"));
  registry = new Registry(join(tmp, "registry.db"));
  agent = await makeTestAgent({ trust });
  // More output kept per job than any test writes, so a late watcher misses nothing.
  proc = spawnClawkerd(agent, { env: { CLAWKERD_JOB_OUTPUT_BYTES: String(64 << 20) } });
  await proc.waitListening();
  const certThumbprint = thumbprintOf(new X509Certificate(agent.leaf.certPem).raw);
  registry.register({ containerId: agent.containerId, agentName: "dev", project: "proj", certThumbprint }, 1);
  introspector = new HttpIntrospector({
    adminUrl: cp.authAdminUrl,
    ca: Buffer.from(trust.set.ca.certPem),
    timeoutMs: 2000,
  });
  dialer = newDialer();
  index.put({
    id: agent.containerId,
    labels: { [LABELS.managed]: "true", [LABELS.agent]: "dev", [LABELS.project]: "proj" },
    addresses: ["127.0.0.1"],
  });
  await waitFor(() => dialer.status(agent.containerId)?.state === "ready", {
    timeoutMs: 30_000,
    what: "agent ready",
  });
  await serve(dialer);
  client = openAdminClient({
    trust: trust.set,
    target: `127.0.0.1:${listener!.port}`,
    tokenEndpoint: cp.tokenEndpoint,
  });
});

after(async () => {
  await client?.close();
  earlyWatches.close();
  await listener?.close(0);
  for (const d of dialers) await d.close();
  // SIGTERM: clawkerd kills its jobs' process groups and exits.
  await proc?.kill();
  await introspector?.close();
  registry?.close();
  if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
  await agent?.close();
  await cp?.close();
  await trust?.close();
  await overseer.close();
});

/** Runs the real `clawker job ...` against the test's admin listener. */
function clawker(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const [word, ...rest] = args;
    const child = spawn(
      process.execPath,
      [
        "--import",
        import.meta.resolve("tsx"),
        "--conditions=source",
        cliMain,
        "job",
        word!,
        "--trust-dir",
        trust.trustDir,
        "--admin",
        `127.0.0.1:${listener!.port}`,
        "--token-endpoint",
        cp.tokenEndpoint,
        ...rest,
      ],
      { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (b: Buffer) => (stdout += b.toString()));
    child.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 90_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

async function status(name: string): Promise<jobs.GetJobStatusResponse> {
  return client.callMethod(jobs.JobServiceService.getJobStatus, { name });
}

async function startJob(argv: string[]): Promise<string> {
  const { job } = await client.callMethod(jobs.JobServiceService.startJob, {
    agentName: "dev",
    project: "proj",
    argv,
    cwd: "",
    env: {},
    holdForPlacement: false,
    jobUuid: "",
  });
  return job!.name;
}

async function watchAll(name: string): Promise<string> {
  let out = "";
  for await (const m of client.streamMethod(jobs.JobServiceService.watchJobOutput, { name }))
    out += Buffer.from(m.data).toString();
  return out;
}

void test("a watch soon after StartJob takes the job's early watch: all the output in order, live or ended; a second watcher reads its own", async () => {
  const live = await startJob([
    "/bin/sh",
    "-c",
    "printf 'a\\n'; sleep 0.3; printf 'b\\n'; sleep 0.3; printf 'c\\n'",
  ]);
  assert.equal(await watchAll(live), "a\nb\nc\n");
  const claims = (n: string): number => earlyWatches.claimed.filter((c) => c === n).length;
  assert.equal(claims(live), 1, "the first watcher took the early watch");
  assert.equal(await watchAll(live), "a\nb\nc\n", "a second watcher, from clawkerd's log");
  const ended = await startJob(["/bin/sh", "-c", "seq 1 2000"]);
  await waitFor(async () => ((await status(ended)).job!.state === S.JOB_STATE_COMPLETED ? true : undefined), {
    what: "the job ended before its watcher came",
  });
  const want = Array.from({ length: 2000 }, (_, i) => `${i + 1}\n`).join("");
  assert.equal(await watchAll(ended), want);
  assert.deepEqual([claims(live), claims(ended)], [1, 1]);
});

void test("an early watch nobody takes is cancelled after its ttl, or once it holds more than its bound", async () => {
  const channel = dialer.readyChannel(agent.containerId)!;
  const agentClient = new jobs.JobServiceClient("unused:0", grpc.credentials.createInsecure(), {
    channelOverride: channel,
  });
  const short = new EarlyWatches({ ttlMs: 200 });
  const small = new EarlyWatches({ maxBytes: 1000 });
  try {
    const name = await startJob(["sleep", "600"]);
    short.open(name, agentClient);
    assert.equal(short.size, 1);
    await waitFor(() => short.size === 0, { what: "the unclaimed early watch cancelled" });
    assert.equal(short.claim(name), undefined);
    const loud = await startJob(["/bin/sh", "-c", "seq 1 5000; sleep 600"]);
    small.open(loud, agentClient);
    await waitFor(() => small.size === 0, { what: "the early watch over its bound cancelled" });
    assert.equal(small.claim(loud), undefined, "a watcher then opens its own");
    for (const n of [name, loud])
      await client.callMethod(jobs.JobServiceService.stopJob, { name: n, graceSeconds: 1 });
  } finally {
    short.close();
    small.close();
  }
});

void test("the CLI starts a job that outlives it; two CLI watchers started at different times both print all of it", async () => {
  const started = await clawker([
    "start",
    "--agent",
    "dev",
    "--project",
    "proj",
    "--",
    "/bin/sh",
    "-c",
    "for i in $(seq 1 60); do echo line $i; sleep 0.05; done",
  ]);
  assert.equal(started.code, 0, started.stderr);
  const name = started.stdout.trim();
  assert.match(name, /^agents\/proj\.dev\/jobs\/[0-9a-f-]{36}$/);
  // The starting CLI has exited: the job runs on.
  assert.equal((await status(name)).job?.state, S.JOB_STATE_RUNNING);
  const early = clawker(["watch", name]);
  await waitFor(async () => ((await status(name)).job!.outputBytes > 100n ? true : undefined), {
    what: "output before the second watcher",
  });
  const late = clawker(["watch", name]);
  const want = Array.from({ length: 60 }, (_, i) => `line ${i + 1}`).join("\n") + "\n";
  for (const w of await Promise.all([early, late])) {
    assert.equal(w.code, 0, w.stderr);
    assert.equal(w.stdout, want);
  }
  const st = await clawker(["status", name, "--format", "json"]);
  assert.equal(st.code, 0, st.stderr);
  const parsed = JSON.parse(st.stdout) as { job: { state: string; exitCode: number; reason: string } };
  assert.deepEqual([parsed.job.state, parsed.job.reason], ["JOB_STATE_COMPLETED", "exited"]);
  const ls = await clawker(["ls", "--agent", "dev", "--project", "proj", "--state", "completed"]);
  assert.equal(ls.code, 0, ls.stderr);
  assert.ok(ls.stdout.includes(name), ls.stdout);
});

void test("a CLI watcher that stops reading is cut off (watcher_too_slow) while another watcher keeps up", async () => {
  const size = 48 << 20;
  const { job } = await client.callMethod(jobs.JobServiceService.startJob, {
    agentName: "dev",
    project: "proj",
    argv: ["/bin/sh", "-c", `head -c ${size} /dev/zero`],
    cwd: "",
    env: {},
    holdForPlacement: false,
    jobUuid: "",
  });
  const name = job!.name;
  const child = spawn(
    process.execPath,
    [
      "--import",
      import.meta.resolve("tsx"),
      "--conditions=source",
      cliMain,
      "job",
      "watch",
      name,
      "--trust-dir",
      trust.trustDir,
      "--admin",
      `127.0.0.1:${listener!.port}`,
      "--token-endpoint",
      cp.tokenEndpoint,
    ],
    { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] },
  );
  let got = 0;
  let stderr = "";
  child.stdout.on("data", (b: Buffer) => (got += b.length));
  child.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("close", resolve));
  try {
    await waitFor(
      () => {
        // A CLI that exited will never print: say why now rather than after the whole wait.
        if (child.exitCode !== null)
          throw new Error(`the CLI exited ${child.exitCode} before any output: ${stderr}`);
        return got > 0 ? true : undefined;
      },
      { timeoutMs: 60_000, what: "the CLI's first bytes" },
    );
    child.kill("SIGSTOP");
    let read = 0;
    for await (const m of client.streamMethod(jobs.JobServiceService.watchJobOutput, { name }))
      read += m.data.length;
    assert.equal(read, size, "the other watcher read everything");
    // Long enough for the stall bound to pass with the CLI's stream full.
    await new Promise((r) => setTimeout(r, 3000));
  } finally {
    child.kill("SIGCONT");
  }
  const code = await exited;
  assert.equal(code, 1, stderr);
  assert.match(stderr, /watcher_too_slow|watcher did not read/);
  assert.ok(got < size, `the stalled CLI got ${got} of ${size}`);
});

void test("a control plane restart (new dialer, new listener) re-attaches to a running job", async () => {
  const { job } = await client.callMethod(jobs.JobServiceService.startJob, {
    agentName: "dev",
    project: "proj",
    argv: ["/bin/sh", "-c", "echo up; sleep 600"],
    cwd: "",
    env: {},
    holdForPlacement: false,
    jobUuid: "",
  });
  const name = job!.name;
  await dialer.close();
  await listener?.close(0);
  dialer = newDialer();
  await waitFor(() => dialer.status(agent.containerId)?.state === "ready", {
    timeoutMs: 30_000,
    what: "re-dial",
  });
  await serve(dialer);
  await client.close();
  client = openAdminClient({
    trust: trust.set,
    target: `127.0.0.1:${listener!.port}`,
    tokenEndpoint: cp.tokenEndpoint,
  });
  const st = await status(name);
  assert.equal(st.job?.state, S.JOB_STATE_RUNNING);
  assert.equal(st.job?.outputBytes, 3n);
  const stopped = await clawker(["stop", name, "--grace", "2s"]);
  assert.equal(stopped.code, 0, stopped.stderr);
  assert.equal(stopped.stdout.trim(), `${name} STOPPED`);
});

void test("stop kills the job's whole tree; stop of a finished job is a no-op", async () => {
  const marker = `cpjobtree${randomBytes(4).toString("hex")}`;
  const { job } = await client.callMethod(jobs.JobServiceService.startJob, {
    agentName: "dev",
    project: "proj",
    argv: ["/bin/sh", "-c", `sh -c 'sleep 600; :' ${marker} & sh -c 'sleep 600; :' ${marker} & wait`],
    cwd: "",
    env: {},
    holdForPlacement: false,
    jobUuid: "",
  });
  await waitFor(() => (processesWith(marker).length >= 3 ? true : undefined), { what: "the job's tree" });
  const first = await clawker(["stop", job!.name, "--format", "json"]);
  assert.equal(first.code, 0, first.stderr);
  await waitFor(() => (processesWith(marker).length === 0 ? true : undefined), { what: "the tree gone" });
  const again = await clawker(["stop", job!.name, "--format", "json"]);
  assert.equal(again.code, 0, again.stderr);
  assert.deepEqual(JSON.parse(again.stdout), JSON.parse(first.stdout), "the second stop changed nothing");
  assert.equal((JSON.parse(first.stdout) as { job: { state: string } }).job.state, "JOB_STATE_STOPPED");
});

void test("bad input: unknown job and agent names, a malformed name, malformed limits", async () => {
  const unknown = await clawker(["status", "agents/proj.dev/jobs/00000000-0000-4000-8000-000000000000"]);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /not_found/);
  const noAgent = await clawker(["status", "agents/proj.nobody/jobs/00000000-0000-4000-8000-000000000000"]);
  assert.equal(noAgent.code, 1);
  assert.match(noAgent.stderr, /no registered agent proj\.nobody/);
  const memory = await clawker(["start", "--agent", "dev", "--memory", "12Q", "--", "true"]);
  assert.equal(memory.code, 2);
  assert.match(memory.stderr, /--memory must be a positive size/);
  // The reasons travel as ErrorInfo, not only as text.
  const err = await status("jobs/123").then(
    () => assert.fail("answered"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof AdminError);
  assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
  assert.deepEqual([err.reason, err.domain], ["invalid_argument", CLAWKER_ERROR_DOMAIN]);
});

void test("without a token every JobService method is UNAUTHENTICATED", async () => {
  const raw = dial({ tls: cliTls(trust.set), target: `127.0.0.1:${listener!.port}` });
  const bare = new jobs.JobServiceClient(`127.0.0.1:${listener!.port}`, grpc.credentials.createInsecure(), {
    channelOverride: raw.getChannel(),
  });
  const code = await new Promise<number>((resolve) =>
    bare.listJobs({ agentName: "", project: "", state: 0 }, (e) => resolve(e?.code ?? 0)),
  );
  assert.equal(code, grpc.status.UNAUTHENTICATED);
  raw.close();
});
