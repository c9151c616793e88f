// The admin socket's file-system boundary (server/group-socket.ts) on real directories and real
// Unix sockets: a group that does not exist fails closed (0700/0600), a directory that is not
// ours or that the group could write is refused untouched, a live socket is never replaced, a
// stale one is, and the daemon refuses to start on a wrong-owner directory.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, chownSync, lstatSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { createConnection, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { describe, test } from "node:test";
import { pino } from "pino";
import { GroupSocket, GroupSocketError } from "../src/server/group-socket.js";
import { startControlPlane } from "../../../test/harness/controlplane.js";
import { root, skipReason } from "../../../test/harness/preconditions.js";

function capture(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino(
    { level: "debug" },
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(JSON.parse(chunk.toString("utf8")) as Record<string, unknown>);
        cb();
      },
    }),
  );
  return { log, lines };
}

function tempBase(t: { after(fn: () => void): void }): string {
  const base = mkdtempSync(join(tmpdir(), "clawker-gsock-"));
  t.after(() => rmSync(base, { recursive: true, force: true }));
  return base;
}

const modeOf = (path: string): string => (lstatSync(path).mode & 0o7777).toString(8);

function connects(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ path });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

describe("GroupSocket", () => {
  test("a group that does not exist: warned, directory 0700 and socket 0600, connections still served", async (t) => {
    const base = tempBase(t);
    const path = join(base, "run", "admin.sock");
    const { log, lines } = capture();
    const accepted: Socket[] = [];
    const socket = new GroupSocket({
      path,
      group: "clawker-no-such-group",
      log,
      onConnection: (s) => {
        accepted.push(s);
        s.destroy();
      },
      lookupGroup: () => Promise.resolve(undefined),
    });
    t.after(() => socket.close());
    const state = await socket.start();
    assert.deepEqual([state.gid, state.socketMode], [undefined, 0o600]);
    assert.deepEqual([modeOf(join(base, "run")), modeOf(path)], ["700", "600"]);
    const warned = lines.find((l) => l["event"] === "admin_socket_group_missing");
    assert.equal(warned?.["group"], "clawker-no-such-group");
    assert.equal(await connects(path), true);
    assert.equal(accepted.length, 1);
    await socket.close();
    await socket.close();
    assert.throws(() => lstatSync(path), /ENOENT/, "close unlinks the socket");
  });

  test("a directory the group could write or others could enter is refused and left as it is", async (t) => {
    const base = tempBase(t);
    for (const mode of [0o770, 0o755, 0o701]) {
      const dir = join(base, `d${mode.toString(8)}`);
      mkdirSync(dir);
      chmodSync(dir, mode);
      const socket = new GroupSocket({
        path: join(dir, "admin.sock"),
        group: process.getgid!(),
        log: capture().log,
        onConnection: (s) => s.destroy(),
      });
      await assert.rejects(
        socket.start(),
        (e: unknown) =>
          e instanceof GroupSocketError &&
          e.reason === "directory_insecure" &&
          e.message.includes(`${dir} must be a directory owned by uid ${process.getuid!()}`) &&
          e.message.includes(`with mode ${mode.toString(8)}`),
      );
      assert.equal(modeOf(dir), mode.toString(8), "never chmod-ed");
      assert.throws(() => lstatSync(join(dir, "admin.sock")), /ENOENT/, "nothing bound");
    }
  });

  test("a private directory (0700, another group) left from a start without the group: served 0600, warned, untouched", async (t) => {
    const base = tempBase(t);
    const dir = join(base, "run");
    mkdirSync(dir, { mode: 0o700 });
    const path = join(dir, "admin.sock");
    const { log, lines } = capture();
    const socket = new GroupSocket({
      path,
      group: "some-group",
      log,
      onConnection: (s) => s.destroy(),
      lookupGroup: () => Promise.resolve(process.getgid!() + 4242),
    });
    t.after(() => socket.close());
    const state = await socket.start();
    assert.deepEqual([state.gid, modeOf(dir), modeOf(path)], [undefined, "700", "600"]);
    assert.ok(lines.some((l) => l["event"] === "admin_socket_group_missing" && l["dir"] === dir));
    await socket.close();
    // The same directory open to its own (another) group: that group could enter, so refused.
    chmodSync(dir, 0o750);
    const other = new GroupSocket({
      path,
      group: "some-group",
      log,
      onConnection: (s) => s.destroy(),
      lookupGroup: () => Promise.resolve(process.getgid!() + 4242),
    });
    await assert.rejects(
      other.start(),
      (e: unknown) => e instanceof GroupSocketError && e.reason === "directory_insecure",
    );
  });

  test("a live socket is never replaced; a stale one (nobody listening) is", async (t) => {
    const base = tempBase(t);
    const dir = join(base, "run");
    mkdirSync(dir, { mode: 0o700 });
    const path = join(dir, "admin.sock");
    const other = createServer();
    await new Promise<void>((resolve) => other.listen(path, resolve));
    const second = new GroupSocket({
      path,
      group: process.getgid!(),
      log: capture().log,
      onConnection: (s) => s.destroy(),
    });
    await assert.rejects(
      second.start(),
      (e: unknown) => e instanceof GroupSocketError && e.reason === "path_taken",
    );
    assert.equal(await connects(path), true, "the live socket still answers");
    await new Promise<void>((resolve) => other.close(() => resolve()));
    // A socket file left by a SIGKILLed process: nobody listens on it any more.
    const killed = spawnSync(process.execPath, [
      "-e",
      `require("node:net").createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, "SIGKILL"))`,
    ]);
    assert.equal(killed.signal, "SIGKILL");
    assert.ok(lstatSync(path).isSocket());
    assert.equal(await connects(path), false, "stale");
    const third = new GroupSocket({
      path,
      group: process.getgid!(),
      log: capture().log,
      onConnection: (s) => s.destroy(),
    });
    t.after(() => third.close());
    await third.start();
    assert.equal(await connects(path), true);
  });
});

describe("the daemon and its admin socket directory", { skip: skipReason(root) }, () => {
  test("a directory owned by another user refuses start-up with a precise error, untouched", async (t) => {
    const base = tempBase(t);
    const dir = join(base, `run-${randomBytes(3).toString("hex")}`);
    mkdirSync(dir, { mode: 0o750 });
    chownSync(dir, 65534, 0);
    const cp = await startControlPlane({
      config: { listen: { adminSocket: { path: join(dir, "admin.sock"), group: 0 } } },
      noWait: true,
    });
    t.after(() => cp.close());
    assert.equal(await cp.exited, 1);
    const failed = cp.logs.find((l) => l["event"] === "drain" && l["cause"] === "startup_failed");
    const err = failed?.["err"] as { message?: string; reason?: string } | undefined;
    assert.equal(err?.reason, "directory_insecure");
    assert.match(
      err?.message ?? "",
      new RegExp(
        `admin socket directory ${dir} must be a directory owned by uid 0 and gid 0 .* owned by uid 65534 gid 0 with mode 750`,
      ),
    );
    const st = lstatSync(dir);
    assert.deepEqual([st.uid, modeOf(dir)], [65534, "750"]);
    assert.throws(() => lstatSync(join(dir, "admin.sock")), /ENOENT/);
  });
});
