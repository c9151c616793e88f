// Jobs in a real agent (issue 13), end to end: a private dockerd, the agent image with our bundled
// clawkerd, the control plane inside the dockerd's network namespace, and the real `clawker` CLI.
// The agent runs with `--cpus 0.5 --memory 256M` (Docker host config, checked by inspect); a job
// asking for more than that is refused; a job runs, is watched and ends COMPLETED, and says why
// its own limits are not enforced on a host without cgroup v2 delegation; a job that allocates
// past the agent's memory is OOM-killed and ends FAILED while the agent and its other jobs live on.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { mintTrustSet, writeTrustSet } from "@clawker/adminclient";
import { LABELS } from "@clawker/proto";
import { agentImage } from "../harness/agent-image.js";
import { clawker, type CliResult } from "../harness/clawker-cli.js";
import { startControlPlane } from "../harness/controlplane.js";
import { startPrivateDocker } from "../harness/docker.js";
import { command, root, skipReason } from "../harness/preconditions.js";
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
}

function ok(r: CliResult, what: string): string {
  assert.equal(r.code, 0, `${what} exited ${r.code}: ${r.stderr}`);
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
        agents: { gracePeriodMs: 15_000 },
      },
    });
    t.after(() => cp.close());
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
    if (!first.isLimited) {
      assert.notEqual(first.limitsNote, "", "an unlimited job says why");
      assert.match(started.stderr, /warning: /);
    }
    assert.equal(ok(await job("watch", first.name), "job watch"), "hello from a job\n");
    const done = JSON.parse(ok(await job("status", first.name, "--format", "json"), "status")) as {
      job: WireJob;
    };
    assert.equal(done.job.state, "JOB_STATE_COMPLETED");

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
    assert.equal(ok(await job("stop", long.name, "--grace", "1s"), "stop").trim(), `${long.name} STOPPED`);
  });
});
