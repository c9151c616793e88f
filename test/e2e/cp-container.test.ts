// `clawker controlplane up --container` against the real control-plane image, built by
// docker/build.sh into the harness's private dockerd: healthy within the figure with exactly the
// documented settings, an authorized `agents` from the host through the published token endpoint
// (auth.issuer), the admin socket bound from the host with the group's gid (--group-add), status
// naming the container, a second up adopting it, a different image refused while an agent runs and
// replaced with --force, SIGKILL recovered by up, and down draining it to exit 0.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { lstatSync, mkdtempSync, rmSync } from "node:fs";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { promisify } from "node:util";
import { buildOnce, ensureBpffs } from "../../packages/ebpf-manager/test/fixture.js";
import { privateEbpfParent, removeEbpfParent } from "../harness/ebpf-parent.js";
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
    readonly GroupAdd: string[] | null;
  };
  readonly State: { readonly Status: string; readonly ExitCode: number };
}

describe(
  "controlplane up --container",
  {
    skip: skipReason(
      root,
      command("dockerd"),
      command("nsenter"),
      command("groupadd"),
      cgroup2,
      bpffs,
      ...BUILD_TOOLS,
    ),
  },
  () => {
    test("create, agents from the host over the admin socket, status, adopt, refuse another image while an agent runs, --force replaces, recover from SIGKILL, down drains", async (t) => {
      ensureBpffs();
      await buildOnce();
      // The container enforces (eBPF on): its own cgroup parent and pin dir, never the host's
      // `clawker`, removed after the test (the SIGKILL leaves its pins behind by design).
      const parent = privateEbpfParent("u");
      const { name } = parent;
      const engine: { host?: string } = {};
      // Registered before the private dockerd's own (after hooks run in the order registered).
      t.after(async () => {
        // A failed run may leave the container running on the parent's bind: remove it first.
        if (engine.host !== undefined) {
          const left = (
            await dockerCli(engine.host, ["ps", "-aq", "--filter", "label=dev.clawker.purpose=controlplane"])
          )
            .split("\n")
            .filter((id) => id !== "");
          if (left.length > 0)
            await dockerCli(engine.host, ["rm", "--force", ...left]).catch(() => undefined);
        }
        await removeEbpfParent(parent);
      });
      const daemon = await startPrivateDocker(t);
      const host = daemon.dockerHost;
      engine.host = host;
      const built = (await buildImages(host, "controlplane"))["controlplane"]!;
      const trust = await useTestTrust(t);
      const dir = mkdtempSync(join(tmpdir(), "clawker-cpc-"));
      t.after(() => rmSync(dir, { recursive: true, force: true }));
      // A temporary admin group, and the socket under the test's dir instead of /run/clawker.
      const run = promisify(execFile);
      const group = `clawker-t${randomBytes(4).toString("hex")}`;
      await run("groupadd", [group]);
      t.after(() => run("groupdel", [group]).catch(() => undefined));
      const gid = Number((await run("getent", ["group", group])).stdout.split(":")[2]);
      const socketPath = join(dir, "run", "admin.sock");
      const env: NodeJS.ProcessEnv = {
        ...process.env,
        DOCKER_HOST: host,
        CLAWKER_CP_TRUST_DIR: trust.trustDir,
        CLAWKER_CP_DATA_DIR: join(dir, "state"),
        CLAWKER_ADMIN_SOCKET: socketPath,
        CLAWKER_ADMIN_GROUP: group,
      };
      // The published ports are 127.0.0.1 of the engine's network namespace: the CLI runs there;
      // every `up` names the parent (the config is written again at each create).
      const cli = (args: string[]) =>
        clawker(args[1] === "up" ? [...args, "--cgroup-parent", name] : args, {
          netns: daemon.netnsName,
          env,
        });
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
      // The admin socket: its host directory bound, the group's gid added, and the daemon (no
      // CAP_CHOWN) could give the socket to that group because it is a member.
      assert.ok(
        c.HostConfig.Binds.includes(`${join(dir, "run")}:/run/clawker`),
        c.HostConfig.Binds.join(" "),
      );
      assert.deepEqual(c.HostConfig.GroupAdd, [String(gid)]);
      const sockDir = lstatSync(join(dir, "run"));
      assert.deepEqual([sockDir.uid, sockDir.gid, (sockDir.mode & 0o7777).toString(8)], [0, gid, "750"]);
      const sock = lstatSync(socketPath);
      assert.deepEqual([sock.isSocket(), sock.gid, (sock.mode & 0o7777).toString(8)], [true, gid, "660"]);

      // 2. An authorized call from the host over the admin socket (CLAWKER_ADMIN_SOCKET: no TCP
      // fallback): the token comes from 127.0.0.1:4444, the published port, and the container's
      // issuer (auth.issuer) makes that URL the assertion's audience.
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

      // 6. --force replaces it anyway (the old one drains), and the agent is left running.
      const forceStarted = Date.now();
      const forced = await cli([
        "controlplane",
        "up",
        "--container",
        "--force",
        "--image",
        "clawker/controlplane:other",
        "--format",
        "json",
      ]);
      assert.equal(forced.code, 0, forced.stderr);
      t.diagnostic(`up --container --force (drain, replace, healthy): ${Date.now() - forceStarted} ms`);
      const replaced = JSON.parse(forced.stdout) as UpSummary;
      assert.equal(replaced.action, "replaced");
      assert.notEqual(replaced.container.id, first.container.id);
      assert.equal(replaced.healthStatus.status, "healthy");
      const old = await dockerCli(host, ["ps", "-aq", "--no-trunc", "--filter", `id=${first.container.id}`]);
      assert.equal(old.trim(), "", "the replaced container is removed");
      assert.equal((await inspect("stand-in-agent")).State.Status, "running");
      await dockerCli(host, ["rm", "--force", "stand-in-agent"]);
      const current = replaced.container.id;

      // 7. SIGKILL: up brings the same container back to healthy.
      await dockerCli(host, ["kill", "--signal", "KILL", current]);
      const recovered = await cli([
        "controlplane",
        "up",
        "--container",
        "--image",
        "clawker/controlplane:other",
        "--format",
        "json",
      ]);
      assert.equal(recovered.code, 0, recovered.stderr);
      const third = JSON.parse(recovered.stdout) as UpSummary;
      assert.equal(third.container.id, current);
      assert.ok(["started", "adopted"].includes(third.action), third.action);
      assert.equal(third.healthStatus.status, "healthy");

      // 8. Down: docker stop, the daemon drains and exits 0.
      const down = await cli(["controlplane", "down", "--format", "json"]);
      assert.equal(down.code, 0, down.stderr);
      const stopped = JSON.parse(down.stdout) as { mode: string; exitCode: number; killed: boolean };
      assert.deepEqual([stopped.mode, stopped.exitCode, stopped.killed], ["container", 0, false]);
      const after = await inspect(current);
      assert.deepEqual([after.State.Status, after.State.ExitCode], ["exited", 0]);
      const gone = await cli(["controlplane", "status", "--format", "json"]);
      assert.equal(gone.code, 3, gone.stdout);
    });
  },
);
