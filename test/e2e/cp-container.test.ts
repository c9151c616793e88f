// `clawker controlplane up --container` against the real control-plane image, built by
// docker/build.sh into the harness's private dockerd: healthy within the figure with exactly the
// documented settings, an authorized `agents` from the host through the published token endpoint
// (auth.issuer), status naming the container, a second up adopting it, a different image refused
// while an agent runs, SIGKILL recovered by up, and down draining it to exit 0.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { clawker } from "../harness/clawker-cli.js";
import { startPrivateDocker } from "../harness/docker.js";
import { bpffs, cgroup2, command, root, skipReason } from "../harness/preconditions.js";
import { useTestTrust } from "../harness/trust.js";
import { BUILD_TOOLS, CP_TRUST_FILES, buildImages, dockerCli } from "./images-build.js";

/** Issue 12: `up --container` with the image present, to healthy. */
const UP_FIGURE_MS = 5_000;

interface UpSummary {
  readonly mode: string;
  readonly action: string;
  readonly container: { readonly id: string; readonly name: string };
  readonly healthyAfterMs: number;
  readonly healthStatus: { readonly status: string };
}

interface HostConfigInspect {
  readonly Id: string;
  readonly Config: { readonly Labels: Record<string, string> };
  readonly HostConfig: {
    readonly Privileged: boolean;
    readonly CapAdd: string[] | null;
    readonly CapDrop: string[] | null;
    readonly Init: boolean;
    readonly ReadonlyRootfs: boolean;
    readonly SecurityOpt: string[] | null;
    readonly Binds: string[];
    readonly PortBindings: Record<string, Array<{ HostIp: string; HostPort: string }>>;
    readonly RestartPolicy: { readonly Name: string };
  };
  readonly State: { readonly Status: string; readonly ExitCode: number };
}

