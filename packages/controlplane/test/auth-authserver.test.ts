// The real token and introspection path: the embedded OAuth2 server (packages/authserver, its own
// process, its admin API on a Unix socket) registers clawker's clients through our registration
// code, issues tokens for ES256 client assertions, and answers the AuthInterceptor's RFC 7662
// lookups for a real grpc-js server over real mTLS with the CLI's trust material
// (test/harness/trust.ts). Registration replaces a client someone else registered under our id.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import tls from "node:tls";
import { after, before, describe, test } from "node:test";
import {
  Metadata,
  Server,
  ServerCredentials,
  credentials,
  status,
  type ServiceError,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { admin, agent } from "@clawker/proto";
import { SignJWT, exportJWK, generateKeyPair, importJWK, type CryptoKey } from "jose";
import pino from "pino";
import { Agent, request } from "undici";
import {
  AuthInterceptor,
  CachingIntrospector,
  HttpIntrospector,
  ReadyGate,
  clawkerClients,
  reasonMessage,
  recoveryInterceptor,
  registerClients,
  withRecovery,
} from "../src/auth/index.js";
import { httpRequest, unixSocketUrl } from "../src/http-client.js";
import { mintTestTrust, type TestTrust } from "../../../test/harness/trust.js";
import { waitFor } from "../../../test/harness/wait-for.js";

tls.DEFAULT_MIN_VERSION = "TLSv1.3";
const repoRoot = resolve(import.meta.dirname, "../../..");
const log = pino({ level: "silent" });

let trust: TestTrust;
let authserver: ChildProcess;
let stdout = "";
let adminUrl: string;
let tokenUrl: string;
let http: Agent;

async function startAuthServer(): Promise<void> {
  const file = join(trust.dir, "authserver.json");
  writeFileSync(
    file,
    JSON.stringify({
      public: { host: "127.0.0.1", port: 0 },
      tls: { certFile: trust.paths.controlPlaneServerCert, keyFile: trust.paths.controlPlaneServerKey },
      databaseFile: join(trust.dir, "auth.db"),
      signingKeyFile: join(trust.dir, "auth-signing.jwk"),
      logLevel: "info",
    }),
  );
  authserver = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      "--conditions=source",
      join(repoRoot, "packages/authserver/src/main.ts"),
      "--config",
      file,
    ],
    { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] },
  );
  let stderr = "";
  authserver.stdout?.setEncoding("utf8").on("data", (c: string) => (stdout += c));
  authserver.stderr?.setEncoding("utf8").on("data", (c: string) => (stderr += c));
  const listening = await waitFor(
    () => {
      if (authserver.exitCode !== null)
        throw new Error(`authserver exited ${authserver.exitCode}: ${stderr}`);
      for (const line of stdout.split("\n")) {
        if (!line.includes('"listening"')) continue;
        return JSON.parse(line) as { issuer: string; admin: { socket: string } };
      }
      return undefined;
    },
    { timeoutMs: 60_000, intervalMs: 50, what: "authserver listening" },
  );
  adminUrl = unixSocketUrl(listening.admin.socket);
  tokenUrl = `${listening.issuer.replace(/\/$/, "")}/oauth2/token`;
}

async function stopAuthServer(): Promise<void> {
  if (authserver.exitCode !== null || authserver.signalCode !== null) return;
  const exited = new Promise((r) => authserver.once("exit", r));
  authserver.kill("SIGTERM");
  await exited;
}

/** Asks the token endpoint; resolves with the status and the token (when 200). */
async function tokenAnswer(
  clientId: string,
  scope: string,
  signingKey: CryptoKey | Uint8Array = trustKey,
): Promise<{ status: number; token: string | undefined }> {
  const assertion = await new SignJWT({})
    .setProtectedHeader({ alg: "ES256" })
    .setIssuer(clientId)
    .setSubject(clientId)
    .setAudience(tokenUrl)
    .setJti(crypto.randomUUID())
    .setIssuedAt()
    .setExpirationTime("30s")
    .sign(signingKey);
  const res = await request(tokenUrl, {
    dispatcher: http,
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "client_credentials",
      scope,
      client_assertion_type: "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
      client_assertion: assertion,
    }).toString(),
  });
  const body = (await res.body.json()) as { access_token?: string };
  return { status: res.statusCode, token: body.access_token };
}

async function token(clientId: string, scope: string): Promise<string> {
  const answer = await tokenAnswer(clientId, scope);
  assert.equal(answer.status, 200);
  return answer.token!;
}

interface Listener {
  readonly port: number;
  close(): Promise<void>;
}

