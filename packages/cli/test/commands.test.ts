// The CLI's commands against real things: a real trust dir on disk, real child processes, a real
// HTTP /healthz server on 127.0.0.1:0. The daemon itself is exercised in test/e2e/.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { X509Certificate } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test, type TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import { loadTrustSet, TRUST_FILES } from "@clawker/adminclient";
import { ExitCode, run, type Io } from "../src/index.js";
import { writePidFile } from "../src/pid-file.js";
import { readProcessIdentity } from "../src/process-identity.js";
import { waitFor } from "../../../test/harness/wait-for.js";
import { stepWithin } from "@clawker/test-support";

const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

interface Captured extends Io {
  out(): string;
  err(): string;
}

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), "clawker-cli-test-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Io with everything pointed into `home` so nothing touches the real user's dirs. */
function io(home: string): Captured {
  let out = "";
  let err = "";
  return {
    stdout: { write: (s) => void (out += s) },
    stderr: { write: (s) => void (err += s) },
    env: {
      PATH: process.env["PATH"] ?? "",
      XDG_CONFIG_HOME: join(home, "config"),
      XDG_STATE_HOME: join(home, "state"),
    },
    out: () => out,
    err: () => err,
  };
}

/** A real process that lives until killed. */
function sleeper(t: TestContext): number {
  const child = spawn(process.execPath, ["-e", "setInterval(() => {}, 60000)"], { stdio: "ignore" });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });
  return child.pid!;
}

/** Writes the pid file `up` would have written for the live process `pid`. */
async function recordPid(dir: string, pid: number): Promise<void> {
  const identity = readProcessIdentity(pid);
  assert.ok(identity !== undefined, `pid ${pid} is not running`);
  mkdirSync(dir, { recursive: true });
  await writePidFile(join(dir, "controlplane.pid"), identity);
}

// Each `auth init` mints keys on the threadpool and fsyncs every file and the dir: a CI run once
// sat in one of them for the whole test timeout, so each run is a named step with its own bound,
// whose failure shows the threads' wait channels (fsync behind the journal, or busy workers).
const AUTH_INIT_STEP_MS = 90_000;
const authInit = (name: string, args: string[], c: Io): Promise<number> =>
  stepWithin(name, AUTH_INIT_STEP_MS, () => run(args, c));

describe("auth init", () => {
  test("writes the trust set with 0700/0600 modes; it loads and validates", async (t) => {
    const home = tempDir(t);
    const c = io(home);
    assert.equal(
      await authInit("auth init", ["auth", "init", "--san", "cp.internal"], c),
      ExitCode.ok,
      c.err(),
    );
    const dir = join(home, "config", "clawker", "trust");
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    for (const [role, file] of Object.entries(TRUST_FILES)) {
      const mode = statSync(join(dir, file)).mode & 0o777;
      const secret = /Key$/.test(role) && role !== "signingPublicKey";
      assert.equal(mode, secret ? 0o600 : 0o644, file);
      assert.ok(c.out().includes(file), `output names ${file}`);
    }
    const set = await loadTrustSet(dir);
    assert.match(c.out(), new RegExp(set.signingKey.kid));
    const san = new X509Certificate(set.controlPlaneServer.certPem).subjectAltName ?? "";
    assert.match(san, /DNS:cp\.internal/);
  });

  test("refuses to overwrite without --force (exit 5, files unchanged); --force replaces", async (t) => {
    const home = tempDir(t);
    const dir = join(home, "trust");
    assert.equal(
      await authInit("the first auth init", ["auth", "init", "--dir", dir], io(home)),
      ExitCode.ok,
    );
    const before = readFileSync(join(dir, "ca.crt"), "utf8");
    const refused = io(home);
    assert.equal(
      await authInit("auth init without --force", ["auth", "init", "--dir", dir], refused),
      ExitCode.exists,
    );
    assert.match(refused.err(), /^clawker: error: trust material: exists: .*--force/);
    assert.equal(refused.out(), "");
    assert.equal(readFileSync(join(dir, "ca.crt"), "utf8"), before);
    const forced = io(home);
    assert.equal(
      await authInit(
        "auth init --force",
        ["auth", "init", "--dir", dir, "--force", "--format", "json"],
        forced,
      ),
      ExitCode.ok,
    );
    assert.notEqual(readFileSync(join(dir, "ca.crt"), "utf8"), before);
    const json = JSON.parse(forced.out()) as {
      dir: string;
      dirMode: string;
      files: Array<{ file: string; mode: string }>;
    };
    assert.equal(json.dir, dir);
    assert.equal(json.dirMode, "0700");
    assert.equal(json.files.find((f) => f.file === "ca.key")?.mode, "0600");
    await loadTrustSet(dir);
  });

  test("a SAN the CA refuses to sign is a usage error", async (t) => {
    const home = tempDir(t);
    const c = io(home);
    assert.equal(
      await run(["auth", "init", "--dir", join(home, "t"), "--san", "bad name!"], c),
      ExitCode.usage,
    );
  });
});