describe(
  "controlplane up --container",
  { skip: skipReason(root, command("dockerd"), command("nsenter"), cgroup2, bpffs, ...BUILD_TOOLS) },
  () => {
    test("create, agents from the host, status, adopt, refuse another image while an agent runs, recover from SIGKILL, down drains", async (t) => {
      const daemon = await startPrivateDocker(t);
      const host = daemon.dockerHost;
      const built = (await buildImages(host, "controlplane"))["controlplane"]!;
      const trust = await useTestTrust(t);
      const dir = mkdtempSync(join(tmpdir(), "clawker-cpc-"));
      t.after(() => rmSync(dir, { recursive: true, force: true }));
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        DOCKER_HOST: host,
        CLAWKER_CP_TRUST_DIR: trust.trustDir,
        CLAWKER_CP_DATA_DIR: join(dir, "state"),
      };
      // The published ports are 127.0.0.1 of the engine's network namespace: the CLI runs there.
      const cli = (args: string[]) => clawker(args, { netns: daemon.netnsName, env });
      const inspect = async (ref: string) =>
        (JSON.parse(await dockerCli(host, ["inspect", ref])) as HostConfigInspect[])[0]!;

      // 1. Created, healthy within the figure.
      const up = await cli(["controlplane", "up", "--container", "--image", built.ref, "--format", "json"]);
      assert.equal(up.code, 0, up.stderr);
      const first = JSON.parse(up.stdout) as UpSummary;
      t.diagnostic(`up --container (created) to healthy: ${first.healthyAfterMs} ms`);
      assert.deepEqual(
        [first.mode, first.action, first.healthStatus.status],
        ["container", "created", "healthy"],
      );
      // The figure is for a machine with CPU to spare: on a host whose run queue exceeds its cores
      // (a shared CI box) it is reported, not asserted; bench/images.bench.ts measures it.
      const [load1] = loadavg();
      if (load1! <= availableParallelism()) {
        assert.ok(
          first.healthyAfterMs <= UP_FIGURE_MS,
          `healthy after ${first.healthyAfterMs} ms > ${UP_FIGURE_MS}`,
        );
      } else {
        t.diagnostic(`figure not asserted: load ${load1!.toFixed(1)} on ${availableParallelism()} CPUs`);
      }

      // Exactly the documented settings: two capabilities, never privileged, loopback ports only,
      // the six trust files read-only (no CA key), restart on-failure.
      const c = await inspect(first.container.id);
      assert.equal(c.HostConfig.Privileged, false);
      assert.deepEqual(c.HostConfig.CapDrop, ["ALL"]);
      assert.deepEqual([...(c.HostConfig.CapAdd ?? [])].sort(), ["NET_ADMIN", "SYS_ADMIN"]);
      assert.deepEqual([c.HostConfig.Init, c.HostConfig.ReadonlyRootfs], [true, true]);
      assert.deepEqual(c.HostConfig.SecurityOpt, ["no-new-privileges"]);
      assert.equal(c.HostConfig.RestartPolicy.Name, "on-failure");
      assert.equal(c.Config.Labels["dev.clawker.purpose"], "controlplane");
      const bindings = Object.values(c.HostConfig.PortBindings).flat();
      assert.equal(bindings.length, 3);
      for (const b of bindings)
        assert.equal(b.HostIp, "127.0.0.1", JSON.stringify(c.HostConfig.PortBindings));
      const trustBinds = c.HostConfig.Binds.filter((b) => b.includes(":/etc/clawker/trust/"));
      assert.deepEqual(
        trustBinds.map((b) => b.split(":")[1]!.replace("/etc/clawker/trust/", "")).sort(),
        [...CP_TRUST_FILES].sort(),
      );
      for (const b of trustBinds) assert.ok(b.endsWith(":ro"), b);
      assert.ok(!c.HostConfig.Binds.some((b) => b.includes("ca.key")), "the CA key is never mounted");

      // 2. An authorized call from the host: the token comes from 127.0.0.1:4444, the published
      // port, and the container's issuer (auth.issuer) makes that URL the assertion's audience.
      const agents = await cli(["controlplane", "agents", "--format", "json"]);
      assert.equal(agents.code, 0, agents.stderr);
      assert.deepEqual((JSON.parse(agents.stdout) as { agents: unknown[] }).agents, []);

      // 3. Status names the container.
      const status = await cli(["controlplane", "status", "--format", "json"]);
      assert.equal(status.code, 0, status.stderr);
      const report = JSON.parse(status.stdout) as {
        state: string;
        mode: string;
        container: { id: string; state: string };
      };
      assert.deepEqual(
        [report.state, report.mode, report.container.id, report.container.state],
        ["healthy", "container", first.container.id, "running"],
      );

      // 4. A second up adopts it: no new container.
      const again = await cli([
        "controlplane",
        "up",
        "--container",
        "--image",
        built.ref,
        "--format",
        "json",
      ]);
      assert.equal(again.code, 0, again.stderr);
      const second = JSON.parse(again.stdout) as UpSummary;
      assert.deepEqual([second.action, second.container.id], ["adopted", first.container.id]);
      const listed = await dockerCli(host, [
        "ps",
        "-aq",
        "--filter",
        "label=dev.clawker.purpose=controlplane",
      ]);
      assert.equal(listed.trim().split("\n").length, 1);

      // 5. Another image while an agent runs: refused (exit 5), the running container untouched.
      // The agent is a stand-in labelled as `clawker run` labels agents (the daemon counts those).
      await dockerCli(host, ["create", "--name", "cp-other-base", built.ref]);
      await dockerCli(host, [
        "commit",
        "--change",
        "LABEL dev.clawker.test=other",
        "cp-other-base",
        "clawker/controlplane:other",
      ]);
      // It carries the image's labels: gone, it is not a second control plane.
      await dockerCli(host, ["rm", "cp-other-base"]);
      await dockerCli(host, [
        "run",
        "--detach",
        "--name",
        "stand-in-agent",
        "--label",
        "dev.clawker.managed=true",
        "--label",
        "dev.clawker.purpose=agent",
        "--entrypoint",
        "/usr/local/bin/node",
        built.ref,
        "-e",
        "setInterval(() => {}, 1 << 30)",
      ]);
      const refused = await cli([
        "controlplane",
        "up",
        "--container",
        "--image",
        "clawker/controlplane:other",
      ]);
      assert.equal(refused.code, 5, refused.stderr);
      assert.match(
        refused.stderr,
        /runs another image .* while 1 agent\(s\) run \(stand-in-agent\).*--force/,
      );
      const still = await inspect(first.container.id);
      assert.deepEqual([still.State.Status, still.Id], ["running", first.container.id]);
      await dockerCli(host, ["rm", "--force", "stand-in-agent"]);

      // 6. SIGKILL: up brings the same container back to healthy.
      await dockerCli(host, ["kill", "--signal", "KILL", first.container.id]);
      const recovered = await cli([
        "controlplane",
        "up",
        "--container",
        "--image",
        built.ref,
        "--format",
        "json",
      ]);
      assert.equal(recovered.code, 0, recovered.stderr);
      const third = JSON.parse(recovered.stdout) as UpSummary;
      assert.equal(third.container.id, first.container.id);
      assert.ok(["started", "adopted"].includes(third.action), third.action);
      assert.equal(third.healthStatus.status, "healthy");

      // 7. Down: docker stop, the daemon drains and exits 0.
      const down = await cli(["controlplane", "down", "--format", "json"]);
      assert.equal(down.code, 0, down.stderr);
      const stopped = JSON.parse(down.stdout) as { mode: string; exitCode: number; killed: boolean };
      assert.deepEqual([stopped.mode, stopped.exitCode, stopped.killed], ["container", 0, false]);
      const after = await inspect(first.container.id);
      assert.deepEqual([after.State.Status, after.State.ExitCode], ["exited", 0]);
      const gone = await cli(["controlplane", "status", "--format", "json"]);
      assert.equal(gone.code, 3, gone.stdout);
    });
  },
);
