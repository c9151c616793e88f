import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import Database from "better-sqlite3";
import { Registry } from "./registry.js";

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
