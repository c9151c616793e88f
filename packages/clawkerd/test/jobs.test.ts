// clawker.jobs.v1.JobService as the real clawkerd process serves it over real mTLS (issue 13):
// jobs outlive their starter, watchers with backfill from the on-disk log, a stalled watcher cut
// off while another keeps up, stop kills the whole tree, bad names, a restart reports lost jobs
// FAILED, and (root + cgroup2) the first process is in the job's cgroup before the target runs.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmdirSync } from "node:fs";
import { join } from "node:path";
import tls from "node:tls";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import { credentials, status, type ServiceError } from "@grpc/grpc-js";
import { errorDetailOf, jobs } from "@clawker/proto";
import { cgroup2, cgroup2Mount, requires, root } from "../../../test/harness/preconditions.js";
import { waitFor } from "../../../test/harness/wait-for.js";
import { makeTestAgent, type TestAgent } from "./fixtures/bootstrap.js";
import { repoRoot, spawnClawkerd, type ClawkerdProcess } from "./fixtures/clawkerd-process.js";
import { processesWith } from "./fixtures/processes.js";

const watcherChild = fileURLToPath(new URL("./fixtures/job-watcher-child.ts", import.meta.url));

const S = jobs.JobState;
let agent: TestAgent;
let proc: ClawkerdProcess;
const clients: Array<{ close(): void }> = [];

/** Output kept per job: more than any test writes, so a reader that keeps up misses nothing. */
const ENV = { CLAWKERD_JOB_OUTPUT_BYTES: String(64 << 20), CLAWKERD_JOB_WATCH_STALL_MS: "3000" };

before(async () => {
  agent = await makeTestAgent();
  proc = spawnClawkerd(agent, { env: ENV });
  await proc.waitListening();
});

after(async () => {
  for (const c of clients) c.close();
  await proc?.kill();
  await agent?.close();
});

/** The control plane's client credentials towards the test's clawkerd. */
function cpCredentials(): ReturnType<typeof credentials.createSsl> {
  tls.DEFAULT_MIN_VERSION = "TLSv1.3";
  const set = agent.trust.set;
  return credentials.createSsl(
    Buffer.from(set.ca.certPem),
    Buffer.from(set.controlPlaneClient.keyPem),
    Buffer.from(set.controlPlaneClient.certPem),
    { checkServerIdentity: () => undefined },
  );
}

function client(address = proc.address): jobs.JobServiceClient {
  const c = new jobs.JobServiceClient(address, cpCredentials(), {
    "grpc.ssl_target_name_override": "localhost",
  });
  clients.push(c);
  return c;
}

/** JobGateService on the test's clawkerd, as the control plane calls it. */
function gateClient(): jobs.JobGateServiceClient {
  const g = new jobs.JobGateServiceClient(proc.address, cpCredentials(), {
    "grpc.ssl_target_name_override": "localhost",
  });
  clients.push(g);
  return g;
}

function call<Req, Res>(
  c: jobs.JobServiceClient,
  method: "startJob" | "stopJob" | "getJobStatus" | "listJobs",
  req: Req,
): Promise<Res> {
  return new Promise((resolve, reject) =>
    (c[method] as unknown as (r: Req, cb: (e: ServiceError | null, v: Res) => void) => void)(req, (e, v) =>
      e === null ? resolve(v) : reject(e),
    ),
  );
}

const start = (c: jobs.JobServiceClient, argv: string[]): Promise<jobs.StartJobResponse> =>
  call(c, "startJob", { agentName: "dev", project: "proj", argv, cwd: "", env: {} });
const statusOf = (c: jobs.JobServiceClient, name: string): Promise<jobs.GetJobStatusResponse> =>
  call(c, "getJobStatus", { name });

/** Reads a whole watch: the bytes, dropped counts, and how it ended. */
function watchAll(
  c: jobs.JobServiceClient,
  name: string,
): Promise<{ data: Buffer; dropped: number; error?: ServiceError }> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    let dropped = 0;
    const s = c.watchJobOutput({ name });
    s.on("data", (m: jobs.WatchJobOutputResponse) => {
      parts.push(m.data);
      dropped += Number(m.droppedBytes);
    });
    s.on("error", (error: ServiceError) => resolve({ data: Buffer.concat(parts), dropped, error }));
    s.on("end", () => resolve({ data: Buffer.concat(parts), dropped }));
  });
}

