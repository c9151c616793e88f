import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  chmodSync,
  closeSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test } from "node:test";
import Database from "better-sqlite3";
import { Registry, RegistryError, type RegistryReason } from "./registry.js";

function tempDb(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), "clawker-registry-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, "nested", "registry.db");
}

const alpha = { containerId: "c1", agentName: "proj.alpha", project: "proj", certThumbprint: "aa" };

test("register creates, repeats idempotently and refuses a different thumbprint", (t) => {
  const reg = new Registry(tempDb(t));
  t.after(() => reg.close());
  assert.equal(reg.register(alpha, 100), "created");
  assert.equal(reg.register(alpha, 150), "unchanged");
  assert.equal(reg.get("c1")?.lastSeenUnix, 150);
  assert.equal(reg.register({ ...alpha, certThumbprint: "bb" }, 200), "thumbprint_mismatch");
  const row = reg.get("c1");
  assert.equal(row?.certThumbprint, "aa");
  assert.equal(row?.registeredAtUnix, 100);
  assert.equal(row?.lastSeenUnix, 150, "a refused registration changes nothing");
});

test("a thumbprint bound to one container cannot register another", (t) => {
  const reg = new Registry(tempDb(t));
  t.after(() => reg.close());
  reg.register(alpha, 1);
  assert.equal(reg.register({ ...alpha, containerId: "c2" }, 2), "thumbprint_mismatch");
  assert.equal(reg.get("c2"), undefined);
});

test("rows survive reopening and are listed by name; touch and remove report whether a row existed", (t) => {
  const path = tempDb(t);
  const first = new Registry(path);
  first.register({ ...alpha, containerId: "c2", agentName: "proj.beta", certThumbprint: "b" }, 5);
  first.register(alpha, 6);
  first.close();
  first.close(); // idempotent
  const reg = new Registry(path);
  t.after(() => reg.close());
  assert.deepEqual(
    reg.list().map((r) => r.agentName),
    ["proj.alpha", "proj.beta"],
  );
  assert.equal(reg.touch("c1", 9), true);
  assert.equal(reg.touch("nope", 9), false);
  assert.equal(reg.remove("c2"), true);
  assert.equal(reg.remove("c2"), false);
  assert.equal(reg.list().length, 1);
});

test("a database from a newer schema is refused, not silently used", (t) => {
  const path = tempDb(t);
  new Registry(path).close();
  const db = new Database(path);
  db.pragma("user_version = 99");
  db.close();
  assert.throws(() => new Registry(path), /schema version 99 is newer/);
});

test("the database runs in WAL mode", (t) => {
  const path = tempDb(t);
  const reg = new Registry(path);
  reg.close();
  const db = new Database(path, { readonly: true });
  t.after(() => db.close());
  assert.equal(db.pragma("journal_mode", { simple: true }), "wal");
});

test("the listing is one frozen object between writes and follows every write", (t) => {
  const reg = new Registry(tempDb(t));
  t.after(() => reg.close());
  const empty = reg.list();
  assert.equal(reg.list(), empty, "no write, same listing");
  assert.ok(Object.isFrozen(empty));
  reg.register(alpha, 1);
  const one = reg.list();
  assert.notEqual(one, empty);
  assert.deepEqual(
    one.map((r) => [r.containerId, r.lastSeenUnix]),
    [["c1", 1]],
  );
  assert.ok(Object.isFrozen(one[0]));
  assert.throws(() => (one as unknown as object[]).push({}));
  reg.register(alpha, 2); // unchanged, but last_seen moves
  assert.equal(reg.list()[0]?.lastSeenUnix, 2);
  reg.touch("c1", 3);
  assert.equal(reg.list()[0]?.lastSeenUnix, 3);
  assert.equal(reg.register({ ...alpha, certThumbprint: "zz" }, 4), "thumbprint_mismatch");
  assert.equal(reg.list()[0]?.certThumbprint, "aa");
  reg.remove("c1");
  assert.deepEqual(reg.list(), []);
});

