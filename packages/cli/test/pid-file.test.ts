// The pid file is never trusted blindly (issue 10 §3): `down` signals only the process the file
// proves is ours (same pid, start time, boot and argv); a real unrelated process whose pid sits in
// a stale file survives, `down` says so, exits non-zero and removes the file.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test, type TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import { ExitCode, run, type Io } from "../src/index.js";
import { pidState, readPidFile, writePidFile } from "../src/pid-file.js";
import { readProcessIdentity, type ProcessIdentity } from "../src/process-identity.js";

interface Captured extends Io {
  out(): string;
  err(): string;
}

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

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), "clawker-pidfile-test-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** `sleep 60`: a real process that is not the control plane. */
function unrelated(t: TestContext): ChildProcess {
  const child = spawn("sleep", ["60"], { stdio: "ignore" });
  t.after(() => void child.kill("SIGKILL"));
  return child;
}

const isRunning = (child: ChildProcess): boolean => child.exitCode === null && child.signalCode === null;

/** Records for the pid of `victim` an identity that is not its own, as a stale file would. */
const STALE: ReadonlyArray<[string, (real: ProcessIdentity) => string]> = [
  [
    "another start time (the pid was recycled)",
    (real) =>
      `${real.pid}\n${JSON.stringify({ startTime: String(Number(real.startTime) - 100), bootId: real.bootId, cmdline: real.cmdline })}\n`,
  ],
  [
    "another command line",
    (real) =>
      `${real.pid}\n${JSON.stringify({ startTime: real.startTime, bootId: real.bootId, cmdline: [process.execPath, "/usr/lib/clawker/clawker-cp"] })}\n`,
  ],
  ["no identity at all (an older clawker's file)", (real) => `${real.pid}\n`],
];

describe("controlplane down with a stale pid file", () => {
  for (const [what, content] of STALE) {
    test(`${what}: the unrelated process survives, exit 1 with a clear message, the file is removed`, async (t) => {
      const home = tempDir(t);
      const victim = unrelated(t);
      const real = readProcessIdentity(victim.pid!)!;
      const pidFile = join(home, "controlplane.pid");
      writeFileSync(pidFile, content(real), { mode: 0o600 });
      const c = io(home);
      assert.equal(
        await run(["controlplane", "down", "--data-dir", home, "--timeout", "300ms"], c),
        ExitCode.error,
      );
      assert.match(
        c.err(),
        new RegExp(`^clawker: error: .*pid ${real.pid}.*; not signalling it\\. Removed the stale pid file`),
      );
      assert.equal(c.out(), "");
      assert.equal(existsSync(pidFile), false, "the stale file is removed");
      // A signalled `sleep` dies at once (down waits for that); it is the same live process still.
      assert.deepEqual(readProcessIdentity(real.pid), real, "the unrelated process was signalled");
      assert.ok(isRunning(victim));
    });
  }

  test("the file `up` writes for a live process is ours: down stops exactly it", async (t) => {
    const home = tempDir(t);
    const daemonLike = unrelated(t);
    const identity = readProcessIdentity(daemonLike.pid!)!;
    await writePidFile(join(home, "controlplane.pid"), identity);
    assert.equal(statSync(join(home, "controlplane.pid")).mode & 0o777, 0o600);
    const c = io(home);
    assert.equal(await run(["controlplane", "down", "--data-dir", home], c), ExitCode.ok, c.err());
    assert.match(c.out(), new RegExp(`stopped the control plane \\(pid ${identity.pid}\\)`));
    await new Promise<void>((r) => (isRunning(daemonLike) ? daemonLike.once("exit", () => r()) : r()));
    assert.equal(daemonLike.signalCode, "SIGTERM");
  });
});

describe("pid file format", () => {
  test("first line the pid, second the identity; an older file reads as unverifiable", async (t) => {
    const home = tempDir(t);
    const file = join(home, "controlplane.pid");
    const self = readProcessIdentity(process.pid)!;
    await writePidFile(file, self);
    const [first, second] = readFileSync(file, "utf8").split("\n");
    assert.equal(first, String(process.pid));
    assert.deepEqual(JSON.parse(second!), {
      startTime: self.startTime,
      bootId: self.bootId,
      cmdline: self.cmdline,
    });
    const read = await readPidFile(file);
    assert.deepEqual(read, { pid: process.pid, identity: self });
    assert.equal(pidState(read), "ours");
    writeFileSync(file, `${process.pid}\n`);
    const legacy = await readPidFile(file);
    assert.deepEqual(legacy, { pid: process.pid, identity: undefined });
    assert.equal(pidState(legacy), "unverifiable");
    writeFileSync(file, "not a pid\n");
    assert.equal(await readPidFile(file), undefined);
  });
});

describe("controlplane up with a stale pid file", () => {
  test("a file naming an unrelated live process does not block up, and that process is left alone", async (t) => {
    const home = tempDir(t);
    const trust = join(home, "trust");
    const data = join(home, "data");
    assert.equal(await run(["auth", "init", "--dir", trust], io(home)), ExitCode.ok);
    const victim = unrelated(t);
    const real = readProcessIdentity(victim.pid!)!;
    mkdirSync(data, { recursive: true });
    writeFileSync(join(data, "controlplane.pid"), STALE[0]![1](real), { mode: 0o600 });
    const c = io(home);
    const daemon = fileURLToPath(new URL("./fixtures/crashing-daemon.js", import.meta.url));
    const code = await run(
      [
        "controlplane",
        "up",
        "--daemon",
        daemon,
        "--data-dir",
        data,
        "--trust-dir",
        trust,
        "--health",
        "127.0.0.1:1",
      ],
      c,
    );
    // It went on to start the (stand-in, crashing) daemon instead of refusing as "already running".
    assert.equal(code, ExitCode.error);
    assert.match(c.err(), /exited before becoming healthy/);
    assert.deepEqual(readProcessIdentity(real.pid), real, "the unrelated process was left alone");
  });
});
