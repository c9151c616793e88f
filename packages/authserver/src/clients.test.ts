import assert from "node:assert/strict";
import { test } from "node:test";
import { registeredScopes, validateClient } from "./clients.js";

const key = {
  kty: "EC",
  crv: "P-256",
  x: "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
  y: "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
  kid: "k1",
  use: "sig",
  alg: "ES256",
};
const good = {
  client_id: "clawker-cli",
  client_name: "clawker-cli",
  grant_types: ["client_credentials"],
  token_endpoint_auth_method: "private_key_jwt",
  token_endpoint_auth_signing_alg: "ES256",
  scope: "admin",
  jwks: { keys: [key] },
};

test("a Hydra client body is accepted and echoed in Hydra's shape", () => {
  const v = validateClient(good, new Date("2026-01-02T03:04:05Z"));
  assert.ok(v.ok);
  assert.equal(v.client.id, "clawker-cli");
  assert.deepEqual(
    {
      client_id: v.client.hydra["client_id"],
      grant_types: v.client.hydra["grant_types"],
      scope: v.client.hydra["scope"],
      token_endpoint_auth_method: v.client.hydra["token_endpoint_auth_method"],
      token_endpoint_auth_signing_alg: v.client.hydra["token_endpoint_auth_signing_alg"],
      jwks: v.client.hydra["jwks"],
      created_at: v.client.hydra["created_at"],
    },
    {
      client_id: "clawker-cli",
      grant_types: ["client_credentials"],
      scope: "admin",
      token_endpoint_auth_method: "private_key_jwt",
      token_endpoint_auth_signing_alg: "ES256",
      jwks: { keys: [key] },
      created_at: "2026-01-02T03:04:05.000Z",
    },
  );
  assert.equal(v.client.oidc["scope"], undefined, "scope is enforced by us, not given to oidc-provider");
  assert.deepEqual([...registeredScopes(v.client)], ["admin"]);
});

test("malformed bodies are rejected with a precise message naming the field", () => {
  const cases: [string, unknown, RegExp][] = [
    ["not an object", [1, 2], /\(body\)/],
    ["no client_id", { ...good, client_id: undefined }, /^client_id:/],
    ["bad client_id", { ...good, client_id: "a b" }, /^client_id: must be/],
    [
      "secret auth",
      { ...good, token_endpoint_auth_method: "client_secret_basic" },
      /^token_endpoint_auth_method:/,
    ],
    ["no auth method", { ...good, token_endpoint_auth_method: undefined }, /^token_endpoint_auth_method:/],
    ["RS256", { ...good, token_endpoint_auth_signing_alg: "RS256" }, /^token_endpoint_auth_signing_alg:/],
    ["code grant", { ...good, grant_types: ["authorization_code"] }, /^grant_types:/],
    ["scope with a quote", { ...good, scope: 'admin "x"' }, /^scope:/],
    ["double space", { ...good, scope: "admin  x" }, /^scope:/],
    ["no jwks", { ...good, jwks: undefined }, /^jwks:/],
    ["empty jwks", { ...good, jwks: { keys: [] } }, /^jwks\.keys: must hold at least one/],
    ["RSA key", { ...good, jwks: { keys: [{ kty: "RSA", n: "x", e: "AQAB" }] } }, /^jwks\.keys\.0\.kty:/],
    ["P-384 key", { ...good, jwks: { keys: [{ ...key, crv: "P-384" }] } }, /^jwks\.keys\.0\.crv:/],
    ["private key", { ...good, jwks: { keys: [{ ...key, d: "AAAA" }] } }, /^jwks\.keys\.0\.d: private key/],
    ["unknown field", { ...good, client_secret: "s3cret" }, /client_secret/],
    ["audience", { ...good, audience: ["https://x"] }, /^audience:/],
  ];
  for (const [name, body, want] of cases) {
    const v = validateClient(body);
    assert.ok(!v.ok, `${name}: accepted`);
    assert.ok(
      v.problems.some((p) => want.test(p)),
      `${name}: ${v.problems.join("; ")}`,
    );
  }
});

test("every problem of one body is reported", () => {
  const v = validateClient({ client_id: "", token_endpoint_auth_method: "none", jwks: {} });
  assert.ok(!v.ok);
  assert.ok(v.problems.length >= 3, v.problems.join("; "));
});