/** A registry with enough rows to span several pages, closed (its WAL folded into the file). */
function populated(path: string): void {
  const reg = new Registry(path);
  for (let i = 0; i < 200; i++) {
    reg.register(
      {
        containerId: `c${i}`,
        agentName: `proj.agent${i}`,
        project: "proj",
        certThumbprint: `${i}`.padStart(64, "0"),
      },
      i,
    );
  }
  reg.close();
}

function overwrite(path: string, offset: number, bytes: Buffer): void {
  const fd = openSync(path, "r+");
  try {
    writeSync(fd, bytes, 0, bytes.length, offset);
  } finally {
    closeSync(fd);
  }
}

const sha = (path: string): string => createHash("sha256").update(readFileSync(path)).digest("hex");

const DAMAGE: ReadonlyArray<[string, RegistryReason, (path: string) => void]> = [
  ["a 0-byte file", "empty", (p) => truncateSync(p, 0)],
  ["a truncated file", "corrupt", (p) => truncateSync(p, Math.floor(statSync(p).size / 2))],
  ["a page overwritten with junk", "corrupt", (p) => overwrite(p, 4096 * 2, Buffer.alloc(4096, 0x5a))],
  ["a junk header", "corrupt", (p) => overwrite(p, 0, Buffer.alloc(100, 0x41))],
];

for (const [what, reason, damage] of DAMAGE) {
  test(`${what} is refused naming the file and the way out, and left byte-identical`, (t) => {
    const path = tempDb(t);
    populated(path);
    damage(path);
    const before = sha(path);
    const listing = readdirSync(dirname(path)).sort();
    assert.throws(
      () => new Registry(path),
      (e: unknown) => {
        assert.ok(e instanceof RegistryError, String(e));
        assert.equal(e.reason, reason);
        assert.equal(e.file, path);
        assert.ok(e.message.startsWith(`registry ${path}`), e.message);
        assert.match(e.message, /will not replace an existing registry/);
        assert.match(e.message, /move .* aside/);
        return true;
      },
    );
    assert.equal(sha(path), before, "the refused file was not changed");
    assert.deepEqual(readdirSync(dirname(path)).sort(), listing, "no -wal or -shm left behind");
  });
}

test("a sqlite database that is not a registry is refused, not taken over", (t) => {
  const path = tempDb(t);
  new Registry(path).close();
  rmSync(path);
  const other = new Database(path);
  other.exec("CREATE TABLE notes (body TEXT)");
  other.close();
  const before = sha(path);
  assert.throws(
    () => new Registry(path),
    (e: unknown) => e instanceof RegistryError && e.reason === "not_a_registry" && e.message.includes(path),
  );
  assert.equal(sha(path), before);
});

test("a storage error names the file (a page damaged while the registry is open)", (t) => {
  const path = tempDb(t);
  populated(path);
  const reg = new Registry(path);
  t.after(() => {
    try {
      reg.close();
    } catch {
      // closing a damaged database may fail too; the test is about list()
    }
  });
  // Every page but the schema's: whatever the listing reads is junk.
  overwrite(path, 4096, Buffer.alloc(statSync(path).size - 4096, 0x5a));
  assert.throws(
    () => reg.list(),
    (e: unknown) =>
      e instanceof RegistryError &&
      e.reason === "corrupt" &&
      e.message.startsWith(`registry ${path}: list failed`),
  );
  reg.close();
  assert.throws(
    () => reg.get("c1"),
    (e: unknown) => e instanceof RegistryError && e.reason === "closed",
  );
});

test("the registry files are 0600, also when an older install left them 0644; a new one appears whole", (t) => {
  const path = tempDb(t);
  const reg = new Registry(path);
  reg.register(alpha, 1);
  for (const file of [path, `${path}-wal`, `${path}-shm`])
    assert.equal(statSync(file).mode & 0o777, 0o600, file);
  reg.close();
  assert.deepEqual(readdirSync(dirname(path)), ["registry.db"], "no temporary file left");
  chmodSync(path, 0o644);
  const again = new Registry(path);
  t.after(() => again.close());
  assert.equal(again.get("c1")?.agentName, "proj.alpha");
  for (const file of [path, `${path}-wal`, `${path}-shm`])
    assert.equal(statSync(file).mode & 0o777, 0o600, file);
  assert.equal(statSync(dirname(path)).mode & 0o777, 0o700);
});
