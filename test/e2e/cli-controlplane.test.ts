// End to end: the real `clawker` CLI (its bin, as a process) drives the real daemon (clawker-cp
// from source, with the embedded auth server): auth init, up, status, an authorized ListAgents,
// a refused token, a second up, down, and status once it is gone.
import assert from "node:assert/strict";
import { chmodSync, cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { mintTrustSet } from "@clawker/adminclient";
import { DAEMON_GLIBC_TUNABLES } from "@clawker/cli";
import { freePorts } from "../harness/controlplane.js";
import { clawker } from "../harness/clawker-cli.js";
import { isAlive } from "../harness/leftovers.js";
import { waitFor } from "../harness/wait-for.js";

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
const daemonMain = join(repoRoot, "packages/controlplane/src/main.ts");

/** The pid on the pid file's first line. */
function pidOf(file: string): number {
  return Number(readFileSync(file, "utf8").split("\n")[0]);
}

test("clawker drives the real control plane: init, up, status, agents, down", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "clawker-e2e-"));
  const trustDir = join(dir, "trust");
  const dataDir = join(dir, "data");
  const [admin, agent, health, authPublic] = (await freePorts(4)) as [number, number, number, number];
  const config = join(dir, "cp.json");
  writeFileSync(
    config,
    JSON.stringify({
      listen: { agent: { port: agent } },
      auth: { publicPort: authPublic },
      shutdownGraceMs: 5000,
    }),
  );
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    CLAWKER_CP_DATA_DIR: dataDir,
    CLAWKER_CP_TRUST_DIR: trustDir,
    CLAWKER_CP_ADMIN_ADDR: `127.0.0.1:${admin}`,
    CLAWKER_CP_HEALTH_ADDR: `127.0.0.1:${health}`,
    CLAWKER_TOKEN_ENDPOINT: `https://127.0.0.1:${authPublic}/oauth2/token`,
    CLAWKER_CP_BIN: daemonMain,
  };
  const pidFile = join(dataDir, "controlplane.pid");
  t.after(async () => {
    // Whatever happened, leave no daemon (nor its auth server: same process group) behind.
    const pid = existsSync(pidFile) ? pidOf(pidFile) : undefined;
    if (pid !== undefined && isAlive(pid)) {
      try {
        process.kill(-pid, "SIGTERM");
        await waitFor(() => !isAlive(pid), { timeoutMs: 15_000, what: "daemon exit" });
      } catch {
        process.kill(-pid, "SIGKILL");
      }
    }
    rmSync(dir, { recursive: true, force: true });
  });

  const init = await clawker(["auth", "init"], { env });
  assert.equal(init.code, 0, init.stderr);

  const up = await clawker(
    ["controlplane", "up", "--config", config, "--timeout", "90s", "--format", "json"],
    { env },
  );
  assert.equal(up.code, 0, `up failed:\n${up.stderr}`);
  const summary = JSON.parse(up.stdout) as {
    pid: number;
    healthStatus: { status: string };
    clockSkewMs: number;
    logFile: string;
  };
  assert.equal(summary.healthStatus.status, "healthy");
  assert.ok(isAlive(summary.pid));
  assert.equal(pidOf(pidFile), summary.pid);
  // The second line records who that pid is, so that `down` never signals a recycled pid.
  const identity = JSON.parse(readFileSync(pidFile, "utf8").split("\n")[1]!) as { cmdline: string[] };
  assert.ok(identity.cmdline.includes(daemonMain), identity.cmdline.join(" "));
  // Started with the daemon's malloc tunables (daemon-env.ts), as the unit and the image start it.
  const environ = readFileSync(`/proc/${summary.pid}/environ`, "utf8").split("\0");
  assert.ok(
    environ.includes(`GLIBC_TUNABLES=${DAEMON_GLIBC_TUNABLES}`),
    environ.filter((e) => e.startsWith("GLIBC")).join(" "),
  );
  assert.match(
    readFileSync(summary.logFile, "utf8"),
    /"service":"clawker-cp"/,
    "daemon output goes to the log file",
  );
  // Progress went to stderr (plain lines: not a TTY), never to stdout.
  assert.match(up.stderr, /waiting for http:\/\/127\.0\.0\.1:\d+\/healthz/);

  const status = await clawker(["controlplane", "status", "--format", "json"], { env });
  assert.equal(status.code, 0, status.stderr);
  const st = JSON.parse(status.stdout) as {
    state: string;
    process: { pid: number; alive: boolean };
    clock: { skewMs: number; rttMs: number };
  };
  assert.equal(st.state, "healthy");
  assert.deepEqual(st.process, { pidFile, pid: summary.pid, alive: true });
  // Same machine, same clock: the skew is within the call's round trip.
  assert.ok(
    Math.abs(st.clock.skewMs) <= st.clock.rttMs + 50,
    `skew ${st.clock.skewMs} rtt ${st.clock.rttMs}`,
  );

  // An authorized call: token from the embedded auth server (private_key_jwt), then ListAgents.
  const agents = await clawker(["controlplane", "agents", "--format", "json"], { env });
  assert.equal(agents.code, 0, agents.stderr);
  assert.deepEqual(JSON.parse(agents.stdout), { agents: [] });
  const table = await clawker(["controlplane", "agents"], { env });
  assert.equal(table.code, 0, table.stderr);
  assert.equal(table.stdout, "no agents registered\n");

  // A signing key the control plane never registered: the token request is refused, exit 4.
  const otherTrust = join(dir, "other-trust");
  cpSync(trustDir, otherTrust, { recursive: true });
  chmodSync(otherTrust, 0o700);
  const stranger = (await mintTrustSet()).signingKey;
  writeFileSync(join(otherTrust, "cli-signing.jwk"), JSON.stringify(stranger.privateJwk), { mode: 0o600 });
  writeFileSync(join(otherTrust, "cli-signing.pub.jwk"), JSON.stringify(stranger.publicJwk));
  const refused = await clawker(["controlplane", "agents", "--trust-dir", otherTrust], { env });
  assert.equal(refused.code, 4, refused.stderr);
  assert.match(refused.stderr, /^clawker: error: token: token_request_failed: .*HTTP 401/);
  assert.equal(refused.stderr.trimEnd().split("\n").length, 1, "one line, no stack");

  const again = await clawker(["controlplane", "up", "--config", config], { env });
  assert.equal(again.code, 5, again.stderr);
  assert.match(again.stderr, /already running/);

  const down = await clawker(["controlplane", "down", "--format", "json"], { env });
  assert.equal(down.code, 0, down.stderr);
  const d = JSON.parse(down.stdout) as { wasRunning: boolean; pid: number; killed: boolean };
  assert.deepEqual([d.wasRunning, d.pid, d.killed], [true, summary.pid, false]);
  assert.equal(isAlive(summary.pid), false);
  assert.equal(existsSync(pidFile), false);
  assert.match(readFileSync(summary.logFile, "utf8"), /control plane stopped/);

  const downAgain = await clawker(["controlplane", "down"], { env });
  assert.equal(downAgain.code, 0);
  assert.match(downAgain.stdout, /not running/);

  const gone = await clawker(["controlplane", "status"], { env });
  assert.equal(gone.code, 3, gone.stdout + gone.stderr);
  assert.match(gone.stdout, /control plane: not running/);
});
