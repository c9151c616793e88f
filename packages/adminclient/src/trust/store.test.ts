import assert from "node:assert/strict";
import { chmod, mkdtemp, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { mintTrustSet, type TrustSet } from "./bootstrap.js";
import { createCa, issueLeaf } from "./certificates.js";
import { TrustError, type TrustErrorReason } from "./errors.js";
import { loadTrustSet, TRUST_FILES, trustPaths, writeTrustSet } from "./store.js";

let base: string;
let set: TrustSet;
let n = 0;
before(async () => {
  base = await mkdtemp(join(tmpdir(), "trust-store-"));
  set = await mintTrustSet();
});
after(async () => {
  await rm(base, { recursive: true, force: true });
});

/** A fresh directory path (not yet created) under the per-file temp dir. */
const freshDir = (): string => join(base, `set-${n++}`, "trust");

function isTrustError(reason: TrustErrorReason, file?: string) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof TrustError, `not a TrustError: ${String(err)}`);
    assert.equal(err.reason, reason, err.message);
    if (file !== undefined) assert.equal(err.file, file);
    return true;
  };
}

void describe("writeTrustSet", () => {
  void it("writes the documented files with dir 0700, keys 0600, certificates 0644, no temp files left", async () => {
    const dir = freshDir();
    const oldMask = process.umask(0o000); // a permissive umask must not loosen the key files
    try {
      await writeTrustSet(dir, set);
    } finally {
      process.umask(oldMask);
    }
    assert.equal((await stat(dir)).mode & 0o777, 0o700);
    assert.deepEqual((await readdir(dir)).sort(), Object.values(TRUST_FILES).sort());
    const paths = trustPaths(dir);
    for (const file of [
      paths.caKey,
      paths.cliKey,
      paths.controlPlaneServerKey,
      paths.controlPlaneClientKey,
      paths.signingKey,
    ]) {
      assert.equal((await stat(file)).mode & 0o777, 0o600, file);
    }
    for (const file of [
      paths.caCert,
      paths.cliCert,
      paths.controlPlaneServerCert,
      paths.controlPlaneClientCert,
      paths.signingPublicKey,
    ]) {
      assert.equal((await stat(file)).mode & 0o777, 0o644, file);
    }
    assert.equal(await readFile(paths.caCert, "utf8"), set.ca.certPem);
  });

  void it("refuses to overwrite an existing set, and replaces it with force", async () => {
    const dir = freshDir();
    await writeTrustSet(dir, set);
    const other = await mintTrustSet();
    await assert.rejects(writeTrustSet(dir, other), isTrustError("exists"));
    assert.equal(
      await readFile(join(dir, TRUST_FILES.caCert), "utf8"),
      set.ca.certPem,
      "untouched after refusal",
    );
    await writeTrustSet(dir, other, { force: true });
    assert.equal(await readFile(join(dir, TRUST_FILES.caCert), "utf8"), other.ca.certPem);
    assert.equal((await stat(join(dir, TRUST_FILES.caKey))).mode & 0o777, 0o600);
  });

  void it("refuses when even one file of a set is present", async () => {
    const dir = freshDir();
    await writeTrustSet(dir, set);
    await rm(join(dir, TRUST_FILES.caCert));
    await assert.rejects(writeTrustSet(dir, set), isTrustError("exists"));
  });
});

void describe("loadTrustSet", () => {
  async function stored(): Promise<string> {
    const dir = freshDir();
    await writeTrustSet(dir, set);
    return dir;
  }

  void it("reads back exactly what was written", async () => {
    const loaded = await loadTrustSet(await stored());
    assert.deepEqual(loaded, set);
  });

  void it("rejects a key that does not match its certificate", async () => {
    const dir = await stored();
    const paths = trustPaths(dir);
    await writeFile(paths.cliKey, set.controlPlaneClient.keyPem);
    await assert.rejects(loadTrustSet(dir), isTrustError("key_mismatch", paths.cliKey));
  });

  void it("rejects a leaf issued by a foreign CA", async () => {
    const dir = await stored();
    const paths = trustPaths(dir);
    const foreign = await issueLeaf(await createCa(), {
      commonName: "clawker-controlplane",
      dnsNames: ["localhost"],
      usage: "server",
    });
    await writeFile(paths.controlPlaneServerCert, foreign.certPem);
    await writeFile(paths.controlPlaneServerKey, foreign.keyPem);
    await assert.rejects(loadTrustSet(dir), isTrustError("chain_invalid", paths.controlPlaneServerCert));
  });

  void it("rejects an expired leaf", async () => {
    const dir = await stored();
    const paths = trustPaths(dir);
    const day = 86400_000;
    const expired = await issueLeaf(set.ca, {
      commonName: "clawker-cli",
      usage: "client",
      notBefore: new Date(Date.now() - 2 * day),
      notAfter: new Date(Date.now() - day),
    });
    await writeFile(paths.cliCert, expired.certPem);
    await writeFile(paths.cliKey, expired.keyPem);
    await assert.rejects(loadTrustSet(dir), isTrustError("expired", paths.cliCert));
  });

  void it("rejects the whole set when checked past its leaves' lifetime, and before it starts", async () => {
    const dir = await stored();
    await assert.rejects(
      loadTrustSet(dir, { now: new Date(Date.now() + 2 * 365 * 86400_000) }),
      isTrustError("expired"),
    );
    await assert.rejects(
      loadTrustSet(dir, { now: new Date(Date.now() - 86400_000) }),
      isTrustError("not_yet_valid"),
    );
  });

  void it("rejects a leaf in the wrong role", async () => {
    const dir = await stored();
    const paths = trustPaths(dir);
    // A valid CLI client leaf where the CP server leaf belongs: right CA, wrong CN and usage.
    await writeFile(paths.controlPlaneServerCert, set.cli.certPem);
    await writeFile(paths.controlPlaneServerKey, set.cli.keyPem);
    await assert.rejects(loadTrustSet(dir), isTrustError("wrong_identity", paths.controlPlaneServerCert));
  });

  void it("rejects a key file readable by others, and a directory open to others", async () => {
    const dir = await stored();
    const paths = trustPaths(dir);
    await chmod(paths.caKey, 0o644);
    await assert.rejects(loadTrustSet(dir), isTrustError("insecure_permissions", paths.caKey));
    await chmod(paths.caKey, 0o600);
    await chmod(dir, 0o755);
    await assert.rejects(loadTrustSet(dir), isTrustError("insecure_permissions", dir));
  });

  void it("rejects a missing file, a garbled certificate and a signing key whose kid is not its thumbprint", async () => {
    let dir = await stored();
    let paths = trustPaths(dir);
    await rm(paths.controlPlaneClientCert);
    await assert.rejects(loadTrustSet(dir), isTrustError("missing", paths.controlPlaneClientCert));

    dir = await stored();
    paths = trustPaths(dir);
    await writeFile(paths.caCert, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    await assert.rejects(loadTrustSet(dir), isTrustError("malformed", paths.caCert));

    dir = await stored();
    paths = trustPaths(dir);
    await writeFile(
      paths.signingPublicKey,
      JSON.stringify({ ...set.signingKey.publicJwk, kid: "not-the-thumbprint" }),
    );
    await assert.rejects(loadTrustSet(dir), isTrustError("key_mismatch"));

    dir = await stored();
    paths = trustPaths(dir);
    const other = await mintTrustSet();
    await writeFile(paths.signingPublicKey, JSON.stringify(other.signingKey.publicJwk));
    await assert.rejects(loadTrustSet(dir), isTrustError("key_mismatch", paths.signingPublicKey));
  });
});
