// The interception CA on a real disk: created 0600 in a 0700 dir, loaded again unchanged, leaves
// that chain to it (wildcards with their parent), rotation, a foreign pair refused, renewal near
// the end.
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { FirewallError } from "./errors.js";
import { InterceptionCa } from "./interception-ca.js";

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "fwca-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return join(dir, "ca");
}

void test("created once with private modes, loaded again unchanged, leaves chain to it", async (t) => {
  const dir = await tempDir(t);
  const ca = new InterceptionCa({ dir });
  assert.deepEqual(await ca.load(), { created: true });
  assert.equal((await stat(dir)).mode & 0o777, 0o700);
  assert.equal((await stat(ca.keyFile)).mode & 0o777, 0o600);
  assert.equal((await stat(ca.certFile)).mode & 0o777, 0o600);
  const fingerprint = ca.fingerprint;

  const again = new InterceptionCa({ dir });
  assert.deepEqual(await again.load(), { created: false });
  assert.equal(again.fingerprint, fingerprint);

  const caCert = new X509Certificate(await readFile(ca.certFile));
  assert.equal(caCert.ca, true);
  const leaf = await again.issue("api.example.test");
  const cert = new X509Certificate(leaf.certPem);
  assert.ok(cert.verify(caCert.publicKey), "signed by the CA");
  assert.ok(cert.checkIssued(caCert));
  assert.equal(cert.subjectAltName, "DNS:api.example.test");
  assert.equal(cert.checkHost("api.example.test"), "api.example.test");
  assert.equal(cert.ca, false);
  const days = (Date.parse(cert.validTo) - Date.now()) / 86_400_000;
  assert.ok(days > 29 && days <= 30, `leaf valid ${days} days`);

  const wildcard = new X509Certificate((await ca.issue("*.example.test")).certPem);
  assert.equal(wildcard.subjectAltName, "DNS:*.example.test, DNS:example.test");
  // checkHost answers the SAN that matched.
  assert.equal(wildcard.checkHost("a.example.test"), "*.example.test");
  assert.equal(wildcard.checkHost("example.test"), "example.test");
  assert.equal(wildcard.checkHost("b.a.example.test"), undefined);
});

void test("rotate: a new CA on disk; the old CA's leaves no longer chain to it", async (t) => {
  const dir = await tempDir(t);
  const ca = new InterceptionCa({ dir });
  await ca.load();
  const before = ca.fingerprint;
  const oldLeaf = new X509Certificate((await ca.issue("a.test")).certPem);
  await ca.rotate();
  assert.notEqual(ca.fingerprint, before);
  const onDisk = new InterceptionCa({ dir });
  await onDisk.load();
  assert.equal(onDisk.fingerprint, ca.fingerprint);
  const newCa = new X509Certificate(ca.certPem);
  assert.equal(oldLeaf.verify(newCa.publicKey), false);
  assert.ok(new X509Certificate((await ca.issue("a.test")).certPem).verify(newCa.publicKey));
});

void test("a key that is not the certificate's is refused, naming the files", async (t) => {
  const dir = await tempDir(t);
  const a = new InterceptionCa({ dir });
  await a.load();
  const other = await tempDir(t);
  const b = new InterceptionCa({ dir: other });
  await b.load();
  await writeFile(a.keyFile, await readFile(b.keyFile));
  await assert.rejects(
    new InterceptionCa({ dir }).load(),
    (err: unknown) =>
      err instanceof FirewallError &&
      err.message.includes(a.certFile) &&
      err.message.includes("not a matching CA pair"),
  );
});

void test("a CA within 30 days of its end is replaced at load; leaves never outlive the CA", async (t) => {
  const dir = await tempDir(t);
  const short = new InterceptionCa({ dir, caValidityMs: 10 * 86_400_000 });
  await short.load();
  const leaf = new X509Certificate((await short.issue("a.test")).certPem);
  assert.ok(Date.parse(leaf.validTo) <= Date.parse(new X509Certificate(short.certPem).validTo));
  const before = short.fingerprint;
  const reloaded = new InterceptionCa({ dir });
  assert.deepEqual(await reloaded.load(), { created: true });
  assert.notEqual(reloaded.fingerprint, before);
});
