// A SIGKILLed control plane leaves nothing that breaks the next one (issue 10 §2), with the real
// daemon (clawker-cp from source): its embedded authserver dies with it through its lifeline; the
// next start kills helpers that cannot watch one (FAKE Ory binaries here: the real ones cannot be
// installed) from the record file, never an unrelated process; and a process that answers 200 on
// the auth health URL without this start's nonce makes start-up fail instead of reporting healthy.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer } from "node:http";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import { mintTrustSet, writeTrustSet } from "@clawker/adminclient";
import { freePorts, helperPid, startControlPlane, type ControlPlane } from "../harness/controlplane.js";
import { isAlive } from "../harness/leftovers.js";
import { waitFor } from "../harness/wait-for.js";

const repo = fileURLToPath(new URL("../../", import.meta.url));

/** True when nothing accepts on `to` (a loopback TCP port or a Unix socket path). */
function refused(to: number | string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock =
      typeof to === "number"
        ? createConnection({ host: "127.0.0.1", port: to })
        : createConnection({ path: to });
    sock.once("connect", () => {
      sock.destroy();
      resolve(false);
    });
    sock.once("error", (err: NodeJS.ErrnoException) =>
      resolve(err.code === "ECONNREFUSED" || err.code === "ENOENT"),
    );
  });
}

/** An executable named like the real Ory binary that runs the FAKE through tsx (as daemon-ory.test.ts). */
function fakeBinary(dir: string, name: "hydra" | "kratos" | "oathkeeper"): string {
  const file = join(dir, name);
  writeFileSync(
    file,
    `#!/bin/sh\nexec "${process.execPath}" --import "${import.meta.resolve("tsx")}" --conditions=source "${join(repo, "test/fakes", `fake-${name}.ts`)}" "$@"\n`,
  );
  chmodSync(file, 0o755);
  return file;
}

test("kill -9 of the daemon: its authserver exits within 2 s and frees its ports; a restart works", async (t) => {
  const cp = await startControlPlane();
  t.after(() => cp.close());
  const auth = helperPid(cp, "authserver");
  cp.proc.kill("SIGKILL");
  const began = Date.now();
  await cp.exited;
  await waitFor(() => !isAlive(auth), { timeoutMs: 10_000, what: "the orphaned authserver to exit" });
  const ms = Date.now() - began;
  assert.ok(ms < 2_000, `the authserver outlived its daemon by ${ms} ms`);
  assert.ok(await refused(cp.ports.authPublic), "auth public port still taken");
  assert.ok(await refused(join(cp.dataDir, "authserver", "admin.sock")), "auth admin socket still served");

  // Same ports, data dir and trust: nothing of the first instance is in the way.
  const again = await startControlPlane({
    dataDir: cp.dataDir,
    trustDir: cp.trustDir,
    trustSet: cp.trust!,
    ports: cp.ports,
  });
  t.after(() => again.close());
  assert.deepEqual(await (await fetch(again.healthUrl)).json(), { status: "healthy" });
  // Healthy through its own authserver (the nonce proves it), which holds the ports itself.
  const listening = again.logs.find(
    (l) =>
      l["helper"] === "authserver" && (l["line"] as { event?: string } | undefined)?.event === "listening",
  );
  assert.ok(listening !== undefined, "the new authserver bound its ports");
  assert.ok(isAlive(helperPid(again, "authserver")));
  assert.equal(await again.close(), 0);
});

/**
 * Starts the daemon with an impostor answering a bare 200 on the auth admin socket; `held` holds
 * each answer until the daemon saw its own authserver exit (it refuses the live socket), the order
 * a loaded machine gives when the authserver, forked before the daemon's modules load, gives up
 * before the daemon's first health poll is answered. Returns the drain's error.
 */
