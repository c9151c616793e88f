// TokenSource against a real HTTPS token endpoint double (test/fixtures/token-endpoint-double.ts):
// assertion claims verified with jose, caching, the refresh window, singleflight, abort without
// cancellation, typed errors, TLS 1.3 only.
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { before, describe, test } from "node:test";
import { CLI_CLIENT } from "@clawker/proto";
import { createCa, issueLeaf, mintTrustSet, TokenError, TokenSource, type TrustSet } from "../src/index.js";
import { TokenEndpointDouble } from "./fixtures/token-endpoint-double.js";
import { waitFor } from "../../../test/harness/wait-for.js";

let trust: TrustSet;
before(async () => {
  trust = await mintTrustSet();
});

async function setup(
  t: { after: (fn: () => Promise<void>) => void },
  extra: { maxVersion?: "TLSv1.2"; now?: () => number; certPem?: string; keyPem?: string } = {},
): Promise<{ endpoint: TokenEndpointDouble; tokens: TokenSource }> {
  const endpoint = await TokenEndpointDouble.start({
    certPem: extra.certPem ?? trust.controlPlaneServer.certPem,
    keyPem: extra.keyPem ?? trust.controlPlaneServer.keyPem,
    clientId: CLI_CLIENT.clientId,
    publicJwk: trust.signingKey.publicJwk,
    ...(extra.maxVersion === undefined ? {} : { maxVersion: extra.maxVersion }),
  });
  const tokens = new TokenSource({
    tokenEndpoint: endpoint.url,
    ca: trust.ca.certPem,
    signingKey: trust.signingKey.privateJwk,
    ...(extra.now === undefined ? {} : { now: extra.now }),
  });
  t.after(async () => {
    await tokens.close();
    await endpoint.close();
  });
  return { endpoint, tokens };
}

