// Jobs in a real agent (issue 13), end to end: a private dockerd, the agent image with our bundled
// clawkerd, the control plane inside the dockerd's network namespace, and the real `clawker` CLI.
// The agent runs with `--cpus 0.5 --memory 256M` (Docker host config, checked by inspect); a job
// asking for more than that is refused; a job runs, is watched and ends COMPLETED; a job that
// allocates past the agent's memory is OOM-killed and ends FAILED while the agent and its other
// jobs live on. On a cgroup v1 (hybrid) host, where the control plane places each job in v1 groups
// under the agent's container: a job limited to 10% of a CPU is throttled and stays within its
// quota while an unlimited one beside it is never throttled; a job past its own memory max is
// OOM-killed (`oom_killed`) while the agent and another job live on; direct writes are held to the job's write rate; the job's
// groups are removed when it ends; `controlplane agents --stats` shows the agent's own usage.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { mintTrustSet, writeTrustSet } from "@clawker/adminclient";
import { LABELS } from "@clawker/proto";
import { agentImage } from "../harness/agent-image.js";
import { clawker, type CliResult } from "../harness/clawker-cli.js";
import { startControlPlane } from "../harness/controlplane.js";
import { startPrivateDocker } from "../harness/docker.js";
import { command, isCI, root, skipReason } from "../harness/preconditions.js";
import { waitFor } from "../harness/wait-for.js";

const SUBNET = "10.214.0.0/24";
const GATEWAY = "10.214.0.1";
const NETWORK = "clawker-agents";
const PROJECT = "e2e";

interface WireJob {
  readonly name: string;
  readonly state: string;
  readonly reason: string;
  readonly exitCode: number;
  readonly signo: number;
  readonly isLimited: boolean;
  readonly limitsNote: string;
  readonly startedAtUnixNanos: string;
  readonly endedAtUnixNanos: string;
}

/** `job status --format json`, the figures the tests read (uint64 as JSON strings). */
interface WireStatus {
  readonly job: WireJob;
  readonly stats?: Readonly<Record<string, string | Record<string, string> | undefined>>;
}

/** True when this host mounts the v1 cpu and memory controllers: the control plane places jobs. */
function hostHasV1(): boolean {
  const mounts = readFileSync("/proc/self/mounts", "utf8").split("\n");
  const has = (c: string): boolean =>
    mounts.some((l) => l.split(" ")[2] === "cgroup" && (l.split(" ")[3] ?? "").split(",").includes(c));
  return has("cpu") && has("memory");
}

/** The host directory of a container's group in one v1 controller. */
function containerGroup(pid: number, controller: string): string {
  const line = readFileSync(`/proc/${pid}/cgroup`, "utf8")
    .split("\n")
    .find((l) => l.split(":")[1]?.split(",").includes(controller));
  assert.ok(line !== undefined, `no ${controller} line for ${pid}`);
  return join("/sys/fs/cgroup", controller, line.split(":")[2]!);
}

/**
 * Why direct writes under `dir` cannot be throttled here, or undefined when they can: the
 * filesystem's device must be (a partition of) a whole disk the kernel lists.
 */
function unthrottleableWhy(dir: string): string | undefined {
  const dev = statSync(dir).dev;
  const major = Math.floor(dev / 256) & 0xfff;
  const minor = (dev & 0xff) | (Math.floor(dev / 4096) & 0xfff00);
  if (major === 0) return `the Docker data root ${dir} is on a virtual filesystem (device 0:${minor})`;
  const sys = `/sys/dev/block/${major}:${minor}`;
  if (!existsSync(sys)) return `no block device ${major}:${minor} behind ${dir}`;
  return undefined;
}

let debugLogs = (): string => "";
function ok(r: CliResult, what: string): string {
  assert.equal(r.code, 0, `${what} exited ${r.code}: ${r.stderr}` + debugLogs());
  return r.stdout;
}

