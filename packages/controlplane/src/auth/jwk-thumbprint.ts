// RFC 7638 JWK thumbprints (SHA-256, base64url) on node:crypto, so client registration does not
// load jose (46 modules, ~10 MiB of start-up memory) for one hash.
import { createHash } from "node:crypto";

/** The members RFC 7638 §3.2 hashes for each key type, in lexicographic order. */
const REQUIRED_MEMBERS: Readonly<Record<string, readonly string[]>> = {
  EC: ["crv", "kty", "x", "y"],
  OKP: ["crv", "kty", "x"],
  RSA: ["e", "kty", "n"],
  oct: ["k", "kty"],
};

/**
 * The RFC 7638 SHA-256 thumbprint of a JWK; throws `TypeError` for a key without a known `kty` or
 * with a required member missing or not a string.
 */
export function jwkThumbprint(jwk: unknown): string {
  if (typeof jwk !== "object" || jwk === null) throw new TypeError("a JWK must be an object");
  const key = jwk as Record<string, unknown>;
  const members = typeof key["kty"] === "string" ? REQUIRED_MEMBERS[key["kty"]] : undefined;
  if (members === undefined) throw new TypeError("unsupported or missing kty");
  // §3.3: only the required members, sorted, no whitespace; JSON.stringify escapes as §3.3 asks.
  const canonical = `{${members
    .map((name) => {
      const value = key[name];
      if (typeof value !== "string") throw new TypeError(`JWK member ${name} must be a string`);
      return `${JSON.stringify(name)}:${JSON.stringify(value)}`;
    })
    .join(",")}}`;
  return createHash("sha256").update(canonical).digest("base64url");
}
