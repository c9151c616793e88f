// The admin-socket guards against real directories and real Unix sockets: only a 0700 directory
// of ours is accepted, a dead socket is removed, a live one or a regular file is left alone.
import assert from "node:assert/strict";
import {
  chmodSync,
  chownSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import { requires, root } from "../../../test/harness/preconditions.js";
import { AdminSocketError, assertPrivateDirectory, removeStaleSocket } from "../src/auth/admin-sockets.js";

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), "admin-sockets-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function listen(path: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer((c) => c.end());
    s.once("error", reject);
    s.listen(path, () => resolve(s));
  });
}

const close = (s: Server): Promise<void> => new Promise((resolve) => s.close(() => resolve()));

test("assertPrivateDirectory: 0700 and ours passes; any group or other bit is refused with the mode", (t) => {
  const dir = join(tempDir(t), "state");
  mkdirSync(dir, { mode: 0o700 });
  assertPrivateDirectory(dir);
  for (const mode of [0o750, 0o701, 0o777]) {
    chmodSync(dir, mode);
    assert.throws(
      () => assertPrivateDirectory(dir),
      (e: unknown) =>
        e instanceof AdminSocketError &&
        e.reason === "directory_not_private" &&
        e.message.includes(`mode ${mode.toString(8)}`),
    );
  }
});

test("assertPrivateDirectory: a 0700 directory of another user is refused", (t) => {
  if (!requires(t, root)) return;
  const dir = join(tempDir(t), "state");
  mkdirSync(dir, { mode: 0o700 });
  chownSync(dir, 65534, 65534);
  assert.throws(() => assertPrivateDirectory(dir), { reason: "directory_not_private", message: /uid 65534/ });
});

test("removeStaleSocket: nothing there is fine; a dead socket is removed", async (t) => {
  const dir = tempDir(t);
  const path = join(dir, "hydra-admin.sock");
  await removeStaleSocket(path);
  // A socket file nobody accepts on, as a SIGKILLed Go listener leaves it.
  const s = await listen(join(dir, "tmp.sock"));
  renameSync(join(dir, "tmp.sock"), path);
  await close(s);
  assert.ok(lstatSync(path).isSocket());
  await removeStaleSocket(path);
  assert.throws(() => lstatSync(path), { code: "ENOENT" });
});

test("removeStaleSocket: a live socket and a regular file are left alone and refused", async (t) => {
  const dir = tempDir(t);
  const path = join(dir, "hydra-admin.sock");
  const live = await listen(path);
  t.after(() => close(live));
  await assert.rejects(removeStaleSocket(path), { reason: "path_taken", message: /listening/ });
  assert.ok(lstatSync(path).isSocket());
  const file = join(dir, "kratos-admin.sock");
  writeFileSync(file, "keep me");
  await assert.rejects(removeStaleSocket(file), { reason: "path_taken", message: /not a socket/ });
  assert.equal(readFileSync(file, "utf8"), "keep me");
});
