// The claim checks on private_key_jwt client assertions (RFC 7523 §3) that oidc-provider leaves to
// us. They run from its assertJwtClientAuthClaimsAndHeader hook, after it has checked alg, iss,
// the signature, exp (present and not past) and nbf (not in the future), all with the tolerance.
import { createHash } from "node:crypto";

/** Seconds of clock skew tolerated on client assertions (exp, iat, nbf). */
export const CLOCK_TOLERANCE_SECONDS = 5;

/**
 * How far ahead of now an assertion's `exp` may lie. The Go clawker CLI signs the agent's
 * bootstrap assertion for 24 h (internal/auth/agent_assertion.go, AgentAssertionTTL) and Hydra
 * accepts it, so a tighter bound would break agents that CLI starts; ours signs 30 s (its own)
 * and 10 min (agents).
 */
export const MAX_ASSERTION_LIFETIME_SECONDS = 24 * 60 * 60;

/** Why an assertion's claims were refused: logged by the server, never sent to the caller. */
export type AssertionRefusal =
  | "aud_not_token_endpoint"
  | "exp_missing"
  | "exp_too_far"
  | "iat_missing"
  | "iat_in_future"
  | "jti_missing"
  | "jti_replayed";

/** What the claims are checked against. */
export interface AssertionExpectations {
  /** The token endpoint URLs accepted as audience: the issuer's, then its configured aliases'. */
  readonly tokenEndpoints: readonly string[];
  /** Now, in seconds since the epoch. */
  readonly nowSeconds: number;
}

/** The claims of an assertion that passed the checks, as the replay record needs them. */
export interface CheckedAssertion {
  readonly jti: string;
  readonly exp: number;
}

/** Checks aud, exp, iat and jti; returns the first refusal, or the jti and exp when all pass. */
export function checkAssertionClaims(
  claims: Readonly<Record<string, unknown>>,
  expected: AssertionExpectations,
): AssertionRefusal | CheckedAssertion {
  // Hydra (fosite) accepts only the token endpoint URL as audience; oidc-provider would also take
  // the issuer. An alias's URL is the same endpoint reached at another configured address.
  const aud = claims["aud"];
  const auds: unknown[] = Array.isArray(aud) ? aud : [aud];
  const audOk = auds.some((a) => typeof a === "string" && expected.tokenEndpoints.includes(a));
  if (!audOk) return "aud_not_token_endpoint";
  const { exp, iat, jti } = claims;
  if (!isNumericDate(exp)) return "exp_missing";
  // A bounded exp bounds how long a captured, unused assertion stays good and how long its replay
  // record must be kept.
  if (exp > expected.nowSeconds + MAX_ASSERTION_LIFETIME_SECONDS + CLOCK_TOLERANCE_SECONDS) {
    return "exp_too_far";
  }
  // oidc-provider checks iat only when exp is absent; a future iat means a clock or a signer is
  // wrong, and fosite refuses it too.
  if (!isNumericDate(iat)) return "iat_missing";
  if (iat > expected.nowSeconds + CLOCK_TOLERANCE_SECONDS) return "iat_in_future";
  // oidc-provider refuses a missing or non-string jti before this runs; the replay key needs it
  // as a string, so it is checked again rather than assumed.
  if (typeof jti !== "string" || jti === "") return "jti_missing";
  return { jti, exp };
}

/**
 * The replay record's id for a jti. Keyed on the jti alone, as Hydra's jti table is: a jti spent
 * by one client is refused for every client.
 */
export function assertionReplayKey(jti: string): string {
  return createHash("sha256").update("client-assertion-jti\0").update(jti).digest("base64url");
}

function isNumericDate(v: unknown): v is number {
  return typeof v === "number" && Number.isFinite(v);
}
