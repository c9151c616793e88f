// TokenSource against the real embedded auth server (packages/authserver), spawned as its own
// process over real TLS 1.3 with the trust set's server leaf: the token it gets is introspected
// as active with scope `admin` for client `clawker-cli`; an unregistered key and a wrong scope
// are refused with the OAuth2 error the server sent.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { before, after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { freePort, waitFor } from "@clawker/test-support";
import { Agent, request } from "undici";
import { mintTrustSet, TokenSource, type TrustSet } from "../src/index.js";

const authMain = fileURLToPath(new URL("../../authserver/src/main.ts", import.meta.url));

let trust: TrustSet;
let dir: string;
let publicUrl: string;
let http: Agent;
/** The admin API: plain HTTP through the auth server's Unix socket. */
let admin: Agent;
const adminUrl = "http://localhost";
let stopServer: () => Promise<void> = async () => {};

before(async () => {
  trust = await mintTrustSet();
  dir = mkdtempSync(join(tmpdir(), "adminclient-authserver-"));
  writeFileSync(join(dir, "tls.crt"), trust.controlPlaneServer.certPem);
  writeFileSync(join(dir, "tls.key"), trust.controlPlaneServer.keyPem, { mode: 0o600 });
  const pub = await freePort();
  writeFileSync(
    join(dir, "auth.json"),
    JSON.stringify({
      public: { host: "127.0.0.1", port: pub },
      tls: { certFile: "tls.crt", keyFile: "tls.key" },
      databaseFile: "auth.db",
      signingKeyFile: "signing.jwk",
      logLevel: "warn",
    }),
  );
  publicUrl = `https://127.0.0.1:${pub}`;
  const proc = spawn(
    process.execPath,
    [
      "--import",
      import.meta.resolve("tsx"),
      "--conditions=source",
      authMain,
      "--config",
      join(dir, "auth.json"),
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  proc.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  stopServer = async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGTERM");
    await exited;
  };
  http = new Agent({ connect: { ca: trust.ca.certPem, minVersion: "TLSv1.3" } });
  admin = new Agent({ connect: { socketPath: join(dir, "admin.sock") } });
  await waitFor(
    async () => {
      if (proc.exitCode !== null) throw new Error(`authserver exited ${proc.exitCode}: ${stderr}`);
      const res = await request(`${publicUrl}/health/ready`, { dispatcher: http }).catch(() => undefined);
      await res?.body.dump();
      return res?.statusCode === 200;
    },
    { timeoutMs: 60_000, intervalMs: 100, what: "authserver ready" },
  );
  const reg = await request(`${adminUrl}/admin/clients`, {
    method: "POST",
    dispatcher: admin,
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      client_id: "clawker-cli",
      grant_types: ["client_credentials"],
      token_endpoint_auth_method: "private_key_jwt",
      token_endpoint_auth_signing_alg: "ES256",
      scope: "admin",
      jwks: { keys: [trust.signingKey.publicJwk] },
    }),
  });
  assert.equal(reg.statusCode, 201, await reg.body.text());
});

after(async () => {
  await stopServer();
  await http?.close();
  await admin?.close();
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

async function introspect(token: string): Promise<Record<string, unknown>> {
  const res = await request(`${adminUrl}/admin/oauth2/introspect`, {
    method: "POST",
    dispatcher: admin,
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ token, scope: "admin" }).toString(),
  });
  return (await res.body.json()) as Record<string, unknown>;
}

describe("TokenSource against the real auth server", () => {
  test("gets an active admin token for clawker-cli, cached across calls", async (t) => {
    const tokens = new TokenSource({
      tokenEndpoint: `${publicUrl}/oauth2/token`,
      ca: trust.ca.certPem,
      signingKey: trust.signingKey.privateJwk,
    });
    t.after(() => tokens.close());
    const [a, b] = await Promise.all([tokens.accessToken(), tokens.accessToken()]);
    assert.equal(a.accessToken, b.accessToken);
    assert.equal(tokens.requestCount, 1);
    assert.ok(a.expiresAtMs - Date.now() > 3500_000, "1 h tokens");
    const info = await introspect(a.accessToken);
    assert.equal(info["active"], true);
    assert.equal(info["client_id"], "clawker-cli");
    assert.equal(info["scope"], "admin");
    // A second source makes a fresh assertion (new jti): the server's replay check lets it in.
    const second = new TokenSource({
      tokenEndpoint: `${publicUrl}/oauth2/token`,
      ca: trust.ca.certPem,
      signingKey: trust.signingKey.privateJwk,
    });
    t.after(() => second.close());
    assert.notEqual(await second.token(), a.accessToken);
  });

  test("a key the server does not know is refused: token_request_failed, invalid_client", async (t) => {
    const other = await mintTrustSet();
    const tokens = new TokenSource({
      tokenEndpoint: `${publicUrl}/oauth2/token`,
      ca: trust.ca.certPem,
      signingKey: other.signingKey.privateJwk,
    });
    t.after(() => tokens.close());
    await assert.rejects(tokens.token(), {
      reason: "token_request_failed",
      status: 401,
      oauthError: "invalid_client",
    });
  });

  test("a scope the client does not have is refused with the server's OAuth2 error", async (t) => {
    const tokens = new TokenSource({
      tokenEndpoint: `${publicUrl}/oauth2/token`,
      ca: trust.ca.certPem,
      signingKey: trust.signingKey.privateJwk,
      scope: "agent:self:register",
    });
    t.after(() => tokens.close());
    await assert.rejects(tokens.token(), (err: { reason: string; status: number; oauthError: string }) => {
      assert.equal(err.reason, "token_request_failed");
      assert.equal(err.status, 400);
      assert.equal(err.oauthError, "invalid_scope");
      return true;
    });
  });
});
