// An agent container's usage from its cgroup v2 group (a pure v2 host's `controlplane agents
// --stats`), for real: a stand-in "container" is a v2 group named by a container id with a real
// process in it, found through that process's /proc/<pid>/cgroup; a process whose group does not
// name the container is never read as it. Then every file the reader parses, in the kernel's
// formats, in a directory of our own (this hybrid host's v2 hierarchy has no controllers).
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import pino from "pino";
import { cgroup2, cgroup2Mount, requires, root } from "../../../test/harness/preconditions.js";
import { ContainerUsageV2, v2Usage } from "../src/jobs/cgroups-v2.js";

const log = pino({ level: "silent" });

/**
 * Removes an emptied cgroup: the kernel lets go of a group whose last task just exited a moment
 * later (rmdir answers EBUSY until then; a loaded CI run hit it), so EBUSY is tried again.
 */
async function removeGroup(path: string): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      rmdirSync(path);
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EBUSY" || attempt >= 250) throw err;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

function exited(p: ChildProcess): Promise<void> {
  return p.exitCode !== null || p.signalCode !== null
    ? Promise.resolve()
    : new Promise((resolve) => p.once("exit", () => resolve()));
}

void test("a container's usage is read from its own v2 group, found by its init process", async (t) => {
  if (!requires(t, root, cgroup2)) return;
  const mount = cgroup2Mount()!;
  const id = randomBytes(32).toString("hex");
  const dir = join(mount, `clawker-usage-test-${randomBytes(4).toString("hex")}`, `docker-${id}.scope`);
  mkdirSync(dir, { recursive: true });
  // Spends some CPU inside the group, then waits: its usage_usec is above zero.
  const init = spawn("sh", ["-c", "read line; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 300"], {
    stdio: ["pipe", "ignore", "ignore"],
  });
  const outsider = spawn("sleep", ["300"], { stdio: "ignore" });
  t.after(async () => {
    // Every task of the group, a child of the shell's included (cgroup.kill: Linux 5.14+).
    try {
      writeFileSync(join(dir, "cgroup.kill"), "1");
    } catch {
      // An older kernel: the shell alone, below.
    }
    init.kill("SIGKILL");
    outsider.kill("SIGKILL");
    await Promise.all([exited(init), exited(outsider)]);
    await removeGroup(dir);
    await removeGroup(join(dir, ".."));
  });
  writeFileSync(join(dir, "cgroup.procs"), String(init.pid));
  init.stdin.write("go\n");
  const pids = new Map([
    [id, init.pid!],
    ["other", outsider.pid!],
  ]);
  const reader = new ContainerUsageV2({
    initPid: (c) => Promise.resolve(pids.get(c) ?? 0),
    log,
    cgroup2: mount,
  });

  assert.equal(await reader.groupOf(id), dir);
  let usage = await reader.usage(id);
  for (let i = 0; i < 200 && (usage?.stats.cpuUsageUsec ?? 0n) === 0n; i++) {
    await new Promise((r) => setTimeout(r, 10));
    usage = await reader.usage(id);
  }
  assert.ok(usage !== undefined);
  assert.ok(usage.stats.cpuUsageUsec > 0n, "the group's own CPU time");
  const cpuStat = readFileSync(join(dir, "cpu.stat"), "utf8");
  assert.match(cpuStat, /^usage_usec \d+$/m);
  // Another process's group does not name the container; no pid (not running) finds nothing.
  pids.set(id, outsider.pid!);
  assert.equal(await reader.usage(id), undefined, "a group that does not name the container is not its");
  assert.equal(await reader.usage("absent"), undefined);
});

void test("v2Usage reads every counter and limit in the kernel's formats; absent files read as zero", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "cgroup-v2-usage-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const files: Record<string, string> = {
    "cpu.stat":
      "usage_usec 5000123\nuser_usec 4000000\nsystem_usec 1000123\nnr_periods 40\nnr_throttled 7\nthrottled_usec 91000\nnr_bursts 0\nburst_usec 0\n",
    "cpu.max": "150000 100000\n",
    "memory.current": "73400320\n",
    "memory.peak": "104857600\n",
    "memory.max": "268435456\n",
    "memory.events": "low 0\nhigh 12\nmax 3\noom 2\noom_kill 1\noom_group_kill 0\n",
    "io.stat":
      "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n259:0 rbytes=100 wbytes=200 rios=3 wios=4 dbytes=0 dios=0\n",
    "pids.current": "9\n",
    "pids.max": "max\n",
  };
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  const u = v2Usage(dir);
  assert.deepEqual(u.stats, {
    cpuUsageUsec: 5000123n,
    cpuUserUsec: 4000000n,
    cpuSystemUsec: 1000123n,
    cpuNrPeriods: 40n,
    cpuNrThrottled: 7n,
    cpuThrottledUsec: 91000n,
    memoryCurrentBytes: 73400320n,
    memoryPeakBytes: 104857600n,
    memoryEvents: { max: 3n, oom: 2n, oom_kill: 1n },
    ioReadBytes: 4196n,
    ioWriteBytes: 8392n,
    ioReadOps: 4n,
    ioWriteOps: 6n,
    pidsCurrent: 9n,
  });
  assert.equal(u.cpuLimitMillis, 1500);
  assert.equal(u.memoryLimitBytes, 268435456);
  assert.equal(u.pidsLimit, 0, "pids.max `max` is no limit");

  writeFileSync(join(dir, "cpu.max"), "max 100000\n");
  writeFileSync(join(dir, "memory.max"), "max\n");
  writeFileSync(join(dir, "pids.max"), "512\n");
  for (const name of ["memory.peak", "io.stat", "memory.events"]) rmSync(join(dir, name));
  const v = v2Usage(dir);
  assert.equal(v.cpuLimitMillis, 0, "cpu.max `max` is no limit");
  assert.equal(v.memoryLimitBytes, 0);
  assert.equal(v.pidsLimit, 512);
  assert.equal(v.stats.memoryPeakBytes, 0n, "memory.peak is absent before Linux 5.19");
  assert.equal(v.stats.ioReadBytes, 0n);
  assert.deepEqual(v.stats.memoryEvents, { max: 0n, oom: 0n, oom_kill: 0n });
});
