// What a caller on the control plane's admin Unix socket needs for its token, and only that: the
// CA (to trust the token endpoint) and the CLI signing key (its client assertions). No TLS leaf:
// the socket's permissions are its transport boundary. So a group can be given these two files
// (the key 0640 to the group) without the CA key or the CLI's mTLS key.
import { readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import type { JWK } from "jose";
import { parseCertificate } from "./certificates.js";
import { TrustError } from "./errors.js";
import { TRUST_FILES } from "./store.js";

/** The CA and the CLI signing key, enough to get a `clawker-cli` token. */
export interface TokenCredentials {
  /** PEM CA certificate the token endpoint's leaf chains to. */
  readonly ca: string;
  /** The CLI's ES256 private JWK. */
  readonly signingKey: JWK;
}

/**
 * Reads `ca.crt` and `cli-signing.jwk` from `dir` (a full trust dir or a group's copy of the two).
 * The key may be readable by its group (0640: the group it was shared with), never by others nor
 * writable by the group. Throws TrustError (`missing`, `insecure_permissions`, `malformed`).
 */
export async function loadTokenCredentials(dir: string): Promise<TokenCredentials> {
  const caPath = join(dir, TRUST_FILES.caCert);
  const keyPath = join(dir, TRUST_FILES.signingKey);
  const keyStat = await stat(keyPath).catch((err: unknown) => {
    throw (err as NodeJS.ErrnoException).code === "ENOENT"
      ? new TrustError("missing", `${keyPath} does not exist`, { file: keyPath, cause: err })
      : err;
  });
  if ((keyStat.mode & 0o027) !== 0) {
    throw new TrustError(
      "insecure_permissions",
      `${keyPath} is open to others or writable by its group (want 0600, or 0640 for a group)`,
      { file: keyPath },
    );
  }
  let ca: string;
  let keyText: string;
  try {
    [ca, keyText] = await Promise.all([readFile(caPath, "utf8"), readFile(keyPath, "utf8")]);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const file = (err as NodeJS.ErrnoException).path ?? caPath;
    if (code === "ENOENT") throw new TrustError("missing", `${file} does not exist`, { file, cause: err });
    throw err;
  }
  parseCertificate(ca, caPath);
  let signingKey: unknown;
  try {
    signingKey = JSON.parse(keyText);
  } catch (err) {
    throw new TrustError("malformed", "not a JWK (JSON object)", { file: keyPath, cause: err });
  }
  if (
    typeof signingKey !== "object" ||
    signingKey === null ||
    Array.isArray(signingKey) ||
    !("d" in signingKey)
  )
    throw new TrustError("malformed", "not a private JWK", { file: keyPath });
  return { ca, signingKey: signingKey as JWK };
}
