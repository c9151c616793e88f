import assert from "node:assert/strict";
import { chmod, copyFile, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { mintTrustSet, type TrustSet } from "./bootstrap.js";
import { TrustError, type TrustErrorReason } from "./errors.js";
import { TRUST_FILES, writeTrustSet } from "./store.js";
import { loadTokenCredentials } from "./token-credentials.js";

let base: string;
let trustDir: string;
let set: TrustSet;
let n = 0;
before(async () => {
  base = await mkdtemp(join(tmpdir(), "token-creds-"));
  set = await mintTrustSet();
  trustDir = join(base, "trust");
  await writeTrustSet(trustDir, set);
});
after(async () => {
  await rm(base, { recursive: true, force: true });
});

/** A group's copy: the CA and the signing key only, the key with `mode`. */
async function groupCopy(mode: number): Promise<string> {
  const dir = join(base, `group-${n++}`);
  await mkdir(dir, { mode: 0o750 });
  await copyFile(join(trustDir, TRUST_FILES.caCert), join(dir, TRUST_FILES.caCert));
  await copyFile(join(trustDir, TRUST_FILES.signingKey), join(dir, TRUST_FILES.signingKey));
  await chmod(join(dir, TRUST_FILES.signingKey), mode);
  return dir;
}

const isTrustError = (reason: TrustErrorReason) => (err: unknown) =>
  err instanceof TrustError && err.reason === reason;

void describe("loadTokenCredentials", () => {
  void it("reads the CA and the signing key from a full trust dir and from a group's copy of the two (0640)", async () => {
    const full = await loadTokenCredentials(trustDir);
    assert.equal(full.ca, set.ca.certPem);
    assert.deepEqual(full.signingKey, set.signingKey.privateJwk);
    const shared = await loadTokenCredentials(await groupCopy(0o640));
    assert.deepEqual(shared.signingKey, set.signingKey.privateJwk);
  });

  void it("refuses a key open to others or writable by its group, a missing file, a public JWK", async () => {
    for (const mode of [0o644, 0o660, 0o604]) {
      await assert.rejects(loadTokenCredentials(await groupCopy(mode)), isTrustError("insecure_permissions"));
    }
    const noCa = await groupCopy(0o600);
    await rm(join(noCa, TRUST_FILES.caCert));
    await assert.rejects(loadTokenCredentials(noCa), isTrustError("missing"));
    await assert.rejects(loadTokenCredentials(join(base, "nowhere")), isTrustError("missing"));
    const publicOnly = await groupCopy(0o600);
    await writeFile(join(publicOnly, TRUST_FILES.signingKey), JSON.stringify(set.signingKey.publicJwk));
    await assert.rejects(loadTokenCredentials(publicOnly), isTrustError("malformed"));
  });
});
