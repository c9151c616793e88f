// RFC 7523 client assertions for private_key_jwt client authentication: ES256, iss = sub = the
// client id, aud = the token endpoint URL (Hydra accepts only that), a random jti, 30 s life.
import { randomUUID } from "node:crypto";
import { importJWK, SignJWT, type CryptoKey, type JWK } from "jose";
import { TokenError } from "./errors.js";

/** The `client_assertion_type` of a JWT bearer client assertion (RFC 7523 §2.2). */
export const CLIENT_ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/** Lifetime of a client assertion in seconds. */
export const ASSERTION_LIFETIME_S = 30;

/** What an assertion is signed with and for. */
export interface AssertionClaims {
  readonly clientId: string;
  /** The token endpoint URL: the only audience the authorization server accepts. */
  readonly audience: string;
  /** Issue time in seconds since the epoch. */
  readonly issuedAt: number;
  readonly lifetimeS?: number;
}

/** Imports an ES256 private JWK for signing; throws TokenError("invalid_key"). */
export async function importSigningKey(privateJwk: JWK): Promise<CryptoKey> {
  if (privateJwk.kty !== "EC" || privateJwk.crv !== "P-256" || typeof privateJwk.d !== "string") {
    throw new TokenError("invalid_key", "the signing key is not an EC P-256 private JWK");
  }
  try {
    const key = await importJWK(privateJwk, "ES256");
    if (key instanceof Uint8Array) throw new Error("imported as a symmetric key");
    return key;
  } catch (err) {
    throw new TokenError("invalid_key", "the signing key does not import as ES256", { cause: err });
  }
}

/** Signs one client assertion (a fresh jti every time). */
export async function signClientAssertion(
  key: CryptoKey,
  kid: string | undefined,
  claims: AssertionClaims,
): Promise<string> {
  const lifetime = claims.lifetimeS ?? ASSERTION_LIFETIME_S;
  return new SignJWT({})
    .setProtectedHeader({ alg: "ES256", typ: "JWT", ...(kid === undefined ? {} : { kid }) })
    .setIssuer(claims.clientId)
    .setSubject(claims.clientId)
    .setAudience(claims.audience)
    .setJti(randomUUID())
    .setIssuedAt(claims.issuedAt)
    .setExpirationTime(claims.issuedAt + lifetime)
    .sign(key);
}