async function waitEnded(c: jobs.JobServiceClient, name: string): Promise<jobs.Job> {
  return waitFor(
    async () => {
      const { job } = await statusOf(c, name);
      return job !== undefined && job.state !== S.JOB_STATE_RUNNING ? job : undefined;
    },
    { timeoutMs: 20_000, what: `job ${name} to end` },
  );
}

void test("a job outlives its starter; two watchers started at different times both see the whole output in order", async () => {
  const starter = client();
  const script = "for i in $(seq 1 200); do echo line $i; echo err $i >&2; sleep 0.005; done";
  const { job } = await start(starter, ["/bin/sh", "-c", script]);
  assert.ok(job);
  assert.match(job.name, /^agents\/proj\.dev\/jobs\/[0-9a-f-]{36}$/);
  assert.equal(job.state, S.JOB_STATE_RUNNING);
  starter.close(); // the starter leaves: the job does not care
  const other = client();
  const early = watchAll(other, job.name);
  await waitFor(async () => ((await statusOf(other, job.name)).job!.outputBytes > 500n ? true : undefined), {
    what: "some output before the second watcher",
  });
  const late = watchAll(client(), job.name);
  const [a, b] = await Promise.all([early, late]);
  const want = Array.from({ length: 200 }, (_, i) => `line ${i + 1}`);
  for (const w of [a, b]) {
    assert.equal(w.error, undefined);
    assert.equal(w.dropped, 0);
    const lines = w.data.toString().trim().split("\n");
    assert.deepEqual(
      lines.filter((l) => l.startsWith("line")),
      want,
      "stdout in order, nothing missing",
    );
    assert.equal(lines.filter((l) => l.startsWith("err")).length, 200);
  }
  assert.deepEqual(a.data, b.data, "both watchers saw the same bytes");
  const ended = await waitEnded(other, job.name);
  assert.equal(ended.state, S.JOB_STATE_COMPLETED);
  assert.equal(ended.reason, "exited");
  assert.equal(ended.exitCode, 0);
  assert.ok(ended.endedAtUnixNanos >= ended.startedAtUnixNanos);
  // A watcher after the end gets everything kept, then the end.
  const after = await watchAll(other, job.name);
  assert.deepEqual(after.data, a.data);
});

void test("a watcher that does not read slows neither the job nor another watcher", async () => {
  const c = client();
  const { job } = await start(c, ["/bin/sh", "-c", "head -c 16777216 /dev/zero | tr '\\0' x; echo end"]);
  const stalled = c.watchJobOutput({ name: job!.name });
  stalled.pause();
  stalled.on("error", () => undefined); // cancelled below
  const reader = await watchAll(client(), job!.name);
  assert.equal(reader.error, undefined);
  assert.equal(reader.dropped, 0);
  assert.equal(reader.data.length, 16 * 1024 * 1024 + 4);
  // The job ended while the stalled watcher still had not read a byte.
  assert.equal((await waitEnded(c, job!.name)).state, S.JOB_STATE_COMPLETED);
  stalled.cancel();
});

