// The images' figures (issue 12): the control-plane image's build time from a cold engine and
// from a warm build cache, both images' sizes, and a fresh control-plane container's cold start
// (`docker start` to `/healthz` 200 through the published port), run as docker/README.md
// documents, and `clawker controlplane up --container` to healthy with the image present. One private dockerd for all of it; the Debian base comes from its cached tar.
import { execFile } from "node:child_process";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { promisify } from "node:util";
import { buildOnce, ensureBpffs } from "../packages/ebpf-manager/test/fixture.js";
import { clawker } from "../test/harness/clawker-cli.js";
import { PrivateDocker } from "../test/harness/docker.js";
import { privateEbpfParent, removeEbpfParent } from "../test/harness/ebpf-parent.js";
import { NODE_BINARY, REPO_ROOT } from "../test/harness/images.js";
import { runInNetns } from "../test/harness/netns.js";
import { bpffs, cgroup2, cgroup2Mount, command, root } from "../test/harness/preconditions.js";
import { mintTestTrust } from "../test/harness/trust.js";
import {
  BUILD_TOOLS,
  buildImages,
  dockerCli,
  dockerEnv,
  documentedRunFlags,
  type BuiltImage,
} from "../test/e2e/images-build.js";
import { repeat, summarise, timeMs, type Benchmark } from "./lib.js";

const execFileP = promisify(execFile);

// Runs inside the engine's netns: starts the created container, then polls /healthz until 200;
// prints the milliseconds from just before `docker start` to the first 200.
const COLD_START = `
const { execFileSync } = require("child_process");
const started = performance.now();
execFileSync("docker", ["start", process.argv[1]]);
(async () => {
  for (;;) {
    try {
      const r = await fetch("http://127.0.0.1:7080/healthz", { signal: AbortSignal.timeout(1000) });
      if (r.status === 200) break;
    } catch {}
    if (performance.now() - started > 60000) throw new Error("not healthy within 60 s");
    await new Promise((r) => setTimeout(r, 20));
  }
  process.stdout.write(String(performance.now() - started));
})();
`;

