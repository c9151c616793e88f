// The Hydra-shaped API end to end against a real in-process server: real TLS 1.3 on 127.0.0.1:0,
// the admin API on a real Unix socket, real sqlite in a temp dir, real ES256 client assertions.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { lstatSync, rmSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import { connect } from "node:tls";
import { after, before, describe, test } from "node:test";
import { waitFor } from "../../../test/harness/wait-for.js";
import { ADMIN, clientBody, makeAssertion, makeClientKey, type ClientKey } from "./fixtures/oauth.js";
import { join } from "node:path";
import { pino } from "pino";
import { AuthServer, parseConfig, type AuthServerConfigInput } from "../src/index.js";
import { makeWorkspace, startServer, type RunningServer } from "./fixtures/server.js";

/** A config for a second server in `s`'s temp dir (own database and key). */
function makeWorkspaceConfig(s: RunningServer): Promise<AuthServerConfigInput> {
  return Promise.resolve({
    tls: { certFile: s.tls.certFile, keyFile: s.tls.keyFile },
    databaseFile: join(s.dir, "second.db"),
    signingKeyFile: join(s.dir, "second.jwk"),
    logLevel: "silent",
  });
}

describe("auth server (in-process)", () => {
  let s: RunningServer;
  let key: ClientKey;
  const cli = "clawker-cli";
  const agent = "clawker-agent";

  before(async () => {
    s = await startServer();
    key = await makeClientKey();
    for (const [id, scope] of [
      [cli, "admin"],
      [agent, "agent:self:register"],
    ] as const) {
      const r = await s.admin.call(`${ADMIN}/admin/clients`, "POST", {
        json: clientBody(id, scope, key),
      });
      assert.equal(r.status, 201, `register ${id}`);
    }
  });
  after(async () => {
    await s?.stop();
  });

  const clientsUrl = (): string => `${ADMIN}/admin/clients`;
  const assertion = (
    clientId: string,
    k: ClientKey = key,
    extra: Partial<Parameters<typeof makeAssertion>[0]> = {},
  ) => makeAssertion({ clientId, key: k, aud: s.addr.tokenEndpoint, ...extra });

  test("register: 201 with Hydra's client JSON, then 409 for the same id; GET 200, unknown 404", async () => {
    const id = "registration-test";
    const created = await s.admin.call(clientsUrl(), "POST", { json: clientBody(id, "admin other", key) });
    assert.equal(created.status, 201);
    assert.equal(created.body?.["client_id"], id);
    assert.equal(created.body?.["scope"], "admin other");
    assert.deepEqual(created.body?.["grant_types"], ["client_credentials"]);
    assert.equal(created.body?.["token_endpoint_auth_method"], "private_key_jwt");
    assert.equal(created.body?.["token_endpoint_auth_signing_alg"], "ES256");
    assert.deepEqual(created.body?.["jwks"], { keys: [key.publicJwk] });

    const again = await s.admin.call(clientsUrl(), "POST", { json: clientBody(id, "admin", key) });
    assert.equal(again.status, 409);
    assert.equal(typeof again.body?.["error"], "string");

    const got = await s.admin.call(`${clientsUrl()}/${id}`, "GET");
    assert.equal(got.status, 200);
    assert.deepEqual(got.body, created.body, "the 409 changed nothing");
    const missing = await s.admin.call(`${clientsUrl()}/nobody`, "GET");
    assert.equal(missing.status, 404);
    assert.equal(missing.body?.["error"], "not_found");
  });

  test("malformed client JSON: 400 with a precise message, nothing stored", async () => {
    const bad = await s.admin.call(clientsUrl(), "POST", {
      json: { ...clientBody("bad-client", "admin", key), token_endpoint_auth_method: "client_secret_basic" },
    });
    assert.equal(bad.status, 400);
    assert.equal(bad.body?.["error"], "invalid_client_metadata");
    assert.match(
      String(bad.body?.["error_description"]),
      /token_endpoint_auth_method: must be "private_key_jwt"/,
    );
    const notJson = await s.admin.call(clientsUrl(), "POST", {
      raw: "{client_id:",
      type: "application/json",
    });
    assert.equal(notJson.status, 400);
    assert.match(String(notJson.body?.["error_description"]), /not valid JSON/);
    const wrongType = await s.admin.call(clientsUrl(), "POST", { raw: "client_id=x", type: "text/plain" });
    assert.equal(wrongType.status, 400);
    assert.equal((await s.admin.call(`${clientsUrl()}/bad-client`, "GET")).status, 404);
  });

  test("token: a valid assertion gets an opaque Bearer token with the requested scope", async () => {
    const res = await s.http.token(s.addr.tokenEndpoint, await assertion(cli), "admin");
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(res.body?.["token_type"], "Bearer");
    assert.equal(res.body?.["scope"], "admin");
    assert.equal(res.body?.["expires_in"], 3600);
    const token = String(res.body?.["access_token"]);
    assert.equal(token.split(".").length, 1, "opaque, not a JWT");

    const info = await s.admin.introspect(ADMIN, token, "admin");
    assert.equal(info.status, 200);
    const now = Math.floor(Date.now() / 1000);
    assert.equal(info.body?.["active"], true);
    assert.equal(info.body?.["scope"], "admin");
    assert.equal(info.body?.["client_id"], cli);
    assert.equal(info.body?.["sub"], cli);
    assert.equal(info.body?.["token_type"], "Bearer");
    assert.equal(info.body?.["token_use"], "access_token");
    assert.equal(info.body?.["iss"], s.addr.issuer);
    assert.deepEqual(info.body?.["aud"], ["urn:clawker:controlplane"]);
    const exp = Number(info.body?.["exp"]);
    const iat = Number(info.body?.["iat"]);
    assert.ok(
      Math.abs(exp - (now + 3600)) <= 5 && Math.abs(iat - now) <= 5,
      `iat ${iat} exp ${exp} now ${now}`,
    );
  });

  test("introspect: inactive for a scope not granted, an unknown token, an empty token; 400 for an empty body", async () => {
    const res = await s.http.token(s.addr.tokenEndpoint, await assertion(cli), "admin");
    const token = String(res.body?.["access_token"]);
    assert.deepEqual((await s.admin.introspect(ADMIN, token, "agent:self:register")).body, {
      active: false,
    });
    assert.deepEqual((await s.admin.introspect(ADMIN, token, "admin agent:self:register")).body, {
      active: false,
    });
    assert.equal((await s.admin.introspect(ADMIN, token)).body?.["active"], true, "no scope asked");
    assert.deepEqual((await s.admin.introspect(ADMIN, "x".repeat(43), "admin")).body, {
      active: false,
    });
    assert.deepEqual((await s.admin.introspect(ADMIN, "")).body, { active: false });
    const empty = await s.admin.call(`${ADMIN}/admin/oauth2/introspect`, "POST", {
      raw: "",
      type: "application/x-www-form-urlencoded",
    });
    assert.equal(empty.status, 400);
    assert.equal(empty.body?.["error"], "invalid_request");
  });

  test("a token requested without scope carries none and fails any scope check", async () => {
    const res = await s.http.token(s.addr.tokenEndpoint, await assertion(cli));
    assert.equal(res.status, 200);
    assert.equal(res.body?.["scope"], undefined);
    const token = String(res.body?.["access_token"]);
    assert.deepEqual((await s.admin.introspect(ADMIN, token, "admin")).body, { active: false });
  });

  test("replay: the same assertion is refused the second time", async () => {
    const a = await assertion(cli);
    assert.equal((await s.http.token(s.addr.tokenEndpoint, a, "admin")).status, 200);
    const replay = await s.http.token(s.addr.tokenEndpoint, a, "admin");
    assert.equal(replay.status, 401);
    assert.equal(replay.body?.["error"], "invalid_client");
  });

  test("replay: two concurrent uses of one assertion, exactly one wins", async () => {
    const a = await assertion(cli);
    const results = await Promise.all(
      Array.from({ length: 6 }, () => s.http.token(s.addr.tokenEndpoint, a, "admin")),
    );
    assert.deepEqual(results.map((r) => r.status).sort(), [200, 401, 401, 401, 401, 401]);
  });

  test("wrong audience is refused: the issuer, another URL, the admin socket's URL", async () => {
    for (const aud of [s.addr.issuer, "https://elsewhere.example/oauth2/token", `${ADMIN}/oauth2/token`]) {
      const res = await s.http.token(s.addr.tokenEndpoint, await assertion(cli, key, { aud }), "admin");
      assert.equal(res.status, 401, aud);
      assert.equal(res.body?.["error"], "invalid_client", aud);
    }
  });

  test("wrong key is refused", async () => {
    const other = await makeClientKey();
    const res = await s.http.token(s.addr.tokenEndpoint, await assertion(cli, other), "admin");
    assert.equal(res.status, 401);
    assert.equal(res.body?.["error"], "invalid_client");
  });

  test("expired assertion is refused", async () => {
    const now = Math.floor(Date.now() / 1000);
    const res = await s.http.token(
      s.addr.tokenEndpoint,
      await assertion(cli, key, { iat: now - 600, exp: now - 60 }),
      "admin",
    );
    assert.equal(res.status, 401);
    assert.equal(res.body?.["error"], "invalid_client");
  });

  test("assertion for an unknown client, or iss != client, is refused", async () => {
    const res = await s.http.token(s.addr.tokenEndpoint, await assertion("nobody"), "admin");
    assert.equal(res.status, 401);
    assert.equal(res.body?.["error"], "invalid_client");
  });

  test("scope beyond the client's registration is refused with invalid_scope", async () => {
    const res = await s.http.token(s.addr.tokenEndpoint, await assertion(agent), "admin");
    assert.equal(res.status, 400);
    assert.equal(res.body?.["error"], "invalid_scope");
    assert.match(String(res.body?.["error_description"]), /'admin'/);
    const mixed = await s.http.token(
      s.addr.tokenEndpoint,
      await assertion(agent),
      "agent:self:register admin",
    );
    assert.equal(mixed.status, 400);
    const ok = await s.http.token(s.addr.tokenEndpoint, await assertion(agent), "agent:self:register");
    assert.equal(ok.status, 200);
    assert.equal(ok.body?.["scope"], "agent:self:register");
  });

  test("another resource indicator is refused with invalid_target", async () => {
    const res = await s.http.token(s.addr.tokenEndpoint, await assertion(cli), "admin", {
      resource: "https://other.example/",
    });
    assert.equal(res.status, 400);
    assert.equal(res.body?.["error"], "invalid_target");
  });

  test("no eviction: after more than 1000 tokens (and as many replay records) the first is still active", async () => {
    const first = await s.http.token(s.addr.tokenEndpoint, await assertion(cli), "admin");
    const firstToken = String(first.body?.["access_token"]);
    const total = 1050;
    const workers = 8;
    let issued = 0;
    await Promise.all(
      Array.from({ length: workers }, async () => {
        while (issued < total) {
          issued++;
          const r = await s.http.token(s.addr.tokenEndpoint, await assertion(cli), "admin");
          assert.equal(r.status, 200);
        }
      }),
    );
    const info = await s.admin.introspect(ADMIN, firstToken, "admin");
    assert.equal(info.body?.["active"], true);
  });

  test("discovery and JWKS at Hydra's paths; other paths 404", async () => {
    const d = await s.http.call(`${s.addr.publicUrl}/.well-known/openid-configuration`, "GET");
    assert.equal(d.status, 200);
    assert.equal(d.body?.["issuer"], s.addr.issuer);
    assert.equal(d.body?.["token_endpoint"], s.addr.tokenEndpoint);
    assert.equal(d.body?.["jwks_uri"], `${s.addr.publicUrl}/.well-known/jwks.json`);
    const jwks = await s.http.call(`${s.addr.publicUrl}/.well-known/jwks.json`, "GET");
    assert.equal(jwks.status, 200);
    const keys = jwks.body?.["keys"] as Record<string, unknown>[];
    assert.equal(keys.length, 1);
    assert.equal(keys[0]?.["crv"], "P-256");
    assert.equal(keys[0]?.["d"], undefined, "no private part published");
    for (const path of ["/auth", "/me", "/token/introspection", "/admin/clients"]) {
      assert.equal((await s.http.call(`${s.addr.publicUrl}${path}`, "GET")).status, 404, path);
    }
  });

  test("discovery ignores the Host header a client sends", async () => {
    const url = new URL(`${s.addr.publicUrl}/.well-known/openid-configuration`);
    const body = await new Promise<string>((resolve, reject) => {
      const req = httpsRequest(
        {
          host: url.hostname,
          port: url.port,
          path: url.pathname,
          ca: s.tls.caPem,
          servername: "localhost",
          minVersion: "TLSv1.3",
          headers: { host: "evil.example:443", accept: "application/json" },
        },
        (res) => {
          let text = "";
          res.setEncoding("utf8").on("data", (c: string) => (text += c));
          res.on("end", () => resolve(text));
        },
      );
      req.on("error", reject);
      req.end();
    });
    const d = JSON.parse(body) as Record<string, unknown>;
    assert.equal(d["token_endpoint"], s.addr.tokenEndpoint);
    assert.equal(d["issuer"], s.addr.issuer);
  });

  test("a taken port fails start with listen_failed, leaves nothing listening, and the first server's socket alone", async () => {
    const port = Number(new URL(s.addr.publicUrl).port);
    const other = new AuthServer(
      parseConfig({
        ...(await makeWorkspaceConfig(s)),
        admin: { socket: join(s.dir, "second.sock") },
        public: { host: "127.0.0.1", port },
      }),
      pino({ level: "silent" }),
    );
    await assert.rejects(other.start(), { reason: "listen_failed" });
    assert.equal(other.addresses, undefined);
    await other.close();
    assert.throws(() => lstatSync(join(s.dir, "second.sock")), { code: "ENOENT" });
    assert.equal((await s.admin.call(`${ADMIN}/health/alive`, "GET")).status, 200);
  });

  test("health on the public listener and on the admin socket", async () => {
    for (const [client, base] of [
      [s.http, s.addr.publicUrl],
      [s.admin, ADMIN],
    ] as const) {
      for (const path of ["/health/alive", "/health/ready"]) {
        const r = await client.call(`${base}${path}`, "GET");
        assert.equal(r.status, 200, `${base}${path}`);
        assert.deepEqual(r.body, { status: "ok" });
      }
    }
  });

  test("the public listener serves no admin route", async () => {
    for (const [method, path] of [
      ["POST", "/admin/clients"],
      ["GET", "/admin/clients/clawker-cli"],
      ["PUT", "/admin/clients/clawker-cli"],
      ["POST", "/admin/oauth2/introspect"],
      ["DELETE", "/admin/oauth2/tokens?client_id=clawker-cli"],
    ] as const) {
      const r = await s.http.call(`${s.addr.publicUrl}${path}`, method, {
        json: clientBody("x", "admin", key),
      });
      assert.equal(r.status, 404, `${method} ${path}`);
    }
  });

  test("a TLS 1.2 client is refused on the public listener", async () => {
    const url = new URL(s.addr.publicUrl);
    const outcome = await new Promise<string>((resolve) => {
      const sock = connect({
        host: url.hostname,
        port: Number(url.port),
        ca: s.tls.caPem,
        minVersion: "TLSv1.2",
        maxVersion: "TLSv1.2",
        servername: "localhost",
      });
      sock.once("secureConnect", () => {
        sock.destroy();
        resolve("connected");
      });
      sock.once("error", (err: Error) => resolve(`error: ${err.message}`));
    });
    assert.match(outcome, /^error: .*(version|protocol)/i);
    // And TLS 1.3 with the same CA works (the refusal is about the version, not trust).
    const ok = await s.http.call(`${s.addr.publicUrl}/health/alive`, "GET");
    assert.equal(ok.status, 200);
  });

  test("the admin socket is 0600 in a 0700 directory", () => {
    assert.equal(s.addr.adminSocket, join(s.dir, "admin.sock"));
    const st = lstatSync(s.addr.adminSocket);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal(lstatSync(s.dir).mode & 0o777, 0o700);
  });

  test("PUT replaces a client as Hydra's setOAuth2Client: 200, the path's id, created_at kept; the old key stops working", async () => {
    const id = `replaced-${randomUUID().slice(0, 8)}`;
    const created = await s.admin.call(clientsUrl(), "POST", { json: clientBody(id, "admin other", key) });
    assert.equal(created.status, 201);
    const newKey = await makeClientKey();
    const put = await s.admin.call(`${clientsUrl()}/${id}`, "PUT", {
      json: { ...clientBody("ignored-body-id", "admin", newKey) },
    });
    assert.equal(put.status, 200, JSON.stringify(put.body));
    assert.equal(put.body?.["client_id"], id, "the path's id wins, as in Hydra");
    assert.equal(put.body?.["scope"], "admin");
    assert.deepEqual(put.body?.["jwks"], { keys: [newKey.publicJwk] });
    assert.equal(put.body?.["created_at"], created.body?.["created_at"]);
    assert.deepEqual((await s.admin.call(`${clientsUrl()}/${id}`, "GET")).body, put.body);
    assert.equal((await s.admin.call(`${clientsUrl()}/ignored-body-id`, "GET")).status, 404);

    const old = await s.http.token(s.addr.tokenEndpoint, await assertion(id, key), "admin");
    assert.equal(old.status, 401, "the replaced key is refused");
    assert.equal(old.body?.["error"], "invalid_client");
    const broader = await s.http.token(s.addr.tokenEndpoint, await assertion(id, newKey), "admin other");
    assert.equal(broader.status, 400, "the replaced scope is gone");
    const ok = await s.http.token(s.addr.tokenEndpoint, await assertion(id, newKey), "admin");
    assert.equal(ok.status, 200);
  });

  test("PUT: 404 for an unknown client (nothing created), 400 for a bad body (nothing changed)", async () => {
    const missing = await s.admin.call(`${clientsUrl()}/no-such-client`, "PUT", {
      json: clientBody("no-such-client", "admin", key),
    });
    assert.equal(missing.status, 404);
    assert.equal(missing.body?.["error"], "not_found");
    assert.equal((await s.admin.call(`${clientsUrl()}/no-such-client`, "GET")).status, 404);

    const before = (await s.admin.call(`${clientsUrl()}/${cli}`, "GET")).body;
    const bad = await s.admin.call(`${clientsUrl()}/${cli}`, "PUT", {
      json: { ...clientBody(cli, "admin", key), jwks: { keys: [] } },
    });
    assert.equal(bad.status, 400);
    assert.equal(bad.body?.["error"], "invalid_client_metadata");
    assert.match(String(bad.body?.["error_description"]), /jwks\.keys: must hold at least one/);
    const notJson = await s.admin.call(`${clientsUrl()}/${cli}`, "PUT", {
      raw: "{",
      type: "application/json",
    });
    assert.equal(notJson.status, 400);
    assert.deepEqual((await s.admin.call(`${clientsUrl()}/${cli}`, "GET")).body, before);
  });

  test("DELETE /admin/oauth2/tokens?client_id: 204, that client's tokens go inactive, the client and others' tokens stay", async () => {
    const id = `revoked-${randomUUID().slice(0, 8)}`;
    assert.equal(
      (await s.admin.call(clientsUrl(), "POST", { json: clientBody(id, "admin", key) })).status,
      201,
    );
    const mine = String(
      (await s.http.token(s.addr.tokenEndpoint, await assertion(id), "admin")).body?.["access_token"],
    );
    const theirs = String(
      (await s.http.token(s.addr.tokenEndpoint, await assertion(cli), "admin")).body?.["access_token"],
    );
    const del = await s.admin.call(
      `${ADMIN}/admin/oauth2/tokens?client_id=${encodeURIComponent(id)}`,
      "DELETE",
    );
    assert.equal(del.status, 204);
    assert.deepEqual((await s.admin.introspect(ADMIN, mine)).body, { active: false });
    assert.equal((await s.admin.introspect(ADMIN, theirs)).body?.["active"], true);
    assert.equal((await s.admin.call(`${clientsUrl()}/${id}`, "GET")).status, 200);
    assert.equal((await s.http.token(s.addr.tokenEndpoint, await assertion(id), "admin")).status, 200);

    const noId = await s.admin.call(`${ADMIN}/admin/oauth2/tokens`, "DELETE");
    assert.equal(noId.status, 400);
    assert.equal(noId.body?.["error"], "invalid_request");
  });

  test("DELETE a client: 204, then 404; its tokens go inactive and new token requests fail", async () => {
    const id = `doomed-${randomUUID().slice(0, 8)}`;
    assert.equal(
      (await s.admin.call(clientsUrl(), "POST", { json: clientBody(id, "admin", key) })).status,
      201,
    );
    const t = await s.http.token(s.addr.tokenEndpoint, await assertion(id), "admin");
    assert.equal(t.status, 200);
    const token = String(t.body?.["access_token"]);
    assert.equal((await s.admin.introspect(ADMIN, token, "admin")).body?.["active"], true);

    const del = await s.admin.call(`${clientsUrl()}/${id}`, "DELETE");
    assert.equal(del.status, 204);
    assert.equal(del.body, undefined);
    assert.equal((await s.admin.call(`${clientsUrl()}/${id}`, "DELETE")).status, 404);
    assert.deepEqual((await s.admin.introspect(ADMIN, token, "admin")).body, { active: false });
    const after = await s.http.token(s.addr.tokenEndpoint, await assertion(id), "admin");
    assert.equal(after.status, 401);
    assert.equal(after.body?.["error"], "invalid_client");
  });
});

