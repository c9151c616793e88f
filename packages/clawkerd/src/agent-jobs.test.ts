// Job limits against the agent's own (table), agentLimitsOf on this host, and when a start is logged.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { AgentJobs, checkWithinAgent, NO_LIMITS } from "./agent-jobs.js";
import { ClawkerdError } from "./errors.js";
import { agentLimitsOf, JobCgroups } from "./job-cgroup.js";
import { createLogger } from "./log.js";

void test("a job may not ask for more CPU or memory than its agent has", () => {
  const agent = { cpuMillis: 500, memoryMaxBytes: 256 << 20 };
  const ok = [NO_LIMITS, { ...NO_LIMITS, cpuMillis: 500 }, { ...NO_LIMITS, memoryMaxBytes: 128 << 20 }];
  for (const l of ok) assert.doesNotThrow(() => checkWithinAgent(l, agent));
  const above: Array<[typeof NO_LIMITS, RegExp]> = [
    [{ ...NO_LIMITS, cpuMillis: 1000 }, /cpu limit 1 CPUs is above the agent's 0\.5/],
    [
      { ...NO_LIMITS, memoryMaxBytes: 512 << 20 },
      /memory limit 536870912 bytes is above the agent's 268435456/,
    ],
  ];
  for (const [l, message] of above) {
    assert.throws(
      () => checkWithinAgent(l, agent),
      (e: unknown) => e instanceof ClawkerdError && e.reason === "invalid_request" && message.test(e.message),
    );
  }
  // An agent without limits of its own (0) allows anything.
  assert.doesNotThrow(() =>
    checkWithinAgent({ ...NO_LIMITS, cpuMillis: 64_000 }, { cpuMillis: 0, memoryMaxBytes: 0 }),
  );
});

void test("agentLimitsOf reads a number or 0 for each, never NaN", () => {
  const l = agentLimitsOf();
  assert.ok(Number.isFinite(l.cpuMillis) && l.cpuMillis >= 0);
  assert.ok(Number.isFinite(l.memoryMaxBytes) && l.memoryMaxBytes >= 0);
});

/** A loaded job table in a temp state dir (no cgroups), closed and removed after the test. */
function jobTable(t: TestContext, onLine: (line: string) => void = () => undefined): AgentJobs {
  const dir = mkdtempSync(join(tmpdir(), "agent-jobs-"));
  const table = new AgentJobs({
    agent: "proj.dev",
    stateDir: dir,
    cgroups: new JobCgroups(undefined, "none in this test"),
    log: createLogger("info", onLine),
    baseEnv: { PATH: process.env["PATH"] ?? "/usr/bin:/bin" },
    runAs: { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 },
  });
  t.after(async () => {
    await table.close();
    rmSync(dir, { recursive: true, force: true });
  });
  table.load();
  return table;
}

void test("job_started is logged after start() has answered, not before: its write never delays the answer", async (t) => {
  const lines: Array<Record<string, unknown>> = [];
  const table = jobTable(t, (line) => lines.push(JSON.parse(line) as Record<string, unknown>));
  const started = (): Record<string, unknown> | undefined => lines.find((l) => l["event"] === "job_started");
  const { record } = await table.start({ argv: ["true"], cwd: "", env: {}, limits: NO_LIMITS });
  assert.equal(started(), undefined, "not yet logged when start() answered");
  await new Promise(setImmediate);
  assert.equal(started()?.["job"], record.name);
});

void test("a finished job keeps its record and output files, not its in-memory output buffer", async (t) => {
  setFlagsFromString("--expose-gc");
  const gc = runInNewContext("gc") as () => void;
  const table = jobTable(t);
  gc();
  const before = process.memoryUsage().arrayBuffers;
  // Eight jobs of 1 MiB of output each: each filled its 1 MiB buffer on the way to the files.
  const names: string[] = [];
  for (let i = 0; i < 8; i++) {
    const argv = ["head", "-c", String(1 << 20), "/dev/zero"];
    const { record } = await table.start({ argv, cwd: "", env: {}, limits: NO_LIMITS });
    names.push(record.name);
  }
  // Each watcher follows its job's output to the end, then the record is written.
  const read = async (name: string): Promise<number> => {
    let bytes = 0;
    for await (const ev of table.watch(name)) bytes += ev.data.length;
    return bytes;
  };
  for (const name of names) {
    assert.equal(await read(name), 1 << 20);
    while (table.get(name).state === "running") await new Promise((r) => setTimeout(r, 5));
    assert.equal(table.get(name).state, "completed");
  }
  // V8 frees array buffers' memory on a background sweeper after a collection: under load the
  // count lags, so it is read again (a while) until it settles. What stays referenced never drops.
  let held = Infinity;
  for (let i = 0; i < 50 && held >= 2 << 20; i++) {
    await new Promise((r) => setTimeout(r, 20));
    gc();
    held = process.memoryUsage().arrayBuffers - before;
  }
  assert.ok(held < 2 << 20, `finished jobs still hold ${(held / 2 ** 20).toFixed(1)} MiB of buffers`);
  // Their output is still readable, from the files.
  for (const name of names) assert.equal(await read(name), 1 << 20);
});
