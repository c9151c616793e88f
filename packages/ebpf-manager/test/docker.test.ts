// One container under the enrolled parent (docker run --cgroup-parent): its very first
// connection is steered, because the programs sit on the parent before the container exists.
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { existsSync, readdirSync, rmdirSync } from "node:fs";
import { basename, join } from "node:path";
import { createInterface } from "node:readline";
import { test } from "node:test";
import { promisify } from "node:util";
import {
  bpffs,
  busyboxImage,
  cgroup2,
  command,
  requires,
  root,
  runContainer,
  startPrivateDocker,
} from "../../../test/harness/index.js";
import { bin, ensureBpffs, Lab } from "./fixture.js";

const run = promisify(execFile);
ensureBpffs();

/** Addresses inside the private dockerd's netns: its default bridge gateway, and a "remote" on lo. */
const BRIDGE_GATEWAY = "10.201.0.1";
const REMOTE = "10.203.0.99";

/** Removes the cgroup directories Docker (cgroupfs driver) leaves under every hierarchy for a parent. */
function removeDockerCgroups(parentName: string, unifiedParent: string): void {
  const dirs = [
    unifiedParent,
    ...readdirSync("/sys/fs/cgroup").map((h) => join("/sys/fs/cgroup", h, parentName)),
  ];
  for (const dir of dirs) {
    if (!existsSync(dir) || dir === join("/sys/fs/cgroup", basename(dir))) continue;
    for (const child of readdirSync(dir, { withFileTypes: true })) {
      // container cgroups are 64-hex directories; the lab's own children are removed by the lab
      if (child.isDirectory() && /^[0-9a-f]{64}$/.test(child.name)) rmdirSync(join(dir, child.name));
    }
    if (dir !== unifiedParent) rmdirSync(dir);
  }
}

test("a container started under the enrolled parent has its very first connection steered", async (t) => {
  if (!requires(t, root, cgroup2, bpffs, command("dockerd"), command("nsenter"), command("ip"))) return;
  const lab = new Lab();
  const daemon = await startPrivateDocker(t);
  t.after(async () => {
    await daemon.close();
    removeDockerCgroups(basename(lab.parent), lab.parent);
    await lab.tearDown();
  });
  await lab.setUp({ enroll: false });
  await lab.client.enroll({ cgroup: lab.parent }, { ...lab.defaultConfig(), proxy: BRIDGE_GATEWAY });

  // the proxy side lives in dockerd's netns: the catch-all on the bridge gateway, and a "direct"
  // listener on the remote address that only an unsteered connection could reach
  await run("ip", ["-n", daemon.netnsName, "addr", "add", `${REMOTE}/32`, "dev", "lo"]);
  const listeners = spawn(
    bin.sockprobe,
    [
      "--netns",
      daemon.netnsPath,
      "--cgroup",
      lab.proxyCgroup,
      "serve",
      `tcp:${BRIDGE_GATEWAY}:15001:catchall`,
      `tcp:${REMOTE}:443:direct`,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  t.after(() => {
    listeners.kill("SIGKILL");
  });
  await new Promise<void>((res, rej) => {
    createInterface({ input: listeners.stdout }).on("line", (l) =>
      l.includes('"ready"') ? res() : rej(new Error(l)),
    );
    listeners.once("exit", (code) => rej(new Error(`listeners exited ${code}`)));
  });

  const image = await busyboxImage(daemon.docker);
  // the container's first and only action: connect; nc prints what the listener answered
  const result = await runContainer(daemon.docker, {
    image,
    cmd: ["sh", "-c", `sleep 2 | nc ${REMOTE} 443`],
    hostConfig: { CgroupParent: `/${basename(lab.parent)}`, CapDrop: ["NET_RAW"] },
    timeoutMs: 30_000,
  });
  assert.equal(result.exitCode, 0, result.stderr);
  const reply = JSON.parse(result.stdout.trim()) as { listener: string; origDst: string };
  assert.equal(reply.listener, "catchall");
  assert.equal(reply.origDst, `${REMOTE}:443`);

  // and the manager saw it as a decision of a cgroup under the parent
  const counters = (await lab.client.dump()).counters.filter(
    (c) => c.path === null || c.path.startsWith(lab.parent),
  );
  assert.ok(
    counters.some((c) => c.redirected >= 1),
    JSON.stringify(counters),
  );
});