describe("jobs in a real agent", { skip: skipReason(root, command("dockerd"), command("nsenter")) }, () => {
  test("agent limits via Docker, limits above the agent's refused, a job watched to its end, OOM leaves the agent alive", async (t) => {
    const docker = await startPrivateDocker(t);
    await docker.docker.createNetwork({
      Name: NETWORK,
      Driver: "bridge",
      Internal: true,
      CheckDuplicate: true,
      IPAM: { Config: [{ Subnet: SUBNET, Gateway: GATEWAY }] },
      Labels: { [LABELS.managed]: "true" },
    });
    const image = await agentImage(docker.docker);
    const dir = mkdtempSync(join(tmpdir(), "clawker-e2e-jobs-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const trustDir = join(dir, "trust");
    const trust = await mintTrustSet({ serverNames: [GATEWAY] });
    await writeTrustSet(trustDir, trust);
    const cp = await startControlPlane({
      netns: docker.netnsName,
      trustDir,
      trustSet: trust,
      dataDir: join(dir, "data"),
      config: {
        listen: { agent: { host: GATEWAY } },
        auth: { publicHost: GATEWAY },
        docker: { host: docker.dockerHost },
        // Under a loaded machine an agent may take longer to start than any grace: no drain here.
        agents: { drainToZero: false },
      },
    });
    t.after(() => cp.close());
    // A failed CLI call names the control plane's warnings and errors.
    debugLogs = () =>
      "\n" +
      cp.logs
        .filter((l) => ["warn", "error"].includes(String(l["level"])))
        .map((l) => JSON.stringify(l))
        .join("\n");
    const tokenEndpoint = `https://${GATEWAY}:${cp.ports.authPublic}/oauth2/token`;
    const env = { ...process.env, DOCKER_HOST: docker.dockerHost, CLAWKER_CP_TRUST_DIR: trustDir };
    const inNetns = { env, netns: docker.netnsName };
    const admin = ["--admin", `127.0.0.1:${cp.ports.admin}`, "--token-endpoint", tokenEndpoint];
    const job = (...args: string[]): Promise<CliResult> => clawker(["job", ...args, ...admin], inNetns);
    const jobIn = (word: string, ...rest: string[]): Promise<CliResult> =>
      clawker(["job", word, ...admin, "--agent", "worker", "--project", PROJECT, ...rest], inNetns);

    const run = JSON.parse(
      ok(
        await clawker(
          [
            "run",
            "--agent",
            "worker",
            "--project",
            PROJECT,
            "--network",
            NETWORK,
            "--cp-addr",
            `${GATEWAY}:${cp.ports.agent}`,
            "--token-endpoint",
            tokenEndpoint,
            "--cpus",
            "0.5",
            "--memory",
            "256M",
            "--pids-limit",
            "512",
            "--format",
            "json",
            image,
            "sleep",
            "600",
          ],
          { env },
        ),
        "run",
      ),
    ) as { containerId: string };
    const hostConfig = (await docker.docker.getContainer(run.containerId).inspect()).HostConfig;
    assert.equal(hostConfig.NanoCpus, 500_000_000);
    assert.equal(hostConfig.Memory, 256 << 20);
    assert.equal(hostConfig.MemorySwap, 256 << 20, "no swap");
    assert.equal(hostConfig.MemoryReservation, 192 << 20, "soft limit at 75%");
    assert.equal(hostConfig.PidsLimit, 512);

    // The agent is ready once its jobs answer through the control plane.
    await waitFor(async () => ((await jobIn("ls")).code === 0 ? true : undefined), {
      timeoutMs: 60_000,
      intervalMs: 500,
      what: "the agent's jobs reachable",
    });

    // More than the agent has is refused, naming both.
    const tooMuch = await jobIn("start", "--cpu", "1", "--", "true");
    assert.equal(tooMuch.code, 1, tooMuch.stderr);
    assert.match(tooMuch.stderr, /cpu limit 1 CPUs is above the agent's 0\.5/);
    const tooBig = await jobIn("start", "--memory", "1G", "--", "true");
    assert.equal(tooBig.code, 1, tooBig.stderr);
    assert.match(tooBig.stderr, /memory limit 1073741824 bytes is above the agent's 268435456/);

    // A job within the agent's limits runs; without cgroup v2 delegation it says so.
    const started = await jobIn(
      "start",
      "--memory",
      "128M",
      "--format",
      "json",
      "--",
      "/bin/sh",
      "-c",
      "echo hello from a job",
    );
    const first = JSON.parse(ok(started, "job start")) as WireJob;
    const v1 = hostHasV1();
    if (v1) assert.equal(first.isLimited, true, `placed by the control plane: ${first.limitsNote}`);
    if (!first.isLimited) {
      assert.notEqual(first.limitsNote, "", "an unlimited job says why");
      assert.match(started.stderr, /warning: /);
    }
    assert.equal(ok(await job("watch", first.name), "job watch"), "hello from a job\n");
    const done = JSON.parse(ok(await job("status", first.name, "--format", "json"), "status")) as {
      job: WireJob;
    };
    assert.equal(done.job.state, "JOB_STATE_COMPLETED");
    const initPid = (await docker.docker.getContainer(run.containerId).inspect()).State.Pid;
    if (v1) {
      // Its groups go once it has ended.
      const memoryGroup = containerGroup(initPid, "memory");
      const uuid = first.name.slice(first.name.lastIndexOf("/") + 1);
      await waitFor(() => (existsSync(join(memoryGroup, `job-${uuid}`)) ? undefined : true), {
        timeoutMs: 30_000,
        intervalMs: 200,
        what: "the ended job's cgroups removed",
      });
    }

    // Malformed limits are refused by the CLI before anything is sent.
    const malformed = await jobIn("start", "--memory", "12Q", "--", "true");
    assert.equal(malformed.code, 2, malformed.stderr);
    assert.match(malformed.stderr, /--memory/);

    // A long job beside one that allocates past the agent's memory: the allocator is OOM-killed,
    // ends FAILED; the agent and the long job live on.
    const long = JSON.parse(
      ok(await jobIn("start", "--format", "json", "--", "sleep", "600"), "long"),
    ) as WireJob;
    const hog = JSON.parse(
      ok(
        await jobIn(
          "start",
          "--format",
          "json",
          "--",
          "node",
          "-e",
          "const a = []; for (;;) a.push(Buffer.alloc(8 << 20, 1));",
        ),
        "hog",
      ),
    ) as WireJob;
    const killed = await waitFor(
      async () => {
        const s = JSON.parse(ok(await job("status", hog.name, "--format", "json"), "hog status")) as {
          job: WireJob;
        };
        return s.job.state === "JOB_STATE_RUNNING" ? undefined : s.job;
      },
      { timeoutMs: 60_000, intervalMs: 500, what: "the allocating job to end" },
    );
    assert.equal(killed.state, "JOB_STATE_FAILED");
    assert.equal(killed.signo, 9, `killed by the OOM killer (SIGKILL), got ${JSON.stringify(killed)}`);
    const alive = JSON.parse(ok(await job("status", long.name, "--format", "json"), "long status")) as {
      job: WireJob;
    };
    assert.equal(alive.job.state, "JOB_STATE_RUNNING", "the other job lives on");

    if (!v1) {
      const why = "the host has no cgroup v1 cpu/memory controllers: per-job limits are clawkerd's (v2)";
      if (isCI) assert.fail(why);
      t.diagnostic(`per-job limit checks skipped: ${why}`);
      assert.equal(ok(await job("stop", long.name, "--grace", "1s"), "stop").trim(), `${long.name} STOPPED`);
      return;
    }
    const status = async (name: string): Promise<WireStatus> =>
      JSON.parse(ok(await job("status", name, "--format", "json"), "status")) as WireStatus;
    const stat = (s: WireStatus, key: string): number => Number(s.stats?.[key] ?? 0);

    // 10% of a CPU beside an unlimited job, both spinning: the limited one is throttled and stays
    // within its quota (usage <= periods x 10 ms), the unlimited one gets more.
    const spin = ["--", "/bin/sh", "-c", "while :; do :; done"];
    const slow = JSON.parse(
      ok(await jobIn("start", "--cpu", "0.1", "--format", "json", ...spin), "slow"),
    ) as WireJob;
    assert.equal(slow.isLimited, true, slow.limitsNote);
    const fast = JSON.parse(ok(await jobIn("start", "--format", "json", ...spin), "fast")) as WireJob;
    // Both figures over one window (each job's before and after), so a late start does not count.
    const before = [await status(slow.name), await status(fast.name)];
    const after = await waitFor(
      async () => {
        const s = await status(slow.name);
        return stat(s, "cpuNrPeriods") - stat(before[0]!, "cpuNrPeriods") >= 30
          ? [s, await status(fast.name)]
          : undefined;
      },
      { timeoutMs: 90_000, intervalMs: 500, what: "the limited job over 30 more periods" },
    );
    const delta = (i: number, key: string): number => stat(after[i]!, key) - stat(before[i]!, key);
    const slowUsec = delta(0, "cpuUsageUsec");
    const fastUsec = delta(1, "cpuUsageUsec");
    const periods = delta(0, "cpuNrPeriods");
    assert.ok(
      delta(0, "cpuNrThrottled") > 0 && delta(0, "cpuThrottledUsec") > 0,
      JSON.stringify(after[0]!.stats),
    );
    // The quota is 10 ms per 100 ms period; a little slack for the periods at the window's edges.
    assert.ok(slowUsec <= periods * 10_000 * 1.1 + 20_000, `${slowUsec} µs over ${periods} periods`);
    // The unlimited job has no quota of its own to be throttled by. How much more it gets than the
    // limited one depends on how busy the machine is (on 2 shared cores at load 17 it was only
    // 1.2x), so that is reported, not asserted: the quota and the throttling above are the proof.
    assert.equal(stat(after[1]!, "cpuNrThrottled"), 0, JSON.stringify(after[1]!.stats));
    t.diagnostic(
      `10% job: ${((slowUsec / (periods * 100_000)) * 100).toFixed(1)}% of ${periods} periods; in that window the unlimited job used ${fastUsec} µs vs ${slowUsec} µs`,
    );
    for (const n of [slow.name, fast.name]) ok(await job("stop", n, "--grace", "1s"), "stop spinner");

    // A job past its own memory max is OOM-killed in its group: FAILED oom_killed; the agent and
    // the long job live on.
    const small = JSON.parse(
      ok(
        await jobIn(
          "start",
          "--memory",
          "96M",
          "--format",
          "json",
          "--",
          "node",
          "-e",
          "const a = []; for (;;) a.push(Buffer.alloc(4 << 20, 1));",
        ),
        "small hog",
      ),
    ) as WireJob;
    assert.equal(small.isLimited, true, small.limitsNote);
    const oom = await waitFor(
      async () => {
        const s = await status(small.name);
        return s.job.state === "JOB_STATE_RUNNING" ? undefined : s.job;
      },
      { timeoutMs: 60_000, intervalMs: 500, what: "the job past its memory max to end" },
    );
    assert.equal(oom.state, "JOB_STATE_FAILED");
    assert.equal(oom.reason, "oom_killed", JSON.stringify(oom));
    assert.equal((await status(long.name)).job.state, "JOB_STATE_RUNNING", "the other job lives on");
    assert.equal(
      ok(await jobIn("ls"), "ls after the job's OOM").includes(long.name),
      true,
      "the agent answers",
    );

    // Direct writes held to 4 MiB/s: 12 MiB take at least ~3 s (a lower bound: load only slows).
    const dataRoot = (await docker.docker.info()) as { DockerRootDir: string };
    const why = unthrottleableWhy(dataRoot.DockerRootDir);
    if (why !== undefined) {
      if (isCI) assert.fail(`IO limit not testable: ${why}`);
      t.diagnostic(`IO write limit skipped: ${why}`);
    } else {
      const dd = JSON.parse(
        ok(
          await jobIn(
            "start",
            "--device-write-bps",
            "4M",
            "--format",
            "json",
            "--",
            "dd",
            "if=/dev/zero",
            "of=/tmp/clawker-io-test",
            "bs=256k",
            "count=48",
            "oflag=direct",
          ),
          "dd",
        ),
      ) as WireJob;
      assert.equal(dd.isLimited, true, dd.limitsNote);
      const wrote = await waitFor(
        async () => {
          const s = await status(dd.name);
          return s.job.state === "JOB_STATE_RUNNING" ? undefined : s.job;
        },
        { timeoutMs: 60_000, intervalMs: 500, what: "the writing job to end" },
      );
      assert.equal(wrote.state, "JOB_STATE_COMPLETED", `dd with oflag=direct: ${JSON.stringify(wrote)}`);
      const seconds = Number(BigInt(wrote.endedAtUnixNanos) - BigInt(wrote.startedAtUnixNanos)) / 1e9;
      assert.ok(seconds >= 2.4, `12 MiB at 4 MiB/s took only ${seconds} s`);
      t.diagnostic(`12 MiB direct at 4 MiB/s: ${seconds.toFixed(2)} s`);
    }

    // The agent's own usage beside it.
    const usage = JSON.parse(
      ok(
        await clawker(["controlplane", "agents", "--stats", "--format", "json", ...admin], inNetns),
        "agents --stats",
      ),
    ) as {
      agents: Array<{
        name: string;
        usage?: { cpuLimitMillis: number; memoryLimitBytes: string; stats?: Record<string, unknown> };
      }>;
    };
    const mine = usage.agents.find((a) => a.name === "worker");
    assert.ok(mine?.usage?.stats !== undefined, JSON.stringify(usage));
    assert.equal(mine.usage.cpuLimitMillis, 500);
    assert.equal(mine.usage.memoryLimitBytes, String(256 << 20));
    assert.ok(Number(mine.usage.stats["cpuUsageUsec"]) > 0);
    assert.equal(ok(await job("stop", long.name, "--grace", "1s"), "stop").trim(), `${long.name} STOPPED`);
  });
});
