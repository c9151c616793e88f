// The CLI's ES256 signing key (private_key_jwt client assertions), as JWKs whose `kid` is the
// RFC 7638 thumbprint of the public key.
import { createPrivateKey, createPublicKey } from "node:crypto";
import { calculateJwkThumbprint, exportJWK, generateKeyPair, type JWK } from "jose";
import { TrustError } from "./errors.js";

/** An ES256 key pair as JWKs; both carry `kid` (RFC 7638 SHA-256 thumbprint), `alg` and `use`. */
export interface SigningKey {
  readonly kid: string;
  readonly privateJwk: JWK;
  readonly publicJwk: JWK;
}

/** Generates a fresh ES256 (P-256) signing key. */
export async function createSigningKey(): Promise<SigningKey> {
  const { privateKey } = await generateKeyPair("ES256", { extractable: true });
  const priv = await exportJWK(privateKey);
  if (priv.kty !== "EC" || priv.crv === undefined || priv.x === undefined || priv.y === undefined) {
    throw new TrustError("malformed", "jose exported an unexpected JWK");
  }
  const pub: JWK = { kty: priv.kty, crv: priv.crv, x: priv.x, y: priv.y };
  const kid = await calculateJwkThumbprint(pub, "sha256");
  const meta = { kid, alg: "ES256", use: "sig" };
  return { kid, privateJwk: { ...priv, ...meta }, publicJwk: { ...pub, ...meta } };
}

/**
 * Checks that a signing key is consistent: an EC P-256 private JWK, the public JWK is its public
 * half, and both `kid`s equal the thumbprint. Throws TrustError("malformed" | "key_mismatch").
 */
export async function checkSigningKey(
  key: SigningKey,
  files: { priv?: string; pub?: string } = {},
): Promise<void> {
  const { privateJwk, publicJwk } = key;
  const at = (file: string | undefined): { file?: string } => (file === undefined ? {} : { file });
  if (privateJwk.kty !== "EC" || privateJwk.crv !== "P-256" || typeof privateJwk.d !== "string") {
    throw new TrustError("malformed", "signing key is not an EC P-256 private JWK", at(files.priv));
  }
  if (publicJwk.kty !== "EC" || publicJwk.crv !== "P-256" || publicJwk.d !== undefined) {
    throw new TrustError("malformed", "public signing key is not an EC P-256 public JWK", at(files.pub));
  }
  let derived: JWK;
  try {
    const priv = createPrivateKey({ key: privateJwk, format: "jwk" });
    derived = createPublicKey(priv).export({ format: "jwk" });
  } catch (err) {
    throw new TrustError("malformed", "signing key does not import", { cause: err, ...at(files.priv) });
  }
  if (derived.x !== privateJwk.x || derived.y !== privateJwk.y) {
    throw new TrustError("key_mismatch", "signing key's d does not match its x/y", at(files.priv));
  }
  if (publicJwk.x !== privateJwk.x || publicJwk.y !== privateJwk.y) {
    throw new TrustError(
      "key_mismatch",
      "public signing key is not the private key's public half",
      at(files.pub),
    );
  }
  const thumbprint = await calculateJwkThumbprint(publicJwk, "sha256");
  if (publicJwk.kid !== thumbprint || privateJwk.kid !== thumbprint || key.kid !== thumbprint) {
    throw new TrustError("key_mismatch", "signing key kid is not the RFC 7638 thumbprint", at(files.pub));
  }
}
