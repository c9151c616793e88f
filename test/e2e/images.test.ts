// The real control-plane and agent images, built by docker/build.sh from this checkout into the
// harness's private dockerd (the Debian base from debootstrap, cached by content), and the control
// plane run the way docker/README.md documents `docker run`: only CAP_SYS_ADMIN and CAP_NET_ADMIN,
// bpffs read-write, the cgroup2 mount and the trust files read-only, a read-only root, ports
// published on 127.0.0.1. It becomes healthy, loads and attaches BPF with exactly those
// capabilities, and drains cleanly on `docker stop`.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync, rmdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { DEFAULT_AGENT_ENTRYPOINT } from "@clawker/adminclient";
import { clawker } from "../harness/clawker-cli.js";
import { startPrivateDocker } from "../harness/docker.js";
import {
  bpffs,
  bpffsMount,
  cgroup2,
  cgroup2Mount,
  command,
  root,
  skipReason,
} from "../harness/preconditions.js";
import { useTestTrust } from "../harness/trust.js";
import { waitFor } from "../harness/wait-for.js";
import {
  BUILD_TOOLS,
  CP_CAPABILITIES,
  CP_TRUST_FILES,
  bpfRoundTrip,
  buildImages,
  containerMounts,
  containerProcesses,
  dockerCli,
  documentedRunFlags,
} from "./images-build.js";

const CP_ENTRY = "/opt/clawker/packages/controlplane/dist/main.js";

interface ImageInspect {
  readonly Size: number;
  readonly Config: {
    readonly User: string;
    readonly Entrypoint: string[];
    readonly Cmd: string[] | null;
    readonly Labels: Record<string, string>;
    readonly ExposedPorts: Record<string, unknown>;
    readonly Healthcheck?: { readonly Test: string[] };
  };
}

interface ContainerInspect {
  readonly State: {
    readonly Status: string;
    readonly ExitCode: number;
    readonly Health?: { readonly Status: string };
  };
}

async function inspect<T>(dockerHost: string, ref: string): Promise<T> {
  return (JSON.parse(await dockerCli(dockerHost, ["inspect", ref])) as T[])[0]!;
}