async function listen(kind: "admin" | "agent"): Promise<Listener> {
  const introspection = new HttpIntrospector({ adminUrl, ca: trust.set.ca.certPem, timeoutMs: 1000 });
  const auth = new AuthInterceptor({
    introspector: new CachingIntrospector(introspection),
    log,
    ...(kind === "agent" ? { requiredClientId: "clawker-agent" } : {}),
  });
  const gate = new ReadyGate();
  gate.setReady();
  const server = new Server({
    interceptors:
      kind === "admin"
        ? [recoveryInterceptor(log), gate.interceptor, auth.interceptor]
        : [recoveryInterceptor(log), auth.interceptor],
  });
  if (kind === "admin") {
    const impl: Record<string, unknown> = {};
    for (const name of Object.keys(admin.AdminServiceService)) {
      impl[name] = (_c: unknown, cb: (e: unknown) => void) =>
        cb({ code: status.UNIMPLEMENTED, details: "not implemented" });
    }
    impl["listAgents"] = (_c: unknown, cb: (e: null, r: admin.ListAgentsResult) => void) =>
      cb(null, { agents: [] });
    impl["getSystemTime"] = (_c: unknown, cb: (e: null, r: admin.GetSystemTimeResult) => void) =>
      cb(null, { unixNanos: 1n });
    impl["watchSos"] = (call: { end(): void }) => call.end();
    server.addService(
      admin.AdminServiceService,
      withRecovery(admin.AdminServiceService, impl as UntypedServiceImplementation, log),
    );
  } else {
    server.addService(agent.AgentServiceService, {
      register: (_c: unknown, cb: (e: null, r: agent.Welcome) => void) => cb(null, {}),
    });
  }
  const creds = ServerCredentials.createSsl(
    Buffer.from(trust.set.ca.certPem),
    [
      {
        cert_chain: Buffer.from(trust.set.controlPlaneServer.certPem),
        private_key: Buffer.from(trust.set.controlPlaneServer.keyPem),
      },
    ],
    true,
  );
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync("127.0.0.1:0", creds, (e, p) => (e ? rej(e) : res(p))),
  );
  return {
    port,
    close: async () => {
      server.forceShutdown();
      await introspection.close();
    },
  };
}

type AnyClient = Record<string, (...args: unknown[]) => unknown> & { close(): void };

function client(port: number, kind: "admin" | "agent"): AnyClient {
  const ctor = kind === "admin" ? admin.AdminServiceClient : agent.AgentServiceClient;
  return new ctor(
    `127.0.0.1:${port}`,
    credentials.createSsl(
      Buffer.from(trust.set.ca.certPem),
      Buffer.from(trust.set.cli.keyPem),
      Buffer.from(trust.set.cli.certPem),
    ),
  ) as unknown as AnyClient;
}

function call(c: AnyClient, method: string, bearer?: string): Promise<{ code: status; details: string }> {
  const md = new Metadata();
  if (bearer !== undefined) md.set("authorization", `Bearer ${bearer}`);
  return new Promise((resolve) => {
    c[method]!({}, md, { deadline: Date.now() + 10_000 }, (err: ServiceError | null) =>
      resolve(err ? { code: err.code, details: err.details } : { code: status.OK, details: "" }),
    );
  });
}

let trustKey: CryptoKey | Uint8Array;

before(async () => {
  trust = await mintTestTrust();
  trustKey = await importJWK(trust.set.signingKey.privateJwk, "ES256");
  http = new Agent({ connect: { ca: trust.set.ca.certPem } });
  await startAuthServer();
});

after(async () => {
  await stopAuthServer();
  await http.close();
  await trust.close();
});

