// Client assertion claims and discovery against a real in-process server (real TLS 1.3 on
// 127.0.0.1:0, real sqlite, real ES256 assertions): every refusal is the same invalid_client
// answer while the server's log says which check failed; discovery advertises only what answers.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { rmSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { SignJWT } from "jose";
import { pino } from "pino";
import { request } from "undici";
import { AuthServer, parseConfig, type AuthServerAddresses } from "../src/index.js";
import { ADMIN, clientBody, makeClientKey, TestHttp, type Answer, type ClientKey } from "./fixtures/oauth.js";
import { makeWorkspace } from "./fixtures/server.js";

/** The one answer every refused assertion gets, whatever check refused it. */
const REFUSED = { error: "invalid_client", error_description: "client authentication failed" };

const CLI = "clawker-cli";
/** A configured alias origin (the container's agents' address) and its token URL. */
const ALIAS = "https://10.213.0.2:4444";
const ALIAS_TOKEN_URL = `${ALIAS}/oauth2/token`;
const AGENT = "clawker-agent";

/** Signs exactly `claims` (nothing added, so claims can be left out) with `key`. */
function sign(claims: Record<string, unknown>, key: ClientKey): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: "ES256", typ: "JWT" }).sign(key.privateKey);
}

const nowS = (): number => Math.floor(Date.now() / 1000);

