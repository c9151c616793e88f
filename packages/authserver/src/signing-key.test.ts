import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { loadOrCreateSigningKey } from "./signing-key.js";

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), "authserver-key-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test("generates a P-256 key with mode 0600 and loads the same key back", async (t) => {
  const file = join(tempDir(t), "key.jwk");
  const created = await loadOrCreateSigningKey(file);
  assert.equal(created.kty, "EC");
  assert.equal(created.crv, "P-256");
  assert.equal(created.alg, "ES256");
  assert.equal(typeof created.d, "string");
  assert.equal(statSync(file).mode & 0o777, 0o600);
  const loaded = await loadOrCreateSigningKey(file);
  assert.deepEqual(loaded, created);
});

test("refuses a key file others can read, and one that is not a P-256 private JWK", async (t) => {
  const dir = tempDir(t);
  const file = join(dir, "key.jwk");
  await loadOrCreateSigningKey(file);
  chmodSync(file, 0o644);
  await assert.rejects(loadOrCreateSigningKey(file), { reason: "signing_key_invalid", message: /0600/ });

  const pub = join(dir, "public.jwk");
  const { d: _d, ...publicOnly } = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
  writeFileSync(pub, JSON.stringify(publicOnly), { mode: 0o600 });
  await assert.rejects(loadOrCreateSigningKey(pub), {
    reason: "signing_key_invalid",
    message: /private JWK/,
  });

  const junk = join(dir, "junk.jwk");
  writeFileSync(junk, "not json", { mode: 0o600 });
  await assert.rejects(loadOrCreateSigningKey(junk), { reason: "signing_key_invalid" });
});