describe("TokenSource", () => {
  test("sends a client_credentials request with a verifiable ES256 assertion", async (t) => {
    const { endpoint, tokens } = await setup(t);
    assert.equal(await tokens.token(), "token-1");
    assert.equal(endpoint.requests.length, 1);
    const req = endpoint.requests[0]!;
    assert.equal(req.verifyError, undefined);
    assert.equal(req.form.get("grant_type"), "client_credentials");
    assert.equal(req.form.get("scope"), "admin");
    assert.equal(
      req.form.get("client_assertion_type"),
      "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    );
    const c = req.claims!;
    assert.equal(c.iss, "clawker-cli");
    assert.equal(c.sub, "clawker-cli");
    assert.equal(c.aud, endpoint.url);
    assert.equal(c.exp! - c.iat!, 30);
    assert.ok(Math.abs(c.iat! - Date.now() / 1000) < 5);
    assert.match(c.jti ?? "", /^[0-9a-f-]{36}$/);
    assert.equal(req.header?.alg, "ES256");
    assert.equal(req.header?.kid, trust.signingKey.kid);
  });

  test("every assertion has a fresh jti", async (t) => {
    const { endpoint, tokens } = await setup(t);
    await tokens.token();
    tokens.invalidate();
    await tokens.token();
    assert.equal(endpoint.requests.length, 2);
    assert.notEqual(endpoint.requests[0]!.claims!.jti, endpoint.requests[1]!.claims!.jti);
  });

  test("caches the token until 30 s before it expires, then refreshes", async (t) => {
    let now = Date.now();
    const { endpoint, tokens } = await setup(t, { now: () => now });
    endpoint.respond = (_r, n) => ({
      status: 200,
      body: { access_token: `t${n}`, token_type: "Bearer", expires_in: 120 },
    });
    assert.equal(await tokens.token(), "t1");
    now += 89_000;
    assert.equal(await tokens.token(), "t1");
    assert.equal(endpoint.requests.length, 1);
    now += 2_000; // 91 s: inside the 30 s refresh window
    assert.equal(await tokens.token(), "t2");
    assert.equal(endpoint.requests.length, 2);
    // The assertion's iat follows the injected clock (a skew-corrected one in the CLI).
    assert.equal(endpoint.requests[1]!.claims!.iat, Math.floor(now / 1000));
  });

  test("a short-lived token is reused for half its life", async (t) => {
    let now = Date.now();
    const { endpoint, tokens } = await setup(t, { now: () => now });
    endpoint.respond = (_r, n) => ({
      status: 200,
      body: { access_token: `s${n}`, token_type: "bearer", expires_in: 20 },
    });
    assert.equal(await tokens.token(), "s1");
    now += 9_000;
    assert.equal(await tokens.token(), "s1");
    now += 2_000;
    assert.equal(await tokens.token(), "s2");
  });

  test("concurrent callers share one in-flight request", async (t) => {
    const { endpoint, tokens } = await setup(t);
    const release = endpoint.hold();
    const waiting = Array.from({ length: 20 }, () => tokens.token());
    await waitFor(() => endpoint.requests.length === 1, { what: "the one request" });
    release();
    const got = await Promise.all(waiting);
    assert.deepEqual(new Set(got), new Set(["token-1"]));
    assert.equal(endpoint.requests.length, 1);
    assert.equal(tokens.requestCount, 1);
  });

  test("a caller's abort stops its wait, not the request; the result fills the cache", async (t) => {
    const { endpoint, tokens } = await setup(t);
    const release = endpoint.hold();
    const ac = new AbortController();
    const aborted = tokens.token({ signal: ac.signal });
    const other = tokens.token();
    await waitFor(() => endpoint.requests.length === 1, { what: "the request" });
    ac.abort(new Error("caller gave up"));
    await assert.rejects(aborted, /caller gave up/);
    release();
    assert.equal(await other, "token-1");
    assert.equal(await tokens.token(), "token-1");
    assert.equal(endpoint.requests.length, 1);
  });

  test("an already aborted signal rejects without a request", async (t) => {
    const { endpoint, tokens } = await setup(t);
    await assert.rejects(tokens.token({ signal: AbortSignal.abort() }), { name: "AbortError" });
    assert.equal(endpoint.requests.length, 0);
  });

  test("an OAuth2 error answer is token_request_failed with status and error, and is not cached", async (t) => {
    const { endpoint, tokens } = await setup(t);
    endpoint.respond = () => ({ status: 400, body: { error: "invalid_scope", error_description: "nope" } });
    await assert.rejects(tokens.token(), (err: unknown) => {
      assert.ok(err instanceof TokenError);
      assert.equal(err.reason, "token_request_failed");
      assert.equal(err.status, 400);
      assert.equal(err.oauthError, "invalid_scope");
      return true;
    });
    endpoint.respond = () => ({
      status: 200,
      body: { access_token: "ok", token_type: "bearer", expires_in: 60 },
    });
    assert.equal(await tokens.token(), "ok");
    assert.equal(endpoint.requests.length, 2);
  });

  test("an assertion signed by another key is refused by the endpoint (invalid_client)", async (t) => {
    const other = await mintTrustSet();
    const endpoint = await TokenEndpointDouble.start({
      certPem: trust.controlPlaneServer.certPem,
      keyPem: trust.controlPlaneServer.keyPem,
      clientId: "clawker-cli",
      publicJwk: other.signingKey.publicJwk,
    });
    const tokens = new TokenSource({
      tokenEndpoint: endpoint.url,
      ca: trust.ca.certPem,
      signingKey: trust.signingKey.privateJwk,
    });
    t.after(async () => {
      await tokens.close();
      await endpoint.close();
    });
    await assert.rejects(tokens.token(), {
      reason: "token_request_failed",
      status: 401,
      oauthError: "invalid_client",
    });
  });

  test("a 200 without access_token or expires_in is invalid_response", async (t) => {
    const { endpoint, tokens } = await setup(t);
    endpoint.respond = () => ({ status: 200, body: { token_type: "bearer", expires_in: 60 } });
    await assert.rejects(tokens.token(), { reason: "invalid_response" });
    endpoint.respond = () => ({ status: 200, body: { access_token: "x", token_type: "bearer" } });
    await assert.rejects(tokens.token(), { reason: "invalid_response" });
  });

  test("a closed port is unreachable", async (t) => {
    const port = await new Promise<number>((resolve) => {
      const s = createServer();
      s.listen(0, "127.0.0.1", () => {
        const p = (s.address() as { port: number }).port;
        s.close(() => resolve(p));
      });
    });
    const tokens = new TokenSource({
      tokenEndpoint: `https://127.0.0.1:${port}/oauth2/token`,
      ca: trust.ca.certPem,
      signingKey: trust.signingKey.privateJwk,
    });
    t.after(() => tokens.close());
    await assert.rejects(tokens.token(), { name: "TokenError", reason: "unreachable" });
  });

  test("a server certificate from another CA is unreachable (TLS refused)", async (t) => {
    const ca = await createCa();
    const leaf = await issueLeaf(ca, {
      commonName: "clawker-controlplane",
      ipAddresses: ["127.0.0.1"],
      usage: "server",
    });
    const { endpoint, tokens } = await setup(t, { certPem: leaf.certPem, keyPem: leaf.keyPem });
    await assert.rejects(tokens.token(), { reason: "unreachable" });
    assert.equal(endpoint.requests.length, 0);
  });

  test("a TLS 1.2-only endpoint is refused", async (t) => {
    const { endpoint, tokens } = await setup(t, { maxVersion: "TLSv1.2" });
    await assert.rejects(tokens.token(), { reason: "unreachable" });
    assert.equal(endpoint.requests.length, 0);
  });

  test("an http:// endpoint is rejected at construction", () => {
    assert.throws(
      () => new TokenSource({ tokenEndpoint: "http://127.0.0.1:4444/oauth2/token", ca: "", signingKey: {} }),
      TypeError,
    );
  });

  test("close() is idempotent and later calls fail", async (t) => {
    const { tokens } = await setup(t);
    await tokens.close();
    await tokens.close();
    await assert.rejects(tokens.token(), { reason: "unreachable" });
  });
});
