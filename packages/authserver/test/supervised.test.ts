// The real clawker-authserver process under a supervisor that goes away: it exits when its lifeline
// reaches EOF, honours SIGTERM after the reader of its stdout is gone (EPIPE), and /health/ready
// echoes the instance nonce it was started with.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { createConnection, type Socket } from "node:net";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import { waitFor } from "../../../test/harness/wait-for.js";
import { ADMIN, TestHttp } from "./fixtures/oauth.js";
import { mainTs, repoRoot } from "./fixtures/process.js";
import { makeWorkspace } from "./fixtures/server.js";

interface Started {
  readonly child: ChildProcess;
  readonly lifeline: Socket;
  /** Path of the admin API's Unix socket. */
  readonly admin: string;
  readonly public: number;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const NONCE = "b4Wf0ZHkqk2xv6c7N1yH-Q_instance";

/** Spawns the process the way the control plane does: stdout piped to us, a lifeline on fd 3. */
async function startSupervised(t: TestContext, extraEnv: Record<string, string> = {}): Promise<Started> {
  const { dir, base } = await makeWorkspace();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, "auth.json");
  writeFileSync(file, JSON.stringify({ ...base, logLevel: "info" }));
  const child = spawn(
    process.execPath,
    ["--import", "tsx", "--conditions=source", mainTs, "--config", file],
    {
      cwd: repoRoot,
      env: { ...process.env, CLAWKER_LIFELINE_FD: "3", CLAWKER_INSTANCE_NONCE: NONCE, ...extraEnv },
      stdio: ["ignore", "pipe", "pipe", "pipe"],
    },
  );
  t.after(() => void child.kill("SIGKILL"));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  let out = "";
  let err = "";
  child.stderr!.setEncoding("utf8").on("data", (c: string) => (err += c));
  const listening = await new Promise<{ admin: { socket: string }; public: { port: number } }>(
    (resolve, reject) => {
      child.stdout!.setEncoding("utf8").on("data", (c: string) => {
        out += c;
        for (const line of out.split("\n")) {
          if (!line.includes('"event":"listening"')) continue;
          resolve(JSON.parse(line) as { admin: { socket: string }; public: { port: number } });
        }
      });
      void exited.then(({ code }) => reject(new Error(`exited ${code}: ${err}${out}`)));
    },
  );
  return {
    child,
    lifeline: child.stdio[3] as Socket,
    admin: listening.admin.socket,
    public: listening.public.port,
    exited,
  };
}

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
    sock.once("error", (e: NodeJS.ErrnoException) =>
      resolve(e.code === "ECONNREFUSED" || e.code === "ENOENT"),
    );
  });
}

test("/health/ready echoes the instance nonce; a malformed nonce is a config error (exit 2)", async (t) => {
  const p = await startSupervised(t);
  const admin = new TestHttp({ socketPath: p.admin });
  t.after(() => admin.close());
  const ready = await admin.call(`${ADMIN}/health/ready`, "GET");
  assert.equal(ready.status, 200);
  assert.deepEqual(ready.body, { status: "ok", instance: NONCE });

  const { dir, base } = await makeWorkspace();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, "auth.json");
  writeFileSync(file, JSON.stringify(base));
  const bad = spawn(process.execPath, ["--import", "tsx", "--conditions=source", mainTs, "--config", file], {
    cwd: repoRoot,
    env: { ...process.env, CLAWKER_INSTANCE_NONCE: "short" },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  bad.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
  const code = await new Promise<number | null>((resolve) => bad.once("exit", resolve));
  assert.match(stderr, /CLAWKER_INSTANCE_NONCE: must be 16-128 characters/);
  assert.equal(code, 2);
});

test("EOF on the lifeline (the supervisor died) ends the process within 2 s and frees its ports", async (t) => {
  const p = await startSupervised(t);
  const began = Date.now();
  // What the kernel does to the supervisor's end when it is SIGKILLed.
  p.lifeline.destroy();
  const exit = await p.exited;
  const ms = Date.now() - began;
  assert.ok(ms < 2_000, `took ${ms} ms`);
  assert.deepEqual(exit, { code: 1, signal: null });
  assert.ok(await refused(p.admin), "admin socket still served");
  assert.ok(await refused(p.public), "public port still taken");
});

test("SIGTERM is honoured promptly after the reader of stdout is gone (EPIPE on every log write)", async (t) => {
  // No lifeline: the orphan of issue 10 §2 that a reaper or an operator SIGTERMs.
  const p = await startSupervised(t, { CLAWKER_LIFELINE_FD: "" });
  p.child.stdout!.destroy();
  p.child.stderr!.destroy();
  await waitFor(() => p.child.stdout!.destroyed, { what: "our stdout end closed" });
  const began = Date.now();
  p.child.kill("SIGTERM");
  const exit = await Promise.race([
    p.exited,
    waitFor(() => false, { timeoutMs: 10_000 }).catch(() => "hung"),
  ]);
  const ms = Date.now() - began;
  assert.notEqual(exit, "hung", "the process ignored SIGTERM for 10 s");
  assert.ok(ms < 4_000, `took ${ms} ms`);
  assert.ok(await refused(p.admin));
});
