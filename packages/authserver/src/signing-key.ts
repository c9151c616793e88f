// The provider's signing key: an EC P-256 private JWK kept in a 0600 file, generated on first use.
import { constants, openSync, readFileSync, writeSync, closeSync, fstatSync } from "node:fs";
import { calculateJwkThumbprint, exportJWK, generateKeyPair, type JWK } from "jose";
import { AuthServerError } from "./errors.js";

/** A P-256 private JWK with the `kid`, `alg` and `use` the provider publishes. */
export interface SigningJwk extends JWK {
  readonly kty: "EC";
  readonly crv: "P-256";
  readonly d: string;
  readonly kid: string;
  readonly alg: "ES256";
  readonly use: "sig";
}

/**
 * Loads the key from `file`, or generates one and writes it with mode 0600 (O_EXCL, so two starting
 * processes never both write). A file that is not a P-256 private JWK, or that others can read, fails.
 */
export async function loadOrCreateSigningKey(file: string): Promise<SigningJwk> {
  let text: string | undefined;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
      throw new AuthServerError("signing_key_invalid", `cannot read signing key ${file}`, { cause: err });
    }
  }
  if (text !== undefined) return await parseKeyFile(file, text);

  const { privateKey } = await generateKeyPair("ES256", { extractable: true });
  const jwk = await exportJWK(privateKey);
  const key = { ...jwk, kid: await calculateJwkThumbprint(jwk), alg: "ES256", use: "sig" } as SigningJwk;
  let fd: number;
  try {
    fd = openSync(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return loadOrCreateSigningKey(file);
    throw new AuthServerError("signing_key_invalid", `cannot create signing key ${file}`, { cause: err });
  }
  try {
    writeSync(fd, JSON.stringify(key) + "\n");
  } finally {
    closeSync(fd);
  }
  return key;
}

async function parseKeyFile(file: string, text: string): Promise<SigningJwk> {
  const fd = openSync(file, constants.O_RDONLY);
  try {
    if ((fstatSync(fd).mode & 0o077) !== 0) {
      throw new AuthServerError(
        "signing_key_invalid",
        `signing key ${file} is readable by group or others (want 0600)`,
      );
    }
  } finally {
    closeSync(fd);
  }
  let jwk: JWK;
  try {
    jwk = JSON.parse(text) as JWK;
  } catch (err) {
    throw new AuthServerError("signing_key_invalid", `signing key ${file} is not JSON`, { cause: err });
  }
  if (
    jwk.kty !== "EC" ||
    jwk.crv !== "P-256" ||
    typeof jwk.d !== "string" ||
    typeof jwk.x !== "string" ||
    typeof jwk.y !== "string"
  ) {
    throw new AuthServerError("signing_key_invalid", `signing key ${file} is not an EC P-256 private JWK`);
  }
  const pub = { kty: "EC", crv: "P-256", x: jwk.x, y: jwk.y };
  return {
    kty: "EC",
    crv: "P-256",
    x: jwk.x,
    y: jwk.y,
    d: jwk.d,
    kid: jwk.kid ?? (await calculateJwkThumbprint(pub)),
    alg: "ES256",
    use: "sig",
  };
}