void test("a watcher that stops reading is cut off (watcher_too_slow) while another keeps up", async (t) => {
  const c = client();
  const size = 48 << 20;
  const { job } = await start(c, ["/bin/sh", "-c", `head -c ${size} /dev/zero | tr '\\0' x`]);
  const set = agent.trust.set;
  const child = spawn(
    process.execPath,
    ["--import", "tsx", "--conditions=source", watcherChild, proc.address, job!.name],
    {
      cwd: repoRoot,
      env: {
        ...process.env,
        WATCH_CA: set.ca.certPem,
        WATCH_CERT: set.controlPlaneClient.certPem,
        WATCH_KEY: set.controlPlaneClient.keyPem,
      },
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  t.after(() => {
    child.kill("SIGCONT");
    child.kill("SIGKILL");
  });
  let out = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
  await waitFor(() => (out.includes("first") ? true : undefined), {
    timeoutMs: 30_000,
    what: "the child's first bytes",
  });
  child.kill("SIGSTOP"); // reads nothing more: its socket and HTTP/2 windows fill
  const reader = await watchAll(client(), job!.name);
  assert.equal(reader.error, undefined);
  assert.equal(reader.data.length, size, "the reading watcher got everything");
  await waitFor(() => proc.lines.find((l) => l["event"] === "watcher_cut_off" && l["job"] === job!.name), {
    timeoutMs: 30_000,
    what: "the stalled watcher cut off",
  });
  child.kill("SIGCONT");
  await waitFor(() => (out.includes("{") ? true : undefined), { timeoutMs: 30_000, what: "the child's end" });
  const end = JSON.parse(out.split("\n").find((l) => l.startsWith("{"))!) as {
    bytes: number;
    code: number;
    reason: string;
  };
  assert.equal(end.code, status.RESOURCE_EXHAUSTED);
  assert.equal(end.reason, "watcher_too_slow");
  assert.ok(end.bytes < size, `the stalled watcher got ${end.bytes} of ${size}`);
});

void test("stop sends SIGTERM to the whole tree and the job ends STOPPED; stop of a finished job is a no-op", async () => {
  const c = client();
  const marker = `jobtree${randomBytes(4).toString("hex")}`;
  // Each child's command line carries the marker ($0 of `sh -c`), so none can hide from the count.
  const script = `sh -c 'sleep 1000; :' ${marker} & sh -c 'sleep 1000; :' ${marker} & echo ready; wait`;
  const { job } = await start(c, ["/bin/sh", "-c", script]);
  await waitFor(() => (processesWith(marker).length >= 3 ? true : undefined), { what: "the job's children" });
  const stopped = await call<jobs.StopJobRequest, jobs.StopJobResponse>(c, "stopJob", {
    name: job!.name,
    graceSeconds: 5,
  });
  assert.equal(stopped.job?.state, S.JOB_STATE_STOPPED);
  assert.equal(stopped.job?.reason, "stopped");
  await waitFor(() => (processesWith(marker).length === 0 ? true : undefined), { what: "no child left" });
  const again = await call<jobs.StopJobRequest, jobs.StopJobResponse>(c, "stopJob", {
    name: job!.name,
    graceSeconds: 0,
  });
  assert.deepEqual(again.job, stopped.job);
  // A job that ignores SIGTERM gets SIGKILL after the grace.
  const stubborn = await start(c, ["/bin/sh", "-c", "trap '' TERM; echo armed; while :; do sleep 0.1; done"]);
  await waitFor(async () =>
    (await statusOf(c, stubborn.job!.name)).job!.outputBytes > 0n ? true : undefined,
  );
  const killed = await call<jobs.StopJobRequest, jobs.StopJobResponse>(c, "stopJob", {
    name: stubborn.job!.name,
    graceSeconds: 1,
  });
  assert.equal(killed.job?.state, S.JOB_STATE_STOPPED);
});

void test("FAILED covers a non-zero exit and a program that cannot start; ListJobs filters by state", async () => {
  const c = client();
  const bad = await start(c, ["/bin/sh", "-c", "echo oops; exit 3"]);
  const failed = await waitEnded(c, bad.job!.name);
  assert.deepEqual([failed.state, failed.reason, failed.exitCode], [S.JOB_STATE_FAILED, "exit_non_zero", 3]);
  const missing = await start(c, ["/nonexistent/program"]);
  const nostart = await waitEnded(c, missing.job!.name);
  assert.deepEqual([nostart.state, nostart.reason], [S.JOB_STATE_FAILED, "spawn_failed"]);
  const list = await call<jobs.ListJobsRequest, jobs.ListJobsResponse>(c, "listJobs", {
    agentName: "",
    project: "",
    state: S.JOB_STATE_FAILED,
  });
  const names = list.jobs.map((j) => j.name);
  assert.ok(names.includes(bad.job!.name) && names.includes(missing.job!.name));
  assert.ok(list.jobs.every((j) => j.state === S.JOB_STATE_FAILED));
});

void test("bad input: unknown and malformed names are NOT_FOUND, empty argv and another agent INVALID_ARGUMENT", async () => {
  const c = client();
  for (const name of [
    "agents/proj.dev/jobs/00000000-0000-4000-8000-000000000000",
    "nonsense",
    "agents/x/jobs/../../etc",
  ]) {
    const err = await statusOf(c, name).then(
      () => assert.fail("answered"),
      (e: ServiceError) => e,
    );
    assert.equal(err.code, status.NOT_FOUND, name);
    assert.equal(errorDetailOf(err)?.reason, "not_found");
  }
  const empty = await start(c, []).then(
    () => assert.fail("started"),
    (e: ServiceError) => e,
  );
  assert.equal(empty.code, status.INVALID_ARGUMENT);
  const other = await call(c, "startJob", {
    agentName: "other",
    project: "proj",
    argv: ["true"],
    cwd: "",
    env: {},
  }).then(
    () => assert.fail("started"),
    (e: ServiceError) => e,
  );
  assert.equal(other.code, status.INVALID_ARGUMENT);
  assert.equal(errorDetailOf(other)?.reason, "invalid_argument");
});

void test("a clawkerd restart reports the jobs it lost as FAILED (clawkerd_restarted), output still readable", async (t) => {
  const own = await makeTestAgent({ trust: agent.trust });
  t.after(() => own.close());
  const marker = `lostjob${randomBytes(4).toString("hex")}`;
  const first = spawnClawkerd(own, { env: ENV });
  await first.waitListening();
  const c1 = client(first.address);
  const { job } = await start(c1, ["/bin/sh", "-c", `echo before; sleep 1000; : ${marker}`]);
  await waitFor(async () => ((await statusOf(c1, job!.name)).job!.outputBytes > 0n ? true : undefined));
  first.child.kill("SIGKILL");
  await first.exited;
  // Outside a container its process group outlives it; end it as the container's end would.
  for (const pid of processesWith(marker)) process.kill(-pid, "SIGKILL");
  const second = spawnClawkerd(own, { env: ENV });
  t.after(() => second.kill());
  await second.waitListening();
  const c2 = client(second.address);
  const { job: lost } = await statusOf(c2, job!.name);
  assert.equal(lost?.state, S.JOB_STATE_FAILED);
  assert.equal(lost?.reason, "clawkerd_restarted");
  assert.equal((await watchAll(c2, job!.name)).data.toString(), "before\n");
});

void test("the job's first process is in the job's cgroup before the target runs (root, cgroup2)", async (t) => {
  if (!requires(t, root, cgroup2)) return;
  const parent = join(cgroup2Mount()!, `clawker-jobs-test-${randomBytes(4).toString("hex")}`);
  mkdirSync(parent);
  t.after(() => rmdirSync(parent));
  const own = await makeTestAgent({ trust: agent.trust });
  t.after(() => own.close());
  const d = spawnClawkerd(own, { env: { ...ENV, CLAWKERD_JOB_CGROUP: parent } });
  t.after(() => d.kill());
  await d.waitListening();
  const c = client(d.address);
  const { job } = await call<jobs.StartJobRequest, jobs.StartJobResponse>(c, "startJob", {
    agentName: "dev",
    project: "proj",
    argv: ["cat", "/proc/self/cgroup"],
    cwd: "",
    env: {},
    holdForPlacement: false,
    jobUuid: "",
    limits: {
      cpuMillis: 100,
      memoryMaxBytes: 64n << 20n,
      ioReadBps: 0n,
      ioWriteBps: 0n,
      ioReadIops: 0,
      ioWriteIops: 0,
      pidsMax: 0,
    },
  });
  await waitEnded(c, job!.name);
  const uuid = job!.name.split("/").pop()!;
  const out = (await watchAll(c, job!.name)).data.toString();
  assert.match(out, new RegExp(`^0::.*/${parent.split("/").pop()}/job-${uuid}$`, "m"), out);
  // Limits are enforced only when the host delegates the controllers; otherwise the job says why.
  if (!job!.isLimited) assert.match(job!.limitsNote, /controllers not delegated|cannot write/);
});

void test("a held job waits at its gate for the control plane: nothing runs before OpenJobGate, then the target does; run=false ends it FAILED", async () => {
  const c = client();
  const gate = gateClient();
  const open = (req: jobs.OpenJobGateRequest): Promise<jobs.OpenJobGateResponse> =>
    new Promise((resolve, reject) => gate.openJobGate(req, (e, v) => (e === null ? resolve(v) : reject(e))));
  const held = await call<jobs.StartJobRequest, jobs.StartJobResponse>(c, "startJob", {
    agentName: "dev",
    project: "proj",
    argv: ["/bin/sh", "-c", "echo ran"],
    cwd: "",
    env: {},
    holdForPlacement: true,
    jobUuid: "",
  });
  const name = held.job!.name;
  assert.ok(held.heldPid > 0, "the gate's pid is answered");
  assert.equal(held.job!.state, S.JOB_STATE_RUNNING);
  assert.match(held.job!.limitsNote, /awaiting placement/);
  // The held process is the gate (the shell's, or the self-dropping perl spare), not the target:
  // nothing of the target has run.
  const cmdline = readFileSync(`/proc/${held.heldPid}/cmdline`, "utf8");
  assert.match(cmdline, /IFS= read -r _|my \$l = <STDIN>/);
  assert.equal((await statusOf(c, name)).job!.outputBytes, 0n, "the target wrote nothing yet");
  // A spare gate (when one was ready) waits as clawkerd's user, or (perl's) dropped to the jobs'
  // user with no capabilities left: the agent's processes cannot reach either (spare-gate.test.ts).
  const started = await waitFor(() =>
    proc.lines.find((l) => l["event"] === "job_started" && l["job"] === name),
  );
  const st = (): string => readFileSync(`/proc/${held.heldPid}/status`, "utf8");
  if (started["spareGate"] === true && cmdline.startsWith("/usr/bin/perl")) {
    // Its first statement drops; a spare taken just after it started may not have run it yet.
    await waitFor(() => /^Uid:\s+(\d+)\s+\1\s+\1\s+\1$/m.test(st()) && !/^Uid:\s+0\s/m.test(st()), {
      what: "the perl spare dropped",
    });
    assert.match(st(), /^CapPrm:\s+0+$/m);
  } else if (started["spareGate"] === true) {
    assert.match(st(), new RegExp(`^Uid:\\s+${process.getuid!()}\\s`, "m"));
  }
  const opened = await open({ name, run: true, isLimited: true, limitsNote: "" });
  assert.equal(opened.job!.isLimited, true);
  const ended = await waitFor(
    async () => {
      const s = await statusOf(c, name);
      return s.job!.state === S.JOB_STATE_RUNNING ? undefined : s.job!;
    },
    { timeoutMs: 20_000, what: "the opened job to end" },
  );
  assert.equal(ended.state, S.JOB_STATE_COMPLETED);
  assert.equal((await watchAll(c, name)).data.toString(), "ran\n");
  // A gate opens once.
  await assert.rejects(open({ name, run: true, isLimited: false, limitsNote: "" }), {
    code: status.INVALID_ARGUMENT,
  });

  const refused = await call<jobs.StartJobRequest, jobs.StartJobResponse>(c, "startJob", {
    agentName: "dev",
    project: "proj",
    argv: ["/bin/sh", "-c", "echo ran"],
    cwd: "",
    env: {},
    holdForPlacement: true,
    jobUuid: "",
  });
  const closed = await open({
    name: refused.job!.name,
    run: false,
    isLimited: false,
    limitsNote: "no groups",
  });
  assert.equal(closed.job!.state, S.JOB_STATE_FAILED);
  assert.equal(closed.job!.reason, "cgroup_placement_failed");
  assert.equal((await watchAll(c, refused.job!.name)).data.length, 0, "the target never ran");

  // The control plane names a held job's uuid (it makes the groups meanwhile): taken once, well formed.
  const uuid = randomUUID();
  const heldReq = (jobUuid: string): jobs.StartJobRequest => ({
    agentName: "dev",
    project: "proj",
    argv: ["/bin/true"],
    cwd: "",
    env: {},
    holdForPlacement: true,
    jobUuid,
  });
  const named = await call<jobs.StartJobRequest, jobs.StartJobResponse>(c, "startJob", heldReq(uuid));
  assert.equal(named.job!.name, `agents/proj.dev/jobs/${uuid}`);
  for (const bad of [uuid, uuid.toUpperCase(), "../../etc", "undefined"]) {
    const err = await call<jobs.StartJobRequest, jobs.StartJobResponse>(c, "startJob", heldReq(bad)).then(
      () => assert.fail(`uuid ${bad} was taken`),
      (e: ServiceError) => e,
    );
    assert.equal(err.code, status.INVALID_ARGUMENT, bad);
  }
  await open({ name: named.job!.name, run: false, isLimited: false, limitsNote: "test" });
});

void test("a spare reserved for the control plane runs its job at once, placed as the start says; a new reservation or a job that cannot use it ends it having run nothing", async () => {
  const c = client();
  const gate = gateClient();
  const reserve = (jobUuid: string): Promise<number> =>
    new Promise((resolve, reject) =>
      gate.reserveSpareGate({ jobUuid }, (e, v) => (e === null ? resolve(v.pid) : reject(e))),
    );
  const placedStart = (
    jobUuid: string,
    argv: string[],
    env: Record<string, string> = {},
  ): Promise<jobs.StartJobResponse> =>
    call(c, "startJob", {
      agentName: "dev",
      project: "proj",
      argv,
      cwd: "",
      env,
      holdForPlacement: true,
      jobUuid,
      sparePlacement: { isLimited: false, limitsNote: "no v1 blkio controller" },
    });
  const exited = (pid: number): Promise<true> =>
    waitFor(() => (existsSync(`/proc/${pid}`) ? undefined : true), { what: `spare ${pid} to exit` });

  // The reserved spare is the job's first process: no hold, the target runs at once.
  const uuid = randomUUID();
  const pid = await reserve(uuid);
  assert.ok(pid > 0, "a waiting spare's pid");
  assert.match(
    readFileSync(`/proc/${pid}/cmdline`, "utf8"),
    /my \$l = <STDIN>|__clawker_line/,
    "a spare gate",
  );
  const ran = await placedStart(uuid, ["/bin/sh", "-c", "echo $$"]);
  assert.equal(ran.heldPid, 0, "not held");
  assert.equal(ran.job!.name, `agents/proj.dev/jobs/${uuid}`);
  assert.equal(ran.job!.isLimited, false);
  assert.equal(ran.job!.limitsNote, "no v1 blkio controller", "the placement the start carried");
  assert.equal((await waitEnded(c, ran.job!.name)).state, S.JOB_STATE_COMPLETED);
  assert.equal(
    (await watchAll(c, ran.job!.name)).data.toString(),
    `${pid}\n`,
    "the target ran as the spare's pid",
  );

  // A second reservation ends the first reserved spare, which runs nothing; a start naming it is held.
  const first = randomUUID();
  const firstPid = await reserve(first);
  const second = randomUUID();
  const secondPid = await reserve(second);
  assert.notEqual(secondPid, firstPid);
  await exited(firstPid);
  const held = await placedStart(first, ["/bin/true"]);
  assert.ok(held.heldPid > 0 && held.heldPid !== firstPid, "held at a gate of its own");
  assert.match(held.job!.limitsNote, /awaiting placement/);
  await new Promise<jobs.OpenJobGateResponse>((resolve, reject) =>
    gate.openJobGate({ name: held.job!.name, run: false, isLimited: false, limitsNote: "test" }, (e, v) =>
      e === null ? resolve(v) : reject(e),
    ),
  );

  // As root, a job whose environment would steer the drop cannot use a spare: the reserved one
  // ends, the job is held at a gate of its own.
  const env: Record<string, string> = process.getuid?.() === 0 ? { LD_PRELOAD: "/tmp/x.so" } : {};
  const steering = await placedStart(second, ["/bin/true"], env);
  if (process.getuid?.() === 0) {
    await exited(secondPid);
    assert.ok(steering.heldPid > 0 && steering.heldPid !== secondPid);
    const started = await waitFor(() =>
      proc.lines.find((l) => l["event"] === "job_started" && l["job"] === steering.job!.name),
    );
    assert.equal(started["spareGate"], false, "a gate of its own");
  } else assert.equal(steering.heldPid, 0, "the reserved spare ran it");
  if (steering.heldPid !== 0)
    await new Promise<jobs.OpenJobGateResponse>((resolve, reject) =>
      gate.openJobGate(
        { name: steering.job!.name, run: false, isLimited: false, limitsNote: "test" },
        (e, v) => (e === null ? resolve(v) : reject(e)),
      ),
    );

  // The uuid is checked as a held job's: well formed and new.
  for (const bad of [uuid, "../../etc", ""]) {
    const err = await reserve(bad).then(
      () => assert.fail(`uuid ${JSON.stringify(bad)} was reserved`),
      (e: ServiceError) => e,
    );
    assert.equal(err.code, status.INVALID_ARGUMENT, bad);
  }
});
