import assert from "node:assert/strict";
import { test } from "node:test";
import { trimDiscovery } from "./discovery.js";

const ROUTED = new Set(["/oauth2/token", "/.well-known/jwks.json"]);
const ISSUER = "https://127.0.0.1:4444";

test("trimDiscovery keeps routed endpoints and drops the rest", () => {
  const doc: Record<string, unknown> = {
    issuer: ISSUER,
    authorization_endpoint: `${ISSUER}/auth`,
    token_endpoint: `${ISSUER}/oauth2/token`,
    jwks_uri: `${ISSUER}/.well-known/jwks.json`,
    userinfo_endpoint: `${ISSUER}/me`,
    registration_endpoint: "not a url",
    revocation_endpoint: 42,
    grant_types_supported: ["implicit", "authorization_code", "refresh_token", "client_credentials"],
    response_modes_supported: ["form_post", "fragment", "query"],
    code_challenge_methods_supported: ["S256"],
    authorization_response_iss_parameter_supported: true,
    response_types_supported: ["code"],
    token_endpoint_auth_methods_supported: ["private_key_jwt"],
  };
  trimDiscovery(doc, ROUTED);
  assert.deepEqual(doc, {
    issuer: ISSUER,
    token_endpoint: `${ISSUER}/oauth2/token`,
    jwks_uri: `${ISSUER}/.well-known/jwks.json`,
    grant_types_supported: ["client_credentials"],
    response_types_supported: ["code"],
    token_endpoint_auth_methods_supported: ["private_key_jwt"],
  });
});

test("trimDiscovery keeps the authorization parameters while that endpoint is routed", () => {
  const doc: Record<string, unknown> = {
    authorization_endpoint: `${ISSUER}/auth`,
    code_challenge_methods_supported: ["S256"],
  };
  trimDiscovery(doc, new Set([...ROUTED, "/auth"]));
  assert.deepEqual(doc, {
    authorization_endpoint: `${ISSUER}/auth`,
    code_challenge_methods_supported: ["S256"],
    grant_types_supported: ["client_credentials"],
  });
});