describe("auth server with a 2 s token lifetime", () => {
  let s: RunningServer;
  before(async () => {
    s = await startServer({ accessTokenTtlSeconds: 2 });
  });
  after(async () => {
    await s?.stop();
  });

  test("an expired token introspects inactive", async () => {
    const key = await makeClientKey();
    assert.equal(
      (
        await s.admin.call(`${ADMIN}/admin/clients`, "POST", {
          json: clientBody("short", "admin", key),
        })
      ).status,
      201,
    );
    const res = await s.http.token(
      s.addr.tokenEndpoint,
      await makeAssertion({ clientId: "short", key, aud: s.addr.tokenEndpoint }),
      "admin",
    );
    assert.equal(res.body?.["expires_in"], 2);
    const token = String(res.body?.["access_token"]);
    assert.equal((await s.admin.introspect(ADMIN, token, "admin")).body?.["active"], true);
    await waitFor(async () => (await s.admin.introspect(ADMIN, token, "admin")).body?.["active"] === false, {
      timeoutMs: 6000,
      intervalMs: 50,
      what: "the 2 s token to turn inactive",
    });
    assert.deepEqual((await s.admin.introspect(ADMIN, token, "admin")).body, { active: false });
  });
});

test("close() during start() wins: start rejects and nothing is left listening", async (t) => {
  const { dir, base } = await makeWorkspace();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const server = new AuthServer(parseConfig(base), pino({ level: "silent" }));
  const started = server.start();
  const closed = server.close();
  await assert.rejects(started, { reason: "closed" });
  await closed;
  assert.equal(server.addresses, undefined);
  await assert.rejects(server.start(), /closed/);
});