async function impostorStart(
  t: TestContext,
  held: boolean,
): Promise<{ reason?: string; message?: string } | undefined> {
  const dir = mkdtempSync(join(tmpdir(), "clawker-impostor-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const trust = await mintTrustSet();
  const trustDir = join(dir, "trust");
  await writeTrustSet(trustDir, trust);
  const dataDir = join(dir, "data");
  mkdirSync(join(dataDir, "authserver"), { recursive: true, mode: 0o700 });
  // Filled once the daemon runs: the held answers read its log.
  const daemon: { cp?: ControlPlane } = {};
  const authExitSeen = () =>
    daemon.cp?.logs.some((l) => l["event"] === "helper_crash" && l["helper"] === "authserver") === true;
  // What an orphan of an earlier instance looks like from the daemon's side: a bare 200 on the socket.
  const impostor = createHttpServer((_req, res) => {
    const answer = () => res.writeHead(200, { "content-type": "application/json" }).end('{"status":"ok"}');
    if (!held) {
      answer();
      return;
    }
    waitFor(authExitSeen, { timeoutMs: 30_000, what: "the daemon to see its authserver exit" }).then(
      answer,
      answer,
    );
  });
  await new Promise<void>((r) => impostor.listen(join(dataDir, "authserver", "admin.sock"), r));
  t.after(() => {
    impostor.closeAllConnections();
    impostor.close();
  });

  const cp = (daemon.cp = await startControlPlane({ trustDir, trustSet: trust, dataDir, noWait: true }));
  t.after(() => cp.close());
  assert.equal(await cp.exited, 1);
  if (held) assert.ok(authExitSeen(), "the daemon saw its authserver exit");
  assert.equal(cp.logs.filter((l) => l["event"] === "ready").length, 0, "never reported ready");
  const drain = cp.logs.find((l) => l["event"] === "drain");
  assert.equal(drain?.["cause"], "startup_failed");
  assert.ok(!isAlive(helperPid(cp, "authserver")), "our own authserver was stopped");
  return drain?.["err"] as { reason?: string; message?: string } | undefined;
}

test("a process answering 200 on the auth admin socket without our nonce fails start-up, never ready", async (t) => {
  const err = await impostorStart(t, false);
  // Either way fails closed: the health wait sees the impostor's answer without the nonce
  // (not_ours), or our authserver refuses to take over a live socket and exits first.
  assert.ok(
    err?.reason === "not_ours" || err?.reason === "exited_before_healthy",
    `start-up failed for another reason: ${JSON.stringify(err)}`,
  );
  if (err?.reason === "not_ours")
    assert.match(err.message ?? "", /answered 200 but not with the instance nonce/);
});

test("our authserver exiting at the impostor's socket before any answer is a start-up failure, not a crash", async (t) => {
  const err = await impostorStart(t, true);
  assert.equal(err?.reason, "exited_before_healthy", JSON.stringify(err));
  assert.match(err?.message ?? "", /helper authserver exited before becoming healthy/);
});

test("after kill -9 in Ory mode (FAKE binaries) the restart kills the verified leftovers, never a recycled pid", async (t) => {
  const bin = mkdtempSync(join(tmpdir(), "clawker-fake-ory-"));
  t.after(() => rmSync(bin, { recursive: true, force: true }));
  const [kp, oa, op] = (await freePorts(3)) as [number, number, number];
  const config = {
    auth: {
      mode: "ory",
      ory: {
        hydra: fakeBinary(bin, "hydra"),
        kratos: fakeBinary(bin, "kratos"),
        oathkeeper: fakeBinary(bin, "oathkeeper"),
        kratosPublicPort: kp,
        oathkeeperApiPort: oa,
        oathkeeperProxyPort: op,
      },
    },
  };
  const cp = await startControlPlane({ config });
  t.after(() => cp.close());
  const names = ["hydra", "kratos", "oathkeeper"];
  const orphans = names.map((name) => helperPid(cp, name));
  t.after(() => {
    for (const pid of orphans) if (isAlive(pid)) process.kill(pid, "SIGKILL");
  });
  cp.proc.kill("SIGKILL");
  await cp.exited;
  // They have no lifeline: without the record they would keep the ports (and answer health).
  assert.ok(
    orphans.every((pid) => isAlive(pid)),
    "the fake Ory helpers outlive the SIGKILLed daemon",
  );

  // A record whose pid now names an unrelated process (start time differs): it must survive.
  const bystander = spawn("sleep", ["60"], { stdio: "ignore" });
  t.after(() => void bystander.kill("SIGKILL"));
  const recordFile = join(cp.dataDir, "helpers.json");
  assert.equal(statSync(recordFile).mode & 0o777, 0o600);
  const record = JSON.parse(readFileSync(recordFile, "utf8")) as { helpers: Record<string, unknown>[] };
  assert.deepEqual(
    record.helpers.map((h) => h["name"]),
    names,
  );
  record.helpers.push({ ...record.helpers[0], name: "recycled", pid: bystander.pid, startTime: "1" });
  writeFileSync(recordFile, JSON.stringify(record), { mode: 0o600 });

  const again = await startControlPlane({
    config,
    dataDir: cp.dataDir,
    trustDir: cp.trustDir,
    trustSet: cp.trust!,
    ports: cp.ports,
  });
  t.after(() => again.close());
  const killed = again.logs.filter((l) => l["event"] === "leftover_killed");
  assert.deepEqual(
    killed.map((l) => [l["helper"], l["pid"]]),
    names.map((name, i) => [name, orphans[i]]),
  );
  const firstStart = again.logs.findIndex((l) => l["msg"] === "helper started");
  assert.ok(
    again.logs.findLastIndex((l) => l["event"] === "leftover_killed") < firstStart,
    "leftovers are killed before anything is spawned",
  );
  for (const pid of orphans) assert.equal(isAlive(pid), false);
  assert.equal(isAlive(bystander.pid!), true, "the unrelated process survived");
  assert.deepEqual(await (await fetch(again.healthUrl)).json(), { status: "healthy" });
  assert.equal(await again.close(), 0);
});
