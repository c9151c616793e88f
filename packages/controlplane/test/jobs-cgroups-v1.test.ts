// The control plane's per-job v1 cgroups on this (hybrid) host, for real: a stand-in "container"
// is a group per v1 controller named by a container id, with real processes in it. Placement
// writes the limits before the process enters, finds the process only inside the container's own
// group (a process elsewhere is never moved), stats read back, and the reaper removes a job's
// groups once they are empty and leftovers of a previous run. Needs root and v1 controllers.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import pino from "pino";
import { requires, root, type Requirement } from "../../../test/harness/preconditions.js";
import { waitFor } from "../../../test/harness/wait-for.js";
import { JobCgroupsV1, v1Mounts, V1_CONTROLLERS, type ContainerGroups } from "../src/jobs/cgroups-v1.js";
import { JobPlacement } from "../src/jobs/placement.js";

const mounts = v1Mounts(readFileSync("/proc/self/mounts", "utf8"));
const v1: Requirement = {
  name: "cgroup v1 controllers",
  check: () =>
    V1_CONTROLLERS.every((c) => mounts[c] !== undefined)
      ? undefined
      : "needs the v1 cpu, cpuacct, memory, blkio and pids controllers mounted (a hybrid host)",
};

function sleeper(t: TestContext): ChildProcess {
  const p = spawn("sleep", ["300"], { stdio: "ignore" });
  t.after(() => p.kill("SIGKILL"));
  return p;
}

function exited(p: ChildProcess): Promise<void> {
  return p.exitCode !== null || p.signalCode !== null
    ? Promise.resolve()
    : new Promise((resolve) => p.once("exit", () => resolve()));
}

/** A stand-in container: `<mount>/<parent>/<id>` in every v1 controller, `init` inside. */
function fakeContainer(t: TestContext): { id: string; dirs: Record<string, string>; init: ChildProcess } {
  const parent = `clawker-jobs-test-${randomBytes(4).toString("hex")}`;
  const id = randomBytes(32).toString("hex");
  const dirs: Record<string, string> = {};
  for (const c of V1_CONTROLLERS) {
    dirs[c] = join(mounts[c]!, parent, id);
    mkdirSync(dirs[c], { recursive: true });
  }
  writeFileSync(join(dirs["memory"]!, "memory.limit_in_bytes"), String(256 << 20));
  const init = sleeper(t);
  for (const d of new Set(Object.values(dirs))) writeFileSync(join(d, "cgroup.procs"), String(init.pid));
  t.after(async () => {
    init.kill("SIGKILL");
    await exited(init);
    for (const d of new Set(Object.values(dirs))) {
      for (const sub of [d, join(d, "..")]) {
        try {
          rmdirSync(sub);
        } catch {
          // a job group left by a failed assertion: the next line reports it
        }
      }
    }
  });
  return { id, dirs, init };
}

function cgroupOf(pid: number, controller: string): string {
  const line = readFileSync(`/proc/${pid}/cgroup`, "utf8")
    .split("\n")
    .find((l) => l.split(":")[1]?.split(",").includes(controller));
  return line?.split(":")[2] ?? "";
}

function inContainer(dirs: Record<string, string>, p: ChildProcess): void {
  for (const d of new Set(Object.values(dirs))) writeFileSync(join(d, "cgroup.procs"), String(p.pid));
}