const bench: Benchmark = {
  name: "images",
  skip: () => {
    for (const r of [root, command("dockerd"), command("nsenter"), cgroup2, bpffs, ...BUILD_TOOLS]) {
      const why = r.check();
      if (why !== undefined) return why;
    }
    return undefined;
  },
  async run(ctx) {
    ensureBpffs();
    // The flush of the container's pins needs the manager on the host too.
    await buildOnce();
    const daemon = new PrivateDocker();
    const trust = await mintTestTrust();
    // `up --container` enforces (eBPF on): on a parent of its own, never the machine's default
    // `clawker` (programs left there steer every later agent), flushed and removed at the end.
    const parent = privateEbpfParent("bench");
    try {
      await daemon.start();
      const host = daemon.dockerHost;
      // The base import is the engine's, not the build's: time it apart (debootstrap is cached).
      const baseMs = await timeMs(() =>
        execFileP("bash", [join(REPO_ROOT, "docker/base/debian-base.sh")], {
          env: dockerEnv(host),
          timeout: 15 * 60_000,
        }),
      );
      ctx.log(`Debian base imported into the fresh engine in ${baseMs.toFixed(0)} ms`);
      const coldStart = performance.now();
      let cp: BuiltImage = (await buildImages(host, "controlplane"))["controlplane"]!;
      const coldMs = performance.now() - coldStart;
      ctx.log(`cold build ${cp.ref}: docker build ${cp.seconds} s, ${(cp.sizeBytes / 1e6).toFixed(1)} MB`);
      const warm = await repeat(ctx, async () => {
        // Untag only: the build cache keeps every layer, so this is a rebuild from a warm cache.
        await dockerCli(host, ["rmi", "--no-prune", cp.ref]);
        const warmStart = performance.now();
        cp = (await buildImages(host, "controlplane"))["controlplane"]!;
        if (cp.cached) throw new Error("the warm build did not build");
        return performance.now() - warmStart;
      });
      const agent = (await buildImages(host, "agent"))["agent"]!;
      ctx.log(`agent ${agent.ref}: ${(agent.sizeBytes / 1e6).toFixed(1)} MB`);

      const cgroupMount = cgroup2Mount()!;
      let n = 0;
      const starts = await repeat(ctx, async () => {
        const name = `clawker-cp-bench-${n++}`;
        const id = (
          await dockerCli(host, [
            "create",
            "--name",
            name,
            // A fresh state volume each run: a first start, keys and databases created.
            ...documentedRunFlags({
              cgroupMount,
              dockerSocket: daemon.socketPath,
              trustDir: trust.trustDir,
              stateVolume: name,
            }),
            cp.ref,
          ])
        ).trim();
        try {
          const { stdout } = await runInNetns(daemon, NODE_BINARY, ["-e", COLD_START, id], {
            env: dockerEnv(host),
            timeoutMs: 90_000,
          });
          return Number(stdout);
        } finally {
          await dockerCli(host, ["rm", "--force", "--volumes", id]);
          await dockerCli(host, ["volume", "rm", name]).catch(() => undefined);
        }
      });
      // `clawker controlplane up --container` with the image present: a fresh create each run (its
      // container and state volume removed after), the CLI's whole run and its own healthy figure.
      const upEnv: NodeJS.ProcessEnv = {
        ...process.env,
        DOCKER_HOST: host,
        CLAWKER_CP_TRUST_DIR: trust.trustDir,
        CLAWKER_CP_DATA_DIR: join(trust.dir, "cli-state"),
        // Never the system's /run/clawker/admin.sock (up --container's default as root): tests
        // running beside the bench would dial it first and reach this control plane instead.
        CLAWKER_ADMIN_SOCKET: join(trust.dir, "run", "admin.sock"),
      };
      const healthy: number[] = [];
      const ups = await repeat(ctx, async () => {
        try {
          const upStart = performance.now();
          const r = await clawker(
            [
              "controlplane",
              "up",
              "--container",
              "--image",
              cp.ref,
              "--cgroup-parent",
              parent.name,
              "--format",
              "json",
            ],
            {
              netns: daemon.netnsName,
              env: upEnv,
            },
          );
          const wallMs = performance.now() - upStart;
          if (r.code !== 0) throw new Error(`up --container exited ${r.code}: ${r.stderr}`);
          healthy.push((JSON.parse(r.stdout) as { healthyAfterMs: number }).healthyAfterMs);
          return wallMs;
        } finally {
          await dockerCli(host, ["rm", "--force", "--volumes", "clawker-controlplane"]).catch(
            () => undefined,
          );
          await dockerCli(host, ["volume", "rm", "clawker-cp-data"]).catch(() => undefined);
        }
      });
      return [
        summarise(
          "up --container to healthy (the clawker process, from source via tsx)",
          "ms",
          ups,
          "lower",
          "<= 5000 ms",
        ),
        summarise(
          "up --container to healthy (healthyAfterMs it reports)",
          "ms",
          healthy,
          "lower",
          "<= 5000 ms",
        ),
        summarise("control-plane image build, cold engine (docker/build.sh)", "s", [coldMs / 1000], "lower"),
        summarise(
          "control-plane image build, warm cache (docker/build.sh)",
          "s",
          warm.map((ms) => ms / 1000),
          "lower",
          "<= 60 s",
        ),
        summarise("control-plane image size", "MB", [cp.sizeBytes / 1e6], "lower", "< 250 MB"),
        summarise("agent image size", "MB", [agent.sizeBytes / 1e6], "lower"),
        summarise("container cold start (docker start to /healthz 200)", "ms", starts, "lower", "<= 3000 ms"),
      ];
    } finally {
      await daemon.close();
      await trust.close();
      // After the engine: its containers are gone, their pins and cgroups are not.
      await removeEbpfParent(parent);
    }
  },
};

export default bench;
