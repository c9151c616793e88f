import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { AuthStore } from "./store.js";

function tempStore(t: { after: (fn: () => void) => void }): { store: AuthStore; file: string } {
  const dir = mkdtempSync(join(tmpdir(), "authserver-store-"));
  const file = join(dir, "auth.db");
  const store = new AuthStore(file);
  t.after(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { store, file };
}

test("entries past their expiry are invisible at once and deleted by gc; live ones stay", (t) => {
  const { store } = tempStore(t);
  store.upsertEntry("ReplayDetection", "gone", { jti: "gone" }, 0);
  assert.equal(store.findEntry("ReplayDetection", "gone"), undefined);
  store.upsertEntry("ClientCredentials", "short", { jti: "short", clientId: "c" }, 1);
  store.upsertEntry("ClientCredentials", "long", { jti: "long", clientId: "c" }, 3600);
  store.upsertEntry("Grant", "forever", { jti: "forever" }, undefined);
  assert.equal(store.findEntry("ClientCredentials", "short")?.jti, "short");
  assert.equal(store.findEntry("AccessToken", "short"), undefined, "models are separate");

  assert.equal(store.gc(Date.now() + 2_000), 2, "only the expired rows are deleted");
  assert.equal(store.findEntry("ClientCredentials", "short"), undefined);
  assert.equal(store.findEntry("ClientCredentials", "long")?.jti, "long");
  assert.equal(store.findEntry("Grant", "forever")?.jti, "forever");
});

test("assertion jti: the first claim wins, a second is a replay, an expired record can be reclaimed", (t) => {
  const { store } = tempStore(t);
  const now = Date.now();
  assert.equal(store.claimAssertionJti("k1", now + 60_000), true);
  assert.equal(store.claimAssertionJti("k1", now + 60_000), false);
  assert.equal(store.claimAssertionJti("k2", now - 1), true);
  assert.equal(store.claimAssertionJti("k2", now + 60_000), true, "expired leftover is overwritten");
  assert.equal(store.claimAssertionJti("k2", now + 60_000), false);
});

test("clients: insert once (second insert refused), delete removes the client's tokens", (t) => {
  const { store } = tempStore(t);
  const client = { id: "c1", hydra: { client_id: "c1", scope: "admin" }, oidc: { client_id: "c1" } };
  assert.equal(store.insertClient(client), true);
  assert.equal(store.insertClient({ ...client, hydra: { client_id: "c1", scope: "other" } }), false);
  assert.deepEqual(store.getClient("c1")?.hydra, { client_id: "c1", scope: "admin" });
  store.upsertEntry("ClientCredentials", "t1", { jti: "t1", clientId: "c1" }, 3600);
  store.upsertEntry("ClientCredentials", "t2", { jti: "t2", clientId: "c2" }, 3600);
  assert.equal(store.deleteClient("c1"), true);
  assert.equal(store.deleteClient("c1"), false);
  assert.equal(store.getClient("c1"), undefined);
  assert.equal(store.findEntry("ClientCredentials", "t1"), undefined);
  assert.equal(store.findEntry("ClientCredentials", "t2")?.jti, "t2", "other clients' tokens stay");
});

test("data survives reopening; close is idempotent", (t) => {
  const { store, file } = tempStore(t);
  store.upsertEntry("ClientCredentials", "t", { jti: "t" }, 3600);
  store.close();
  store.close();
  const again = new AuthStore(file);
  t.after(() => again.close());
  assert.equal(again.findEntry("ClientCredentials", "t")?.jti, "t");
});

test("the database and its -wal and -shm are 0600 under a usual umask", (t) => {
  const previous = process.umask(0o022);
  let store: AuthStore;
  let file: string;
  try {
    ({ store, file } = tempStore(t));
    store.upsertEntry("ClientCredentials", "t", { jti: "t" }, 3600);
  } finally {
    process.umask(previous);
  }
  assert.deepEqual(store.tightened, []);
  for (const f of [file, `${file}-wal`, `${file}-shm`]) assert.equal(statSync(f).mode & 0o777, 0o600, f);
});

test("files an older install left readable are tightened to 0600 and reported", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "authserver-store-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, "auth.db");
  const first = new AuthStore(file);
  first.upsertEntry("ClientCredentials", "t", { jti: "t" }, 3600);
  first.close();
  writeFileSync(`${file}-wal`, "", { mode: 0o644 });
  for (const f of [file, `${file}-wal`]) chmodSync(f, 0o644);
  const store = new AuthStore(file);
  t.after(() => store.close());
  assert.deepEqual(store.tightened, [file, `${file}-wal`]);
  for (const f of [file, `${file}-wal`, `${file}-shm`]) assert.equal(statSync(f).mode & 0o777, 0o600, f);
  assert.equal(store.findEntry("ClientCredentials", "t")?.jti, "t", "the data is intact");
});