describe("controlplane down", () => {
  test("not running (no pid file) is exit 0 with a message", async (t) => {
    const home = tempDir(t);
    const c = io(home);
    assert.equal(await run(["controlplane", "down"], c), ExitCode.ok);
    assert.match(c.out(), /not running/);
    const j = io(home);
    assert.equal(await run(["controlplane", "down", "--format", "json"], j), ExitCode.ok);
    assert.equal((JSON.parse(j.out()) as { wasRunning: boolean }).wasRunning, false);
  });

  test("a stale pid file is removed, exit 0", async (t) => {
    const home = tempDir(t);
    const child = spawn(process.execPath, ["-e", ""], { stdio: "ignore" });
    const pid = child.pid!;
    await new Promise((r) => child.once("exit", r));
    writeFileSync(join(home, "controlplane.pid"), `${pid}\n`);
    const c = io(home);
    assert.equal(await run(["controlplane", "down", "--data-dir", home], c), ExitCode.ok);
    assert.match(c.out(), /stale pid file/);
    assert.equal(existsSync(join(home, "controlplane.pid")), false);
  });

  test("stops a running process with SIGTERM and removes the pid file", async (t) => {
    const home = tempDir(t);
    const pid = sleeper(t);
    await recordPid(home, pid);
    const c = io(home);
    assert.equal(
      await run(["controlplane", "down", "--data-dir", home, "--format", "json"], c),
      ExitCode.ok,
      c.err(),
    );
    const j = JSON.parse(c.out()) as { wasRunning: boolean; pid: number; killed: boolean };
    assert.deepEqual([j.wasRunning, j.pid, j.killed], [true, pid, false]);
    assert.equal(existsSync(join(home, "controlplane.pid")), false);
    assert.equal(c.err(), "");
  });

  test("SIGKILLs a process that ignores SIGTERM after --timeout, with a warning", async (t) => {
    const home = tempDir(t);
    const child = spawn(
      process.execPath,
      [
        "-e",
        "process.on('SIGTERM', () => {}); process.stdout.write('ready\\n'); setInterval(() => {}, 60000)",
      ],
      {
        stdio: ["ignore", "pipe", "ignore"],
      },
    );
    t.after(() => void (child.exitCode === null && child.signalCode === null && child.kill("SIGKILL")));
    // Wait until its SIGTERM handler is installed, or the default action would end it.
    await new Promise((r) => child.stdout.once("data", r));
    await recordPid(home, child.pid!);
    const c = io(home);
    assert.equal(
      await run(["controlplane", "down", "--data-dir", home, "--timeout", "300ms"], c),
      ExitCode.ok,
    );
    assert.match(c.err(), /^clawker: warning: pid \d+ did not exit within 0.3s of SIGTERM; sending SIGKILL/);
    assert.match(c.out(), /with SIGKILL/);
    await waitFor(() => child.signalCode === "SIGKILL", { what: "the child killed" });
  });
});