void describe("against the embedded authserver (real process)", () => {
  let adminListener: Listener;
  let agentListener: Listener;
  let adminClient: AnyClient;
  let agentClient: AnyClient;

  before(async () => {
    adminListener = await listen("admin");
    agentListener = await listen("agent");
    adminClient = client(adminListener.port, "admin");
    agentClient = client(agentListener.port, "agent");
  });
  after(async () => {
    adminClient.close();
    agentClient.close();
    await adminListener.close();
    await agentListener.close();
  });

  void test("registration: both clients created (201), then found equal to ours (409 + GET)", async () => {
    const jwks = { keys: [trust.set.signingKey.publicJwk as Record<string, unknown>] };
    const first = await registerClients(clawkerClients(jwks), { adminUrl });
    assert.deepEqual(
      [...first.entries()].map(([id, r]) => [id, r.outcome]),
      [
        ["clawker-cli", "created"],
        ["clawker-agent", "created"],
      ],
    );
    const again = await registerClients(clawkerClients(jwks), { adminUrl });
    assert.deepEqual(
      [...again.values()],
      [
        { outcome: "exists", differences: [] },
        { outcome: "exists", differences: [] },
      ],
    );
  });

  void test("a squatter's clawker-cli (foreign key, broader scope) is replaced: its key and token stop working, ours works", async (t) => {
    const admin = (method: "GET" | "POST" | "DELETE", path: string, body?: unknown) =>
      httpRequest(new URL(path, adminUrl), {
        method,
        signal: AbortSignal.timeout(5000),
        ...(body === undefined
          ? {}
          : { body: JSON.stringify(body), headers: { "content-type": "application/json" } }),
      });
    const squatter = await generateKeyPair("ES256");
    const squatterJwk = { ...(await exportJWK(squatter.publicKey)), alg: "ES256", use: "sig" };
    // What a local user could do while the admin API was on loopback TCP.
    assert.equal((await admin("DELETE", "/admin/clients/clawker-cli")).status, 204);
    const squat = await admin("POST", "/admin/clients", {
      client_id: "clawker-cli",
      grant_types: ["client_credentials"],
      token_endpoint_auth_method: "private_key_jwt",
      token_endpoint_auth_signing_alg: "ES256",
      scope: "admin agent:self:register",
      jwks: { keys: [squatterJwk] },
    });
    assert.equal(squat.status, 201);
    const stolen = await tokenAnswer("clawker-cli", "admin", squatter.privateKey);
    assert.equal(stolen.status, 200);
    assert.equal((await tokenAnswer("clawker-cli", "admin")).status, 401, "the real CLI is locked out");

    const jwks = { keys: [trust.set.signingKey.publicJwk as Record<string, unknown>] };
    const result = await registerClients(clawkerClients(jwks), { adminUrl });
    assert.deepEqual(result.get("clawker-cli"), { outcome: "replaced", differences: ["jwks", "scope"] });
    assert.deepEqual(result.get("clawker-agent"), { outcome: "exists", differences: [] });

    const introspector = new HttpIntrospector({ adminUrl });
    t.after(() => introspector.close());
    assert.equal(
      (await introspector.introspect(stolen.token!)).active,
      false,
      "the squatter's token is gone",
    );
    assert.equal((await tokenAnswer("clawker-cli", "admin", squatter.privateKey)).status, 401);
    assert.equal(
      (await tokenAnswer("clawker-cli", "agent:self:register")).status,
      400,
      "scope is ours again",
    );
    assert.equal((await introspector.introspect(await token("clawker-cli", "admin"))).active, true);
  });

  void test("a CLI token (admin) calls ListAgents; tampered, missing and agent tokens are refused", async () => {
    const cli = await token("clawker-cli", "admin");
    assert.equal((await call(adminClient, "listAgents", cli)).code, status.OK);
    const tampered = cli.slice(0, -2) + (cli.endsWith("A") ? "BB" : "AA");
    assert.deepEqual(await call(adminClient, "listAgents", tampered), {
      code: status.UNAUTHENTICATED,
      details: reasonMessage.token_inactive,
    });
    assert.equal((await call(adminClient, "listAgents")).code, status.UNAUTHENTICATED);
    const agentToken = await token("clawker-agent", "agent:self:register");
    assert.deepEqual(await call(adminClient, "listAgents", agentToken), {
      code: status.PERMISSION_DENIED,
      details: reasonMessage.insufficient_scope,
    });
    assert.equal((await call(adminClient, "getSystemTime")).code, status.OK);
  });

  void test("the agent listener takes the agent's token and refuses the CLI's with the same text", async () => {
    assert.equal(
      (await call(agentClient, "register", await token("clawker-agent", "agent:self:register"))).code,
      status.OK,
    );
    const cli = await call(agentClient, "register", await token("clawker-cli", "admin"));
    assert.deepEqual(cli, { code: status.PERMISSION_DENIED, details: reasonMessage.client_mismatch });
  });

  void test("authserver gone: uncached tokens are UNAUTHENTICATED, public calls still served", async () => {
    const unseen = await token("clawker-cli", "admin");
    await stopAuthServer();
    assert.deepEqual(await call(adminClient, "listAgents", unseen), {
      code: status.UNAUTHENTICATED,
      details: reasonMessage.introspection_failed,
    });
    assert.equal((await call(adminClient, "getSystemTime")).code, status.OK);
    assert.ok(!stdout.includes(unseen), "the token never reached the authserver's logs");
  });
});