describe("client assertions and discovery (in-process server)", () => {
  let server: AuthServer;
  let addr: AuthServerAddresses;
  let http: TestHttp;
  let dir: string;
  const logLines: Record<string, unknown>[] = [];
  const keys = new Map<string, ClientKey>();

  before(async () => {
    const ws = await makeWorkspace();
    dir = ws.dir;
    const log = pino(
      { level: "debug" },
      { write: (line: string) => void logLines.push(JSON.parse(line) as Record<string, unknown>) },
    );
    server = new AuthServer(parseConfig({ ...ws.base, aliases: [ALIAS] }), log);
    http = new TestHttp(ws.tls.caPem);
    addr = await server.start();
    const admin = new TestHttp({ socketPath: addr.adminSocket });
    for (const [id, scope] of [
      [CLI, "admin"],
      [AGENT, "agent:self:register"],
    ] as const) {
      const key = await makeClientKey();
      keys.set(id, key);
      const r = await admin.call(`${ADMIN}/admin/clients`, "POST", {
        json: clientBody(id, scope, key),
      });
      assert.equal(r.status, 201, `register ${id}`);
    }
    await admin.close();
  });
  after(async () => {
    await http?.close();
    await server?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  /** The claims the clawker CLIs send: iss = sub = client, aud = token URL, iat now, fresh jti. */
  const claimsFor = (clientId: string, extra: Record<string, unknown> = {}): Record<string, unknown> => {
    const now = nowS();
    return {
      iss: clientId,
      sub: clientId,
      aud: addr.tokenEndpoint,
      jti: randomUUID(),
      iat: now,
      exp: now + 30,
      ...extra,
    };
  };
  const exchange = async (clientId: string, claims: Record<string, unknown>): Promise<Answer> =>
    http.token(addr.tokenEndpoint, await sign(claims, keys.get(clientId)!));

  /** Asserts the uniform refusal and returns the `detail` the server logged for it. */
  const assertRefused = (res: Answer, what: string, logFrom: number): string => {
    assert.equal(res.status, 401, `${what}: ${JSON.stringify(res.body)}`);
    assert.deepEqual(res.body, REFUSED, what);
    const denied = logLines.slice(logFrom).filter((l) => l["event"] === "token_denied");
    assert.equal(denied.length, 1, `${what}: one token_denied line`);
    return String(denied[0]?.["detail"]);
  };

  const accepted: [string, (c: string) => Record<string, unknown>][] = [
    ["our CLI's own assertion (30 s)", (c) => claimsFor(c)],
    ["our agent bootstrap assertion (10 min)", (c) => claimsFor(c, { exp: nowS() + 600 })],
    ["the Go CLI's agent bootstrap assertion (24 h)", (c) => claimsFor(c, { exp: nowS() + 86_400 })],
    ["iat up to the clock tolerance ahead", (c) => claimsFor(c, { iat: nowS() + 3 })],
    ["nbf now", (c) => claimsFor(c, { nbf: nowS() })],
    ["aud as a list holding the token URL", (c) => claimsFor(c, { aud: ["urn:other", addr.tokenEndpoint] })],
    ["aud the token URL at a configured alias", (c) => claimsFor(c, { aud: ALIAS_TOKEN_URL })],
  ];
  for (const [what, claims] of accepted) {
    test(`accepted: ${what}`, async () => {
      for (const client of [CLI, AGENT]) {
        const res = await exchange(client, claims(client));
        assert.equal(res.status, 200, `${client}: ${JSON.stringify(res.body)}`);
        assert.equal(typeof res.body?.["access_token"], "string");
      }
    });
  }

  // [what, claims, the detail logged (exact reason of ours, or oidc-provider's message)]
  const refused: [string, () => Record<string, unknown>, string | RegExp][] = [
    ["exp more than 24 h ahead", () => claimsFor(CLI, { exp: nowS() + 86_400 + 60 }), "exp_too_far"],
    ["exp far in the future", () => claimsFor(CLI, { exp: 32_503_680_000 }), "exp_too_far"],
    ["exp missing", () => claimsFor(CLI, { exp: undefined }), /expiration must be specified/],
    ["exp not a number", () => claimsFor(CLI, { exp: String(nowS() + 30) }), /exp/],
    ["exp past", () => claimsFor(CLI, { iat: nowS() - 120, exp: nowS() - 60 }), /expired/],
    ["iat missing", () => claimsFor(CLI, { iat: undefined }), "iat_missing"],
    ["iat not a number", () => claimsFor(CLI, { iat: String(nowS()) }), /iat/],
    ["iat in the future", () => claimsFor(CLI, { iat: nowS() + 60 }), "iat_in_future"],
    ["nbf in the future", () => claimsFor(CLI, { nbf: nowS() + 60 }), /not active yet/],
    ["jti missing", () => claimsFor(CLI, { jti: undefined }), /jti/],
    ["jti not a string", () => claimsFor(CLI, { jti: 12345 }), /jti/],
    ["aud the issuer", () => claimsFor(CLI, { aud: addr.issuer }), "aud_not_token_endpoint"],
    ["aud a configured alias's origin", () => claimsFor(CLI, { aud: ALIAS }), /audience/],
    [
      "aud the token URL at an address not configured",
      () => claimsFor(CLI, { aud: "https://10.213.0.3:4444/oauth2/token" }),
      /audience/,
    ],
  ];
  for (const [what, claims, detail] of refused) {
    test(`refused, uniformly: ${what}`, async () => {
      const from = logLines.length;
      const logged = assertRefused(await exchange(CLI, claims()), what, from);
      if (typeof detail === "string") assert.equal(logged, detail, what);
      else assert.match(logged, detail, what);
    });
  }

  test("replay: a jti is single-use for the client that spent it and for every other client", async () => {
    const jti = randomUUID();
    assert.equal((await exchange(CLI, claimsFor(CLI, { jti }))).status, 200);
    let from = logLines.length;
    assert.equal(
      assertRefused(await exchange(CLI, claimsFor(CLI, { jti })), "same client", from),
      "jti_replayed",
    );
    // The agent signs its own, otherwise valid assertion with its own key, reusing the jti.
    from = logLines.length;
    assert.equal(
      assertRefused(await exchange(AGENT, claimsFor(AGENT, { jti })), "another client", from),
      "jti_replayed",
    );
    // And the other way round, with a jti the agent spent first.
    const agentJti = randomUUID();
    assert.equal((await exchange(AGENT, claimsFor(AGENT, { jti: agentJti }))).status, 200);
    from = logLines.length;
    assert.equal(
      assertRefused(await exchange(CLI, claimsFor(CLI, { jti: agentJti })), "cli after agent", from),
      "jti_replayed",
    );
  });

  test("a refused assertion does not spend its jti", async () => {
    const jti = randomUUID();
    const from = logLines.length;
    assertRefused(await exchange(CLI, claimsFor(CLI, { jti, iat: nowS() + 60 })), "future iat", from);
    assert.equal((await exchange(CLI, claimsFor(CLI, { jti }))).status, 200);
  });

  test("an unknown client and a wrong key get the same refusal", async () => {
    let from = logLines.length;
    assertRefused(await exchange(CLI, claimsFor("nobody")), "unknown client", from);
    from = logLines.length;
    const other = await makeClientKey();
    const res = await http.token(addr.tokenEndpoint, await sign(claimsFor(CLI), other));
    assertRefused(res, "wrong key", from);
  });

  test("the log never carries an assertion", async () => {
    const assertion = await sign(claimsFor(CLI, { iat: nowS() + 60 }), keys.get(CLI)!);
    await http.token(addr.tokenEndpoint, assertion);
    const text = logLines.map((l) => JSON.stringify(l)).join("\n");
    assert.ok(text.includes("token_denied"));
    assert.ok(!text.includes(assertion.split(".")[2]!), "signature not logged");
    assert.ok(!text.includes(assertion.split(".")[1]!), "payload not logged");
  });

  test("discovery: every advertised endpoint answers (no 404), and only client_credentials is listed", async () => {
    const d = await http.call(`${addr.publicUrl}/.well-known/openid-configuration`, "GET");
    assert.equal(d.status, 200);
    const doc = d.body!;
    const visited: string[] = [];
    for (const [key, value] of Object.entries(doc)) {
      if (key === "issuer" || typeof value !== "string" || !URL.canParse(value)) continue;
      for (const method of ["GET", "POST"] as const) {
        const res = await request(value, { dispatcher: http.agent, method });
        await res.body.dump();
        assert.notEqual(res.statusCode, 404, `${key} (${method} ${value})`);
      }
      visited.push(key);
    }
    assert.deepEqual(visited.sort(), ["jwks_uri", "token_endpoint"]);
    assert.equal(doc["authorization_endpoint"], undefined);
    assert.deepEqual(doc["grant_types_supported"], ["client_credentials"]);
    assert.equal(doc["token_endpoint"], addr.tokenEndpoint);
    assert.deepEqual(doc["token_endpoint_auth_methods_supported"], ["private_key_jwt"]);
  });

  test("a wrong method on a provider path is 405 with Allow, in JSON; unrouted paths stay 404", async () => {
    const cases = [
      [addr.tokenEndpoint, "GET", "POST"],
      [`${addr.publicUrl}/.well-known/openid-configuration`, "POST", "GET, HEAD"],
      [`${addr.publicUrl}/.well-known/jwks.json`, "DELETE", "GET, HEAD"],
    ] as const;
    for (const [url, method, allow] of cases) {
      const res = await request(url, { dispatcher: http.agent, method });
      const body = (await res.body.json()) as Record<string, unknown>;
      assert.equal(res.statusCode, 405, `${method} ${url}`);
      assert.equal(res.headers["allow"], allow);
      assert.equal(body["error"], "method_not_allowed");
    }
    for (const path of ["/auth", "/oauth2/auth", "/token/introspection", "/session/end"]) {
      assert.equal((await http.call(`${addr.publicUrl}${path}`, "GET")).status, 404, path);
    }
  });
});