describe("controlplane status", () => {
  async function healthServer(t: TestContext, status: number, body: unknown): Promise<string> {
    const server = createServer((req, res) => {
      res.writeHead(req.url === "/healthz" ? status : 404, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    t.after(() => new Promise<void>((r) => server.close(() => r())));
    return `127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  test("healthy: exit 0, JSON with the /healthz body and the live pid", async (t) => {
    const home = tempDir(t);
    const health = await healthServer(t, 200, { status: "healthy" });
    const pid = sleeper(t);
    await recordPid(home, pid);
    const c = io(home);
    const code = await run(
      [
        "controlplane",
        "status",
        "--data-dir",
        home,
        "--health",
        health,
        "--admin",
        "127.0.0.1:1",
        "--format",
        "json",
      ],
      c,
    );
    assert.equal(code, ExitCode.ok, c.err());
    const j = JSON.parse(c.out()) as {
      state: string;
      process: { pid: number; alive: boolean };
      health: { url: string; httpStatus: number; body: { status: string } };
      clock: { error?: string } | null;
    };
    assert.equal(j.state, "healthy");
    assert.deepEqual(j.process.pid, pid);
    assert.equal(j.process.alive, true);
    assert.equal(j.health.url, `http://${health}/healthz`);
    assert.equal(j.health.httpStatus, 200);
    assert.equal(j.health.body.status, "healthy");
    // No trust dir in this home: the clock is reported as unknown with the reason, not a crash.
    assert.match(j.clock?.error ?? "", /trust material: missing/);
  });

  test("not ready: exit 1 and the body in text form", async (t) => {
    const home = tempDir(t);
    const health = await healthServer(t, 503, { status: "unhealthy", failed_probe: "authserver" });
    const c = io(home);
    assert.equal(
      await run(["controlplane", "status", "--health", health, "--admin", "127.0.0.1:1"], c),
      ExitCode.error,
    );
    assert.match(c.out(), /control plane: unhealthy/);
    assert.match(c.out(), /503 unhealthy \(failed probe: authserver\)/);
    assert.match(c.out(), /no pid file/);
  });

  test("nothing running: exit 3", async (t) => {
    const home = tempDir(t);
    const port = await new Promise<number>((resolve) => {
      const s = createServer();
      s.listen(0, "127.0.0.1", () => {
        const p = (s.address() as AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const c = io(home);
    assert.equal(
      await run(["controlplane", "status", "--health", `127.0.0.1:${port}`, "--format", "json"], c),
      ExitCode.notRunning,
    );
    const j = JSON.parse(c.out()) as {
      state: string;
      health: { reachable: boolean; error: string };
      clock: null;
    };
    assert.equal(j.state, "not running");
    assert.equal(j.health.reachable, false);
    assert.equal(j.health.error, "ECONNREFUSED");
    assert.equal(j.clock, null);
  });
});

describe("controlplane up (with stand-in daemons; the real one is in test/e2e)", () => {
  async function trusted(t: TestContext): Promise<{ home: string; trust: string; data: string }> {
    const home = tempDir(t);
    const trust = join(home, "trust");
    assert.equal(await run(["auth", "init", "--dir", trust], io(home)), ExitCode.ok);
    return { home, trust, data: join(home, "data") };
  }

  test("without a trust set it fails before starting anything and points at auth init", async (t) => {
    const home = tempDir(t);
    const c = io(home);
    const code = await run(
      ["controlplane", "up", "--daemon", fixture("crashing-daemon.js"), "--data-dir", join(home, "d")],
      c,
    );
    assert.equal(code, ExitCode.error);
    assert.match(c.err(), /trust material: missing: .*\(run: clawker auth init\)/);
    assert.equal(existsSync(join(home, "d")), false);
  });

  test("a daemon that exits early: exit 1 with the tail of its log; no pid file left", async (t) => {
    const { home, trust, data } = await trusted(t);
    const c = io(home);
    const code = await run(
      [
        "controlplane",
        "up",
        "--daemon",
        fixture("crashing-daemon.js"),
        "--data-dir",
        data,
        "--trust-dir",
        trust,
        "--health",
        "127.0.0.1:1",
      ],
      c,
    );
    assert.equal(code, ExitCode.error);
    assert.match(c.err(), /exited before becoming healthy \(exit code 3\)/);
    assert.match(c.err(), /boom, config is broken/);
    assert.match(c.err(), new RegExp(`data dir ${data}`), "the daemon got CLAWKER_CP_DATA_DIR");
    assert.match(c.err(), new RegExp(`trust dir ${trust}`), "the daemon got CLAWKER_CP_TRUST_DIR");
    assert.equal(existsSync(join(data, "controlplane.pid")), false);
    assert.equal(statSync(join(data, "controlplane.log")).mode & 0o777, 0o600);
    assert.equal(statSync(data).mode & 0o777, 0o700);
  });

  test("a daemon that never gets healthy is stopped after --timeout: exit 3", async (t) => {
    const { home, trust, data } = await trusted(t);
    const c = io(home);
    const code = await run(
      [
        "controlplane",
        "up",
        "--daemon",
        fixture("silent-daemon.js"),
        "--data-dir",
        data,
        "--trust-dir",
        trust,
        "--health",
        "127.0.0.1:1",
        "--timeout",
        "1s",
      ],
      c,
    );
    assert.equal(code, ExitCode.notRunning, c.err());
    assert.match(c.err(), /not healthy within 1s .*stopped it/);
    const pid = Number(/stand-in daemon pid (\d+) waiting/.exec(c.err())?.[1]);
    assert.ok(pid > 0, "the log tail shows the daemon's line");
    await waitFor(
      () => {
        try {
          process.kill(pid, 0);
          return false;
        } catch {
          return true;
        }
      },
      { what: "the stand-in daemon gone" },
    );
    assert.equal(existsSync(join(data, "controlplane.pid")), false);
  });

  test("refuses a second start while the pid file's process lives: exit 5", async (t) => {
    const { home, trust, data } = await trusted(t);
    const pid = sleeper(t);
    await recordPid(data, pid);
    const c = io(home);
    const code = await run(
      [
        "controlplane",
        "up",
        "--daemon",
        fixture("crashing-daemon.js"),
        "--data-dir",
        data,
        "--trust-dir",
        trust,
      ],
      c,
    );
    assert.equal(code, ExitCode.exists);
    assert.match(c.err(), new RegExp(`already running \\(pid ${pid}`));
  });

  test("a missing daemon executable is a clear error", async (t) => {
    const { home, trust, data } = await trusted(t);
    const c = io(home);
    c.env["PATH"] = home;
    // Named explicitly: unnamed, `up` would first find the clawker-cp of a built checkout.
    const code = await run(
      ["controlplane", "up", "--daemon", "clawker-cp", "--data-dir", data, "--trust-dir", trust],
      c,
    );
    assert.equal(code, ExitCode.error);
    assert.match(c.err(), /cannot find clawker-cp on PATH/);
  });
});
