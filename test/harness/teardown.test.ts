// Teardown on the failure paths: a test body that throws midway (t.after must still remove
// everything), and a test process killed outright (sweep must).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { findLeftovers, sweepStaleRuns, type RunRef } from "./leftovers.js";
import { REPO_ROOT } from "./images.js";
import { command, requires, root } from "./preconditions.js";
import { waitFor } from "./wait-for.js";

const needs = [root, command("dockerd"), command("nsenter"), command("ip")];
const fixture = join(REPO_ROOT, "test/harness/fixtures/harness-child.fixture.ts");

interface Recorded {
  readonly ref: RunRef & { dir: string };
  readonly pids: number[];
}

function runFixture(mode: "throw" | "hang", out: string) {
  // Run the file directly (no --test): its test runs in this one child process, which owns the
  // run. NODE_TEST_CONTEXT would make it think it is a subprocess of our runner.
  const env: NodeJS.ProcessEnv = { ...process.env, HARNESS_FIXTURE_OUT: out, HARNESS_FIXTURE_MODE: mode };
  delete env["NODE_TEST_CONTEXT"];
  const child = spawn(process.execPath, ["--import", "tsx", "--conditions=source", fixture], {
    cwd: REPO_ROOT,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.setEncoding("utf8").on("data", (s: string) => (output += s));
  child.stderr.setEncoding("utf8").on("data", (s: string) => (output += s));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  return { child, exited, output: () => output };
}

async function assertGone(recorded: Recorded): Promise<void> {
  assert.ok(
    recorded.pids.length >= 3,
    `recorded dockerd, containerd, shim, netns process: ${recorded.pids.join(" ")}`,
  );
  const left = await findLeftovers(recorded.ref);
  assert.deepEqual(left, { processes: [], mounts: [], netnsExists: false, dirExists: false });
  for (const pid of recorded.pids) {
    assert.ok(
      !existsSync(`/proc/${pid}/cmdline`) || readFileSync(`/proc/${pid}/cmdline`, "utf8") === "",
      `pid ${pid} still runs`,
    );
  }
}

void test("teardown runs when a test body throws midway", async (t) => {
  if (!requires(t, ...needs)) return;
  const scratch = await mkdtemp(join(tmpdir(), "harness-teardown-"));
  t.after(() => rm(scratch, { recursive: true, force: true }));
  const out = join(scratch, "recorded.json");
  const run = runFixture("throw", out);
  t.after(() => void run.child.kill("SIGKILL"));
  const { code } = await run.exited;
  assert.equal(code, 1, `the fixture's test must fail:\n${run.output()}`);
  assert.match(run.output(), /simulated failure midway/);
  await assertGone(JSON.parse(readFileSync(out, "utf8")) as Recorded);
});

void test("sweep cleans up after a test process killed without any teardown", async (t) => {
  if (!requires(t, ...needs)) return;
  const scratch = await mkdtemp(join(tmpdir(), "harness-teardown-"));
  t.after(() => rm(scratch, { recursive: true, force: true }));
  const out = join(scratch, "recorded.json");
  const run = runFixture("hang", out);
  t.after(() => void run.child.kill("SIGKILL"));
  await waitFor(() => existsSync(out), { timeoutMs: 60_000, what: "the fixture to record its run" });
  const recorded = JSON.parse(readFileSync(out, "utf8")) as Recorded;
  // SIGKILL: no t.after, no exit hook; dockerd, containerd, shim and the netns process orphan.
  run.child.kill("SIGKILL");
  await run.exited;
  const testProcess = run.child.pid;
  const before = await findLeftovers(recorded.ref);
  assert.ok(before.processes.length > 0 && before.netnsExists, "a killed run leaves things behind");
  const swept = await sweepStaleRuns(tmpdir(), { only: [recorded.ref.dir] });
  assert.deepEqual(swept, [
    { dir: recorded.ref.dir, netnsName: recorded.ref.netnsName, ownerPid: testProcess },
  ]);
  await assertGone(recorded);
});
