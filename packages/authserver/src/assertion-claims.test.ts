import assert from "node:assert/strict";
import { test } from "node:test";
import {
  assertionReplayKey,
  checkAssertionClaims,
  CLOCK_TOLERANCE_SECONDS,
  MAX_ASSERTION_LIFETIME_SECONDS,
  type AssertionRefusal,
} from "./assertion-claims.js";

const TOKEN_URL = "https://127.0.0.1:4444/oauth2/token";
const ALIAS_URL = "https://10.213.0.2:4444/oauth2/token";
const NOW = 1_800_000_000;
const base = { aud: TOKEN_URL, iat: NOW, exp: NOW + 30, jti: "j-1" };
const check = (claims: Record<string, unknown>) =>
  checkAssertionClaims(claims, { tokenEndpoints: [TOKEN_URL, ALIAS_URL], nowSeconds: NOW });

test("checkAssertionClaims: refusals", () => {
  const table: [string, Record<string, unknown>, AssertionRefusal][] = [
    ["aud the issuer", { ...base, aud: "https://127.0.0.1:4444" }, "aud_not_token_endpoint"],
    ["aud list without the token URL", { ...base, aud: ["a", "b"] }, "aud_not_token_endpoint"],
    ["aud missing", { ...base, aud: undefined }, "aud_not_token_endpoint"],
    ["aud an alias's origin", { ...base, aud: "https://10.213.0.2:4444" }, "aud_not_token_endpoint"],
    [
      "aud the token URL at an address not configured",
      { ...base, aud: "https://10.213.0.3:4444/oauth2/token" },
      "aud_not_token_endpoint",
    ],
    ["exp missing", { ...base, exp: undefined }, "exp_missing"],
    ["exp a string", { ...base, exp: String(NOW + 30) }, "exp_missing"],
    ["exp NaN", { ...base, exp: Number.NaN }, "exp_missing"],
    [
      "exp one second past the bound",
      { ...base, exp: NOW + MAX_ASSERTION_LIFETIME_SECONDS + CLOCK_TOLERANCE_SECONDS + 1 },
      "exp_too_far",
    ],
    ["exp infinite", { ...base, exp: Number.POSITIVE_INFINITY }, "exp_missing"],
    ["iat missing", { ...base, iat: undefined }, "iat_missing"],
    ["iat null", { ...base, iat: null }, "iat_missing"],
    ["iat beyond the tolerance", { ...base, iat: NOW + CLOCK_TOLERANCE_SECONDS + 1 }, "iat_in_future"],
    ["jti missing", { ...base, jti: undefined }, "jti_missing"],
    ["jti empty", { ...base, jti: "" }, "jti_missing"],
    ["jti a number", { ...base, jti: 7 }, "jti_missing"],
  ];
  for (const [what, claims, reason] of table) assert.equal(check(claims), reason, what);
});

test("checkAssertionClaims: accepted at the edges", () => {
  const table: [string, Record<string, unknown>][] = [
    ["plain", base],
    ["aud list holding the token URL", { ...base, aud: ["x", TOKEN_URL] }],
    ["aud the token URL at a configured alias", { ...base, aud: ALIAS_URL }],
    ["exp at the bound", { ...base, exp: NOW + MAX_ASSERTION_LIFETIME_SECONDS + CLOCK_TOLERANCE_SECONDS }],
    ["iat at the tolerance", { ...base, iat: NOW + CLOCK_TOLERANCE_SECONDS }],
    ["iat long past", { ...base, iat: NOW - 86_400 }],
    ["fractional dates", { ...base, iat: NOW + 0.5, exp: NOW + 30.5 }],
  ];
  for (const [what, claims] of table) {
    assert.deepEqual(check(claims), { jti: claims["jti"], exp: claims["exp"] }, what);
  }
});

test("assertionReplayKey depends on the jti only, and distinguishes jtis", () => {
  assert.equal(assertionReplayKey("abc"), assertionReplayKey("abc"));
  assert.notEqual(assertionReplayKey("abc"), assertionReplayKey("abd"));
  assert.match(assertionReplayKey("abc"), /^[A-Za-z0-9_-]{43}$/);
});
