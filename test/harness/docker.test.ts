// The private dockerd end to end: ready, busybox and Node images, a netns process reached from a
// --network host container, and a teardown that leaves nothing behind.
import assert from "node:assert/strict";
import { test } from "node:test";
import { runContainer } from "./containers.js";
import { PrivateDocker, startPrivateDocker } from "./docker.js";
import { busyboxImage, importRootfs, nodeEntries, nodeImage, NODE_BINARY } from "./images.js";
import { isClean } from "./leftovers.js";
import { NetnsProcess, runInNetns } from "./netns.js";
import { command, requires, root } from "./preconditions.js";

const needs = [root, command("dockerd"), command("nsenter"), command("ip"), command("ldd")];

void test("PrivateDocker: a private dockerd in its own netns, images, and a clean teardown", async (t) => {
  if (!requires(t, ...needs)) return;
  const daemon = await startPrivateDocker(t);
  t.diagnostic(`dockerd ready in ${daemon.readyMs.toFixed(0)} ms (target < 2000 ms)`);

  await t.test("answers on its own socket, from its own netns, with its state in the temp dir", async () => {
    assert.equal(daemon.dockerHost, `unix://${daemon.dir}/docker.sock`);
    const info = (await daemon.docker.info()) as { DockerRootDir: string };
    assert.equal(info.DockerRootDir, `${daemon.dir}/d`);
    assert.equal(
      (await daemon.docker.listContainers({ all: true })).length,
      0,
      "a fresh daemon has no containers",
    );
    // The daemon's bridge lives in its netns, with the address we pinned.
    const { stdout } = await runInNetns(daemon, "ip", ["-o", "-4", "addr", "show", "docker0"]);
    assert.match(stdout, /inet 10\.201\.0\.1\/24/);
  });

  let busybox = "";
  await t.test("runs a busybox container and reads its output", async () => {
    busybox = await busyboxImage(daemon.docker);
    const nonce = `hello-${process.pid}-${Date.now()}`;
    const result = await runContainer(daemon.docker, {
      image: busybox,
      cmd: ["sh", "-c", `echo ${nonce}; echo oops >&2; exit 7`],
    });
    assert.deepEqual(result, { exitCode: 7, stdout: `${nonce}\n`, stderr: "oops\n" });
  });

  await t.test("runs the Node 24 image", async () => {
    const image = await nodeImage(daemon.docker);
    const result = await runContainer(daemon.docker, {
      image,
      cmd: ["node", "-e", "console.log(process.version, require('node:os').arch())"],
    });
    assert.equal(result.exitCode, 0, result.stderr);
    assert.match(result.stdout, /^v24\.\d+\.\d+ x64\n$/);
    // Same content in the same daemon: the import is skipped.
    const again = await importRootfs(daemon.docker, "clawker-test/node24", await nodeEntries());
    assert.deepEqual(again, { ref: image, cached: true });
    // Different content: a different tag.
    const extra = await importRootfs(daemon.docker, "clawker-test/node24", [
      ...(await nodeEntries()),
      { kind: "file", path: "/app/main.js", content: "console.log('extra file ran')\n" },
    ]);
    assert.equal(extra.cached, false);
    assert.notEqual(extra.ref, image);
    const ran = await runContainer(daemon.docker, { image: extra.ref, cmd: ["node", "/app/main.js"] });
    assert.equal(ran.stdout, "extra file ran\n");
  });

  await t.test("a process in the daemon's netns is reachable from a --network host container", async () => {
    const server = new NetnsProcess(daemon, NODE_BINARY, [
      "-e",
      `const s = require("node:http").createServer((q, r) => r.end("pong " + process.pid));
       s.listen(0, "127.0.0.1", () => console.log("port=" + s.address().port));
       process.on("SIGTERM", () => s.close());`,
    ]);
    t.after(() => server.close());
    await server.start();
    const port = (await server.waitForOutput(/port=(\d+)/))[1]!;
    const result = await runContainer(daemon.docker, {
      image: busybox,
      networkMode: "host",
      cmd: ["wget", "-q", "-O", "-", `http://127.0.0.1:${port}/`],
    });
    assert.equal(result.exitCode, 0, result.stderr);
    assert.equal(result.stdout, `pong ${server.pid}`);
    await server.close();
    assert.equal((await server.exited).code, 0, "the server exits cleanly on SIGTERM");
  });

  await t.test("close() removes containers, networks, daemon, mounts, netns and temp dir", async () => {
    // Leave work behind on purpose: a running container, a network, a netns process.
    await daemon.docker.createNetwork({
      Name: "leftover-net",
      Internal: true,
      IPAM: { Config: [{ Subnet: "10.203.7.0/24" }] },
    });
    const sleeper = await daemon.docker.createContainer({
      Image: busybox,
      Cmd: ["sleep", "600"],
      HostConfig: { NetworkMode: "leftover-net" },
    });
    await sleeper.start();
    const lingering = new NetnsProcess(daemon, "sleep", ["600"]);
    await lingering.start();
    const before = await daemon.leftovers();
    assert.ok(
      before.processes.some((p) => p.command.startsWith("dockerd ")),
      "dockerd is found while running",
    );
    assert.ok(
      before.processes.some((p) => p.command.includes("containerd-shim")),
      "the container's shim is found",
    );
    assert.ok(
      before.processes.some((p) => p.pid === lingering.pid),
      "the netns process is found",
    );
    assert.ok(before.mounts.length > 0 && before.netnsExists && before.dirExists);

    await daemon.close();
    const after = await daemon.leftovers();
    assert.deepEqual(after, { processes: [], mounts: [], netnsExists: false, dirExists: false });
    assert.ok(isClean(after));
    assert.notEqual((await lingering.exited).signal ?? (await lingering.exited).code, null);
    await daemon.close(); // idempotent
  });
});

void test("PrivateDocker: a dockerd that dies during start fails fast with its log, and close() still cleans up", async (t) => {
  if (!requires(t, ...needs)) return;
  const daemon = new PrivateDocker({ extraArgs: ["--no-such-flag"] });
  t.after(() => daemon.close());
  const started = Date.now();
  await assert.rejects(daemon.start(), /dockerd exited before it became ready[\s\S]*no-such-flag/);
  t.diagnostic(`failed start detected after ${Date.now() - started} ms`);
  await daemon.close();
  assert.ok(isClean(await daemon.leftovers()));
});