void test("a held job is placed in v1 groups with its limits, stats read back, its groups reaped after it ends", async (t) => {
  if (!requires(t, root, v1)) return;
  const c = fakeContainer(t);
  const log = pino({ level: "silent" });
  const placement = new JobPlacement({
    initPid: () => Promise.resolve(c.init.pid!),
    registry: {
      list: () => [
        {
          containerId: c.id,
          agentName: "dev",
          project: "p",
          certThumbprint: "",
          registeredAtUnix: 0,
          lastSeenUnix: 0,
        },
      ],
    },
    // No Session: the reaper does not need clawkerd's word for a job nobody can ask about.
    dialer: { readyChannel: () => undefined },
    log,
  });
  t.after(() => placement.close());
  const groups = await placement.groupsOf(c.id);
  assert.ok(groups !== undefined, "the container's groups are found from its init process");
  assert.equal(groups.dirs.memory, c.dirs["memory"]);
  assert.equal(groups.nsLevel, 0, "a host process: one pid namespace");

  // A process outside the container is never moved, whatever pid clawkerd names.
  const outsider = sleeper(t);
  const before = cgroupOf(outsider.pid!, "memory");
  const refused = placement.place(groups, randomUUID(), outsider.pid!, { ...NO_LIMITS, cpuMillis: 100 });
  assert.equal(refused.isLimited, false);
  assert.match(refused.note, /not found in the agent's cgroup/);
  assert.equal(cgroupOf(outsider.pid!, "memory"), before, "the outsider stayed where it was");
  assert.deepEqual(new JobCgroupsV1().jobIds(groups), [], "the groups made for it meanwhile are gone");

  const gate = sleeper(t);
  inContainer(c.dirs, gate);
  const uuid = randomUUID();
  const placed = placement.place(groups, uuid, gate.pid!, {
    ...NO_LIMITS,
    cpuMillis: 100,
    memoryMaxBytes: 64n << 20n,
    ioWriteBps: 5n << 20n,
    pidsMax: 20,
  });
  assert.deepEqual(placed, { isLimited: true, note: "" });
  const job = (ctl: string, file: string): string =>
    readFileSync(join(c.dirs[ctl]!, `job-${uuid}`, file), "utf8").trim();
  assert.equal(job("cpu", "cpu.cfs_quota_us"), "10000");
  assert.equal(job("cpu", "cpu.cfs_period_us"), "100000");
  assert.equal(job("memory", "memory.limit_in_bytes"), String(64 << 20));
  assert.equal(job("memory", "memory.soft_limit_in_bytes"), String(48 << 20), "soft limit at 75%");
  if (existsSync(join(c.dirs["memory"]!, `job-${uuid}`, "memory.memsw.limit_in_bytes")))
    assert.equal(job("memory", "memory.memsw.limit_in_bytes"), String(64 << 20), "no swap");
  assert.match(job("blkio", "blkio.throttle.write_bps_device"), /^\d+:\d+ 5242880$/m);
  assert.equal(job("pids", "pids.max"), "20");
  for (const ctl of V1_CONTROLLERS)
    assert.ok(
      cgroupOf(gate.pid!, ctl).endsWith(`/${c.id}/job-${uuid}`),
      `${ctl}: ${cgroupOf(gate.pid!, ctl)}`,
    );

  const stats = placement.stats(c.id, uuid);
  assert.ok(stats !== undefined);
  assert.equal(stats.pidsCurrent, 1n);
  assert.ok(stats.memoryCurrentBytes >= 0n);
  const usage = await placement.usage(c.id);
  assert.equal(usage?.memoryLimitBytes, 256 << 20, "the container's own limit");
  assert.equal(usage?.stats.pidsCurrent, 2n, "init and the job, counted hierarchically");

  // While the job's process lives its groups stay; once it is gone they go.
  await placement.reap();
  assert.ok(existsSync(join(c.dirs["memory"]!, `job-${uuid}`)));
  gate.kill("SIGKILL");
  await exited(gate);
  await placement.reap();
  for (const ctl of V1_CONTROLLERS) assert.ok(!existsSync(join(c.dirs[ctl]!, `job-${uuid}`)), ctl);

  // Groups a previous control plane left behind are found and removed too.
  const left = randomUUID();
  for (const ctl of ["memory", "cpu"]) mkdirSync(join(c.dirs[ctl]!, `job-${left}`));
  await new JobPlacement({
    initPid: () => Promise.resolve(c.init.pid!),
    registry: { list: () => [{ containerId: c.id, agentName: "dev", project: "p" } as never] },
    dialer: { readyChannel: () => undefined },
    log,
  }).reap();
  assert.ok(!existsSync(join(c.dirs["memory"]!, `job-${left}`)), "leftover reaped");
});

void test("a container id that is not in the init process's cgroup path is not the agent's: no groups", async (t) => {
  if (!requires(t, root, v1)) return;
  const c = fakeContainer(t);
  const placement = new JobPlacement({
    initPid: () => Promise.resolve(c.init.pid!),
    registry: { list: () => [] },
    dialer: { readyChannel: () => undefined },
    log: pino({ level: "silent" }),
  });
  assert.equal(await placement.groupsOf(randomBytes(32).toString("hex")), undefined);
  assert.equal(new JobCgroupsV1().containerGroups(0), undefined);
});

const NO_LIMITS = {
  cpuMillis: 0,
  memoryMaxBytes: 0n,
  ioReadBps: 0n,
  ioWriteBps: 0n,
  ioReadIops: 0,
  ioWriteIops: 0,
  pidsMax: 0,
};

/** A JobPlacement for the stand-in container `c` (closed after the test) and the container's groups. */
async function placementFor(
  t: TestContext,
  c: ReturnType<typeof fakeContainer>,
  spareAheadDelayMs: number,
): Promise<{ placement: JobPlacement; groups: ContainerGroups }> {
  const placement = new JobPlacement({
    initPid: () => Promise.resolve(c.init.pid!),
    registry: { list: () => [] },
    dialer: { readyChannel: () => undefined },
    log: pino({ level: "silent" }),
    spareAheadDelayMs,
  });
  t.after(() => placement.close());
  const groups = await placement.groupsOf(c.id);
  assert.ok(groups !== undefined);
  return { placement, groups };
}

void test("a spare is reserved as soon as the asking job's first output went out, not only after the delay", async (t) => {
  if (!requires(t, root, v1)) return;
  const c = fakeContainer(t);
  // Far beyond the test's wait: only firstOutput() can start the reservation in time.
  const { placement, groups } = await placementFor(t, c, 600_000);
  const spare = sleeper(t);
  inContainer(c.dirs, spare);
  let asked = 0;
  placement.reserveSoon(
    c.id,
    groups,
    () => {
      asked++;
      return Promise.resolve(spare.pid!);
    },
    "job-a",
  );
  placement.firstOutput("job-b");
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(asked, 0, "another job's output starts nothing");
  placement.firstOutput("job-a");
  const r = await waitFor(() => placement.takeReserved(c.id), { timeoutMs: 10_000, what: "the reservation" });
  assert.equal(asked, 1);
  for (const ctl of V1_CONTROLLERS)
    assert.ok(cgroupOf(spare.pid!, ctl).endsWith(`/${c.id}/job-${r.uuid}`), ctl);
  placement.firstOutput("job-a");
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(asked, 1, "once");
  spare.kill("SIGKILL");
  await exited(spare);
  placement.abandon(groups, r.uuid);
  assert.deepEqual(new JobCgroupsV1().jobIds(groups), []);
});

void test("a spare reserved ahead is moved into a new job's groups only when it is in the container; limits are written when its job comes", async (t) => {
  if (!requires(t, root, v1)) return;
  const c = fakeContainer(t);
  const { placement, groups } = await placementFor(t, c, 0);
  const cgroups = new JobCgroupsV1();

  // clawkerd names a pid outside the container: nothing is moved, the groups made for it go.
  const outsider = sleeper(t);
  const before = cgroupOf(outsider.pid!, "memory");
  let asked = "";
  const settled = new Promise<void>((resolve) =>
    placement.reserveSoon(c.id, groups, (uuid) => {
      asked = uuid;
      assert.deepEqual(cgroups.jobIds(groups), [uuid], "its groups are made before clawkerd is asked");
      resolve();
      return Promise.resolve(outsider.pid!);
    }),
  );
  await settled;
  await waitFor(() => (cgroups.jobIds(groups).length === 0 ? true : undefined), { what: "groups removed" });
  assert.equal(cgroupOf(outsider.pid!, "memory"), before, "the outsider stayed where it was");
  assert.equal(placement.takeReserved(c.id), undefined, "no reservation");
  assert.notEqual(asked, "");

  // The container's own spare is moved into the job's groups, still without limits.
  const spare = sleeper(t);
  inContainer(c.dirs, spare);
  placement.reserveSoon(c.id, groups, () => Promise.resolve(spare.pid!));
  const r = await waitFor(() => placement.takeReserved(c.id), { what: "the reservation" });
  for (const ctl of V1_CONTROLLERS)
    assert.ok(cgroupOf(spare.pid!, ctl).endsWith(`/${c.id}/job-${r.uuid}`), ctl);
  const quota = (): string =>
    readFileSync(join(c.dirs["cpu"]!, `job-${r.uuid}`, "cpu.cfs_quota_us"), "utf8").trim();
  assert.equal(quota(), "-1", "no limit while it waits");
  const { placed } = placement.limitReserved(r, { ...NO_LIMITS, cpuMillis: 200, pidsMax: 10 });
  assert.deepEqual(placed, { isLimited: true, note: "" });
  assert.equal(quota(), "20000");
  assert.equal(placement.takeReserved(c.id), undefined, "handed over once");
  spare.kill("SIGKILL");
  await exited(spare);
  assert.equal(placement.removeIfEmpty(c.id, r.uuid), false, "not the reaper's before its job ran");
  placement.ran(r.uuid);
  assert.equal(placement.removeIfEmpty(c.id, r.uuid), true, "the reaper's once its job ran");
  assert.deepEqual(cgroups.jobIds(groups), []);
});
