// The admin API's Unix socket against a real in-process server: where it refuses to listen (a
// directory others can enter or that is not ours, a live socket, a file that is not a socket), a
// stale socket replaced, mode 0600 even under umask 0, and no file left after close().
import assert from "node:assert/strict";
import {
  chmodSync,
  chownSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import { pino } from "pino";
import { requires, root } from "../../../test/harness/preconditions.js";
import { AuthServer, parseConfig, type AuthServerConfigInput } from "../src/index.js";
import { ADMIN, TestHttp } from "./fixtures/oauth.js";
import { makeWorkspace } from "./fixtures/server.js";

async function workspace(t: TestContext): Promise<{ dir: string; base: AuthServerConfigInput }> {
  const w = await makeWorkspace();
  t.after(() => rmSync(w.dir, { recursive: true, force: true }));
  return w;
}

function server(config: AuthServerConfigInput): AuthServer {
  return new AuthServer(parseConfig(config), pino({ level: "silent" }));
}

function listenNet(path: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer((c) => c.end());
    s.once("error", reject);
    s.listen(path, () => resolve(s));
  });
}

function closeNet(s: Server): Promise<void> {
  return new Promise((resolve) => s.close(() => resolve()));
}

test("a socket directory group or others can enter is refused before anything listens", async (t) => {
  const { dir, base } = await workspace(t);
  const sockDir = join(dir, "run");
  mkdirSync(sockDir, { mode: 0o700 });
  for (const mode of [0o750, 0o705, 0o701]) {
    chmodSync(sockDir, mode);
    const s = server({ ...base, admin: { socket: join(sockDir, "admin.sock") } });
    await assert.rejects(s.start(), (err: Error & { reason?: string }) => {
      assert.equal(err.reason, "admin_socket_insecure");
      assert.match(err.message, new RegExp(`${sockDir}.*mode ${mode.toString(8)}`));
      return true;
    });
    assert.equal(s.addresses, undefined);
    assert.throws(() => lstatSync(join(sockDir, "admin.sock")), { code: "ENOENT" });
  }
});

test("a socket directory owned by another user is refused", async (t) => {
  if (!requires(t, root)) return;
  const { dir, base } = await workspace(t);
  const sockDir = join(dir, "run");
  mkdirSync(sockDir, { mode: 0o700 });
  chownSync(sockDir, 65534, 65534);
  const s = server({ ...base, admin: { socket: join(sockDir, "admin.sock") } });
  await assert.rejects(s.start(), { reason: "admin_socket_insecure", message: /owned by uid 65534/ });
});

test("the socket is 0600 even when the process umask is 0, and close() removes it", async (t) => {
  const { base } = await workspace(t);
  const s = server(base);
  const previous = process.umask(0);
  let socket: string;
  try {
    socket = (await s.start()).adminSocket;
  } finally {
    process.umask(previous);
  }
  t.after(() => s.close());
  assert.equal(lstatSync(socket).mode & 0o777, 0o600);
  assert.equal(process.umask(), previous, "the umask is restored");
  await s.close();
  assert.throws(() => lstatSync(socket), { code: "ENOENT" });
});

test("a stale socket from an earlier run is replaced", async (t) => {
  const { dir, base } = await workspace(t);
  const socket = join(dir, "admin.sock");
  // A socket file nobody listens on: bind elsewhere, move the file into place, close the listener.
  const tmp = join(dir, "tmp.sock");
  const old = await listenNet(tmp);
  renameSync(tmp, socket);
  await closeNet(old);
  assert.ok(lstatSync(socket).isSocket());

  const s = server(base);
  t.after(() => s.close());
  await s.start();
  const http = new TestHttp({ socketPath: socket });
  t.after(() => http.close());
  assert.equal((await http.call(`${ADMIN}/health/alive`, "GET")).status, 200);
});

test("a live socket is not taken over, and a file that is not a socket is not replaced", async (t) => {
  const { dir, base } = await workspace(t);
  const socket = join(dir, "admin.sock");
  const live = await listenNet(socket);
  const s1 = server(base);
  await assert.rejects(s1.start(), { reason: "listen_failed", message: /another server is listening/ });
  assert.ok(lstatSync(socket).isSocket(), "the live socket is still there");
  await closeNet(live);

  writeFileSync(socket, "precious", { mode: 0o600 });
  const s2 = server(base);
  await assert.rejects(s2.start(), { reason: "listen_failed", message: /not a socket/ });
  assert.equal(readFileSync(socket, "utf8"), "precious");
});
