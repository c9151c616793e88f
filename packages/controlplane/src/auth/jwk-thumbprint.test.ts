// jwkThumbprint: RFC 7638's own example, member order and extra members, and keys without one.
import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { test } from "node:test";
import { jwkThumbprint } from "./jwk-thumbprint.js";

// RFC 7638 §3.1: the example RSA key and its SHA-256 thumbprint.
const RFC_KEY = {
  kty: "RSA",
  n:
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMs" +
    "tn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5h" +
    "ajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
  e: "AQAB",
  alg: "RS256",
  kid: "2011-04-29",
};

void test("jwkThumbprint: RFC 7638's example, whatever the member order and extra members", () => {
  assert.equal(jwkThumbprint(RFC_KEY), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
  const reordered = { e: RFC_KEY.e, kid: "other", n: RFC_KEY.n, kty: "RSA", use: "sig" };
  assert.equal(jwkThumbprint(reordered), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
});

void test("jwkThumbprint: an EC key's public and private JWK share the thumbprint; other keys differ", () => {
  const a = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const b = generateKeyPairSync("ec", { namedCurve: "P-256" });
  const pub = a.publicKey.export({ format: "jwk" });
  assert.equal(jwkThumbprint(pub), jwkThumbprint(a.privateKey.export({ format: "jwk" })));
  assert.notEqual(jwkThumbprint(pub), jwkThumbprint(b.publicKey.export({ format: "jwk" })));
  assert.match(jwkThumbprint(pub), /^[A-Za-z0-9_-]{43}$/);
});

void test("jwkThumbprint: keys without a thumbprint throw", () => {
  for (const bad of [
    null,
    "key",
    {},
    { kty: "XYZ", x: "a" },
    { kty: "EC", crv: "P-256", x: "a" },
    { kty: "EC", crv: "P-256", x: "a", y: 1 },
    { kty: 7 },
  ]) {
    assert.throws(() => jwkThumbprint(bad), TypeError, JSON.stringify(bad));
  }
});