describe(
  "images",
  { skip: skipReason(root, command("dockerd"), command("nsenter"), cgroup2, bpffs, ...BUILD_TOOLS) },
  () => {
    test("the control-plane image: under 250 MB, labelled, content-tagged; documented run healthy, BPF works, stop drains", async (t) => {
      const daemon = await startPrivateDocker(t);
      const host = daemon.dockerHost;
      const built = (await buildImages(host, "controlplane"))["controlplane"]!;
      t.diagnostic(
        `${built.ref}: ${(built.sizeBytes / 1e6).toFixed(1)} MB, docker build ${built.seconds}s (cached: ${built.cached})`,
      );
      assert.ok(built.sizeBytes < 250e6, `the image is ${built.sizeBytes} bytes`);
      assert.match(built.ref, /^clawker\/controlplane:[0-9a-f]{16}$/);
      const again = (await buildImages(host, "controlplane"))["controlplane"]!;
      assert.deepEqual(
        [again.ref, again.cached],
        [built.ref, true],
        "the same sources give the same tag, not a rebuild",
      );

      const image = await inspect<ImageInspect>(host, built.ref);
      const labels = image.Config.Labels;
      assert.equal(labels["dev.clawker.managed"], "true");
      assert.equal(labels["dev.clawker.purpose"], "controlplane");
      assert.equal(labels["org.opencontainers.image.licenses"], "Apache-2.0");
      assert.match(labels["org.opencontainers.image.version"] ?? "", /^\d+\.\d+\.\d+/);
      assert.match(labels["org.opencontainers.image.revision"] ?? "", /^[0-9a-f]{12}$|^unknown$/);
      assert.deepEqual(image.Config.Entrypoint, ["/usr/local/bin/node", CP_ENTRY]);
      assert.deepEqual(image.Config.Healthcheck?.Test, [
        "CMD",
        "/usr/local/bin/node",
        "/opt/clawker/healthcheck.js",
      ]);
      assert.deepEqual(Object.keys(image.Config.ExposedPorts).sort(), [
        "4444/tcp",
        "7080/tcp",
        "7443/tcp",
        "7444/tcp",
      ]);

      const trust = await useTestTrust(t);
      const cgroupMount = cgroup2Mount()!;
      const dir = mkdtempSync(join(tmpdir(), "clawker-img-"));
      t.after(() => rmSync(dir, { recursive: true, force: true }));
      // The flags docker/README.md documents for `docker run`, nothing more.
      const name = "clawker-controlplane";
      const run = [
        "run",
        "--detach",
        "--name",
        name,
        ...documentedRunFlags({
          cgroupMount,
          dockerSocket: daemon.socketPath,
          trustDir: trust.trustDir,
          stateVolume: "clawker-cp-data",
        }),
        built.ref,
      ];
      const started = Date.now();
      await dockerCli(host, run);
      const cli = (args: string[]) =>
        clawker(args, {
          netns: daemon.netnsName,
          env: {
            ...process.env,
            CLAWKER_CP_TRUST_DIR: trust.trustDir,
            CLAWKER_CP_DATA_DIR: join(dir, "state"),
          },
        });
      const status = await waitFor(
        async () => {
          const r = await cli(["controlplane", "status", "--format", "json"]);
          return r.code === 0 ? r : undefined;
        },
        { timeoutMs: 60_000, intervalMs: 100, what: "the container's /healthz 200 through 127.0.0.1:7080" },
      );
      t.diagnostic(`docker run to a healthy status through the published ports: ${Date.now() - started} ms`);
      // Healthy, and the admin listener answered GetSystemTime over mTLS through 127.0.0.1:7443.
      const report = JSON.parse(status.stdout) as { state: string; clock: { skewMs?: number } | null };
      assert.equal(report.state, "healthy");
      assert.equal(typeof report.clock?.skewMs, "number", status.stdout);
      await waitFor(
        async () => (await inspect<ContainerInspect>(host, name)).State.Health?.Status === "healthy",
        { timeoutMs: 60_000, intervalMs: 500, what: "Docker's HEALTHCHECK to report healthy" },
      );

      // Exactly SYS_ADMIN + NET_ADMIN, no new privileges, docker-init as PID 1 above the daemon.
      const procs = await containerProcesses(host, name);
      const pid1 = procs.find((p) => p.pid === 1);
      assert.match(pid1?.cmdline ?? "", /docker-init/);
      const cp = procs.find((p) => p.cmdline === `/usr/local/bin/node ${CP_ENTRY}`);
      const authserver = procs.find((p) => p.cmdline.includes("authserver/dist/main.js"));
      for (const p of [cp, authserver]) {
        assert.ok(p !== undefined, JSON.stringify(procs.map((x) => x.cmdline)));
        assert.equal(p.capEff.toString(16), CP_CAPABILITIES.toString(16), p.cmdline);
        assert.equal(p.noNewPrivs, true, p.cmdline);
      }
      const mounts = await containerMounts(host, name);
      assert.equal(mounts.get("/")?.readOnly, true, "read-only root");
      assert.deepEqual(
        [mounts.get("/sys/fs/bpf")?.fsType, mounts.get("/sys/fs/bpf")?.readOnly],
        ["bpf", false],
      );
      assert.deepEqual(
        [mounts.get(cgroupMount)?.fsType, mounts.get(cgroupMount)?.readOnly],
        ["cgroup2", true],
      );
      assert.equal(mounts.get("/var/lib/clawker")?.readOnly, false);
      for (const f of CP_TRUST_FILES) assert.equal(mounts.get(`/etc/clawker/trust/${f}`)?.readOnly, true, f);
      const listed = await dockerCli(host, [
        "exec",
        name,
        "node",
        "-p",
        "require('fs').readdirSync('/etc/clawker/trust').sort().join(' ')",
      ]);
      assert.equal(
        listed.trim(),
        [...CP_TRUST_FILES].sort().join(" "),
        "the CA key and the CLI's keys are not in the container",
      );

      // BPF: the image's ebpf-manager loads, pins and attaches with those capabilities alone.
      const parent = `clawker-t${process.pid}-image`;
      const pinDir = join(bpffsMount()!, parent);
      mkdirSync(join(cgroupMount, parent));
      t.after(() => {
        rmSync(pinDir, { recursive: true, force: true });
        rmdirSync(join(cgroupMount, parent));
      });
      const bpf = await bpfRoundTrip(host, name, pinDir, parent);
      assert.equal(bpf.code, 0, bpf.stderr);
      assert.match(bpf.ready, /"event":"ready"/);
      const links = JSON.parse(bpf.links) as unknown[] | { links: unknown[] };
      assert.ok((Array.isArray(links) ? links : links.links).length > 0, bpf.links);
      assert.match(bpf.flushed, /yes/);
      assert.equal(existsSync(pinDir), false, "flush-all removed the pins");

      // docker stop: SIGTERM reaches the daemon through docker-init; it drains and exits 0.
      await dockerCli(host, ["stop", "--time", "30", name]);
      const stopped = await inspect<ContainerInspect>(host, name);
      assert.deepEqual([stopped.State.Status, stopped.State.ExitCode], ["exited", 0]);
      const logs = (await dockerCli(host, ["logs", name]))
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      assert.ok(logs.some((l) => l["event"] === "drain" && l["signal"] === "SIGTERM"));
      assert.ok(
        logs.some((l) => l["msg"] === "helper stopped" && l["helper"] === "authserver" && l["code"] === 0),
      );
      assert.ok(logs.some((l) => l["event"] === "stopped" && l["code"] === 0));
    });

    test("the agent image: Node 24 and clawkerd as the entrypoint clawker run uses, no agent labels", async (t) => {
      const daemon = await startPrivateDocker(t);
      const built = (await buildImages(daemon.dockerHost, "agent"))["agent"]!;
      t.diagnostic(`${built.ref}: ${(built.sizeBytes / 1e6).toFixed(1)} MB (cached: ${built.cached})`);
      const image = await inspect<ImageInspect>(daemon.dockerHost, built.ref);
      assert.deepEqual(image.Config.Entrypoint, [...DEFAULT_AGENT_ENTRYPOINT]);
      // Containers inherit image labels: only `clawker run` may mark one a managed agent.
      assert.equal(image.Config.Labels["dev.clawker.purpose"], undefined);
      assert.equal(image.Config.Labels["dev.clawker.managed"], undefined);
      assert.equal(image.Config.Labels["dev.clawker.image"], "agent");
      const out = await dockerCli(daemon.dockerHost, [
        "run",
        "--rm",
        "--init",
        "--entrypoint",
        "node",
        built.ref,
        "-p",
        "[process.version, require('fs').statSync('/opt/clawker/clawkerd.mjs').size > 0, require('os').userInfo({}).uid, require('child_process').execFileSync('id', ['-un', '1000'], { encoding: 'utf8' }).trim()].join(' ')",
      ]);
      assert.match(out.trim(), /^v24\.\d+\.\d+ true 0 agent$/);
    });
  },
);
