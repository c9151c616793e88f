// The interceptor chain (recovery -> ready gate -> auth) on a real grpc-js server over real mTLS
// (TLS 1.3) on 127.0.0.1:0 with the generated AdminService/AgentService definitions; tokens are
// checked by a real HTTPS RFC 7662 endpoint (the FAKE introspection server in test/fakes).
import assert from "node:assert/strict";
import { createServer as createNetServer } from "node:net";
import { Writable } from "node:stream";
import tls from "node:tls";
import { after, before, describe, test } from "node:test";
import {
  Metadata,
  Server,
  ServerCredentials,
  credentials,
  makeGenericClientConstructor,
  status,
  type ServiceError,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { admin, agent } from "@clawker/proto";
import pino from "pino";
import {
  AuthInterceptor,
  authContextOf,
  type AuthContext,
  CachingIntrospector,
  HttpIntrospector,
  ReadyGate,
  reasonMessage,
  recoveryInterceptor,
  withRecovery,
} from "../src/auth/index.js";
import {
  startFakeIntrospectionServer,
  type FakeIntrospectionServer,
} from "../../../test/fakes/fake-introspection-server.js";
import { mintTestTrust, type TestTrust } from "../../../test/harness/trust.js";

tls.DEFAULT_MIN_VERSION = "TLSv1.3";

const nowS = (): number => Math.floor(Date.now() / 1000);
const UNMAPPED_PATH = "/clawker.admin.v1.AdminService/NotInTheScopeMap";
const unmappedService = {
  notInTheScopeMap: { ...admin.AdminServiceService.listAgents, path: UNMAPPED_PATH },
};

let pki: TestTrust;
let fake: FakeIntrospectionServer;
const logLines: string[] = [];
const log = pino(
  { level: "debug" },
  new Writable({
    write(chunk: Buffer, _enc, cb) {
      logLines.push(chunk.toString("utf8"));
      cb();
    },
  }),
);

/** The admin handlers: happy ones, and three that fail in the three ways recovery must catch. */
function adminImpl(): UntypedServiceImplementation {
  const impl: Record<string, unknown> = {};
  for (const name of Object.keys(admin.AdminServiceService)) {
    impl[name] = (_call: unknown, cb: (e: unknown) => void) =>
      cb({ code: status.UNIMPLEMENTED, details: "not implemented" });
  }
  impl["getSystemTime"] = (_c: unknown, cb: (e: null, r: admin.GetSystemTimeResult) => void) =>
    cb(null, { unixNanos: BigInt(Date.now()) * 1_000_000n });
  impl["listAgents"] = (_c: unknown, cb: (e: null, r: admin.ListAgentsResult) => void) =>
    cb(null, { agents: [] });
  impl["watchSos"] = (call: { write(m: admin.SOS): void; end(): void }) => {
    call.write({ message: "bpffs not delegated", kind: admin.SOSKind.SOS_KIND_BPFFS_DELEGATION });
    call.end();
  };
  impl["firewallStatus"] = () => {
    throw new Error("sync secret /etc/shadow");
  };
  impl["firewallListRules"] = async () => {
    await Promise.resolve();
    throw new Error("async secret /var/lib/x");
  };
  impl["firewallReload"] = (_c: unknown, cb: (e: Error) => void) =>
    cb(new Error("callback secret dsn=postgres://u:p@h"));
  return impl as UntypedServiceImplementation;
}

interface Listener {
  readonly port: number;
  readonly gate: ReadyGate;
  close(): Promise<void>;
}

async function startListener(options: {
  introspectUrl: string;
  timeoutMs?: number;
  ready?: boolean;
  kind?: "admin" | "agent";
  overrides?: Record<string, unknown>;
  /** false: register the handlers without withRecovery, leaving only the interceptor. */
  wrap?: boolean;
}): Promise<Listener> {
  const http = new HttpIntrospector({
    adminUrl: options.introspectUrl,
    ca: pki.set.ca.certPem,
    timeoutMs: options.timeoutMs ?? 1000,
  });
  const introspector = new CachingIntrospector(http);
  const gate = new ReadyGate();
  if (options.ready !== false) gate.setReady();
  const kind = options.kind ?? "admin";
  // Pinned as the daemon pins them: admin to the CLI's client, agent to the agents' client.
  const auth = new AuthInterceptor({
    introspector,
    log,
    requiredClientId: kind === "agent" ? "clawker-agent" : "clawker-cli",
  });
  const server = new Server({
    interceptors:
      kind === "admin"
        ? [recoveryInterceptor(log), gate.interceptor, auth.interceptor]
        : [recoveryInterceptor(log), auth.interceptor],
  });
  if (kind === "admin") {
    const impl = { ...adminImpl(), ...options.overrides } as UntypedServiceImplementation;
    server.addService(
      admin.AdminServiceService,
      options.wrap === false ? impl : withRecovery(admin.AdminServiceService, impl, log),
    );
    server.addService(unmappedService, {
      notInTheScopeMap: (_c: unknown, cb: (e: null, r: admin.ListAgentsResult) => void) =>
        cb(null, { agents: [] }),
    });
  } else {
    server.addService(agent.AgentServiceService, {
      register: (_c: unknown, cb: (e: null, r: agent.Welcome) => void) => cb(null, {}),
    });
  }
  const creds = ServerCredentials.createSsl(
    Buffer.from(pki.set.ca.certPem),
    [
      {
        cert_chain: Buffer.from(pki.set.controlPlaneServer.certPem),
        private_key: Buffer.from(pki.set.controlPlaneServer.keyPem),
      },
    ],
    true,
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", creds, (err, p) => (err ? reject(err) : resolve(p))),
  );
  return {
    port,
    gate,
    close: async () => {
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      server.forceShutdown();
      await http.close();
    },
  };
}

type AnyClient = Record<string, (...args: unknown[]) => unknown> & { close(): void };

function clientFor(port: number, kind: "admin" | "agent" | "unmapped" = "admin"): AnyClient {
  const ctor =
    kind === "admin"
      ? admin.AdminServiceClient
      : kind === "agent"
        ? agent.AgentServiceClient
        : makeGenericClientConstructor(unmappedService, "Unmapped");
  const creds = credentials.createSsl(
    Buffer.from(pki.set.ca.certPem),
    Buffer.from(pki.set.cli.keyPem),
    Buffer.from(pki.set.cli.certPem),
  );
  return new ctor(`127.0.0.1:${port}`, creds) as unknown as AnyClient;
}

function md(...authorization: string[]): Metadata {
  const m = new Metadata();
  for (const a of authorization) m.add("authorization", a);
  return m;
}

interface Outcome {
  readonly code: status;
  readonly details: string;
  readonly value?: unknown;
}

function unary(client: AnyClient, method: string, metadata: Metadata, deadlineMs = 10_000): Promise<Outcome> {
  return new Promise((resolve) => {
    client[method]!(
      {},
      metadata,
      { deadline: Date.now() + deadlineMs },
      (err: ServiceError | null, value: unknown) =>
        resolve(err ? { code: err.code, details: err.details } : { code: status.OK, details: "", value }),
    );
  });
}

function stream(
  client: AnyClient,
  method: string,
  metadata: Metadata,
): Promise<Outcome & { messages: unknown[] }> {
  return new Promise((resolve) => {
    const messages: unknown[] = [];
    const call = client[method]!({}, metadata, { deadline: Date.now() + 10_000 }) as NodeJS.EventEmitter;
    call.on("data", (m: unknown) => messages.push(m));
    call.on("error", (err: ServiceError) => resolve({ code: err.code, details: err.details, messages }));
    call.on("end", () => resolve({ code: status.OK, details: "", messages }));
  });
}

before(async () => {
  pki = await mintTestTrust();
  fake = await startFakeIntrospectionServer({
    cert: pki.set.controlPlaneServer.certPem,
    key: pki.set.controlPlaneServer.keyPem,
  });
  const exp = nowS() + 3600;
  fake.tokens.set("admin-token", {
    active: true,
    scope: "admin",
    client_id: "clawker-cli",
    sub: "clawker-cli",
    exp,
    token_use: "access_token",
  });
  fake.tokens.set("agent-token", {
    active: true,
    scope: "agent:self:register",
    client_id: "clawker-agent",
    sub: "clawker-agent",
    exp,
    token_use: "access_token",
  });
  fake.tokens.set("agent-scope-wrong-client", {
    active: true,
    scope: "agent:self:register",
    client_id: "clawker-cli",
    exp,
    token_use: "access_token",
  });
  fake.tokens.set("admin-scope-other-client", {
    active: true,
    scope: "admin",
    client_id: "clawker-agent",
    exp,
    token_use: "access_token",
  });
  fake.tokens.set("expired-token", {
    active: true,
    scope: "admin",
    client_id: "clawker-cli",
    exp: nowS() - 5,
    token_use: "access_token",
  });
  fake.tokens.set("inactive-token", { active: false });
  fake.tokens.set("refresh-token", {
    active: true,
    scope: "admin",
    client_id: "clawker-cli",
    exp,
    token_use: "refresh_token",
  });
  fake.tokens.set("multi-scope", {
    active: true,
    scope: "openid admin offline",
    client_id: "clawker-cli",
    exp,
    token_use: "access_token",
  });
  fake.tokens.set("prefix-scope", {
    active: true,
    scope: "administrator admin:read",
    client_id: "clawker-cli",
    exp,
    token_use: "access_token",
  });
});

after(async () => {
  await fake.close();
  await pki.close();
});

const UNAUTH_TEXTS = new Set<string>([
  reasonMessage.missing_token,
  reasonMessage.token_inactive,
  reasonMessage.introspection_failed,
  reasonMessage.unmapped_method,
]);

void describe("AuthInterceptor on the admin listener", () => {
  let l: Listener;
  let c: AnyClient;
  before(async () => {
    l = await startListener({ introspectUrl: fake.url });
    c = clientFor(l.port);
  });
  after(async () => {
    c.close();
    await l.close();
  });

  void test("an admin token calls ListAgents", async () => {
    const r = await unary(c, "listAgents", md("Bearer admin-token"));
    assert.equal(r.code, status.OK);
    assert.deepEqual(r.value, { agents: [] });
  });

  void test("scope matching is exact among space-separated scopes", async () => {
    assert.equal((await unary(c, "listAgents", md("Bearer multi-scope"))).code, status.OK);
    const r = await unary(c, "listAgents", md("Bearer prefix-scope"));
    assert.deepEqual([r.code, r.details], [status.PERMISSION_DENIED, reasonMessage.insufficient_scope]);
  });

  const refusals: [string, Metadata, status, string][] = [
    ["no token", md(), status.UNAUTHENTICATED, reasonMessage.missing_token],
    [
      "lower-case scheme `bearer x`",
      md("bearer admin-token"),
      status.UNAUTHENTICATED,
      reasonMessage.malformed_token,
    ],
    ["`Bearer` alone", md("Bearer"), status.UNAUTHENTICATED, reasonMessage.malformed_token],
    ["`Bearer ` with nothing after", md("Bearer "), status.UNAUTHENTICATED, reasonMessage.malformed_token],
    ["two spaces", md("Bearer  admin-token"), status.UNAUTHENTICATED, reasonMessage.malformed_token],
    // Node's http2 refuses to send two `authorization` headers; a joined value is what arrives.
    [
      "joined values, first is bad",
      md("Basic abc, Bearer admin-token"),
      status.UNAUTHENTICATED,
      reasonMessage.malformed_token,
    ],
    ["expired token", md("Bearer expired-token"), status.UNAUTHENTICATED, reasonMessage.token_inactive],
    ["inactive token", md("Bearer inactive-token"), status.UNAUTHENTICATED, reasonMessage.token_inactive],
    ["tampered token", md("Bearer admin-tokeN"), status.UNAUTHENTICATED, reasonMessage.token_inactive],
    ["refresh token", md("Bearer refresh-token"), status.UNAUTHENTICATED, reasonMessage.token_inactive],
    [
      "agent-scope token on admin",
      md("Bearer agent-token"),
      status.PERMISSION_DENIED,
      reasonMessage.insufficient_scope,
    ],
    // The admin listener pins clawker-cli as the agent listener pins clawker-agent (issue 10 §1).
    [
      "admin scope from another client id",
      md("Bearer admin-scope-other-client"),
      status.PERMISSION_DENIED,
      reasonMessage.client_mismatch,
    ],
  ];
  for (const [name, metadata, code, details] of refusals) {
    void test(`refused: ${name}`, async () => {
      const r = await unary(c, "listAgents", metadata);
      assert.deepEqual([status[r.code], r.details], [status[code], details]);
    });
  }

  void test("every UNAUTHENTICATED text is one of the fixed class texts", () => {
    for (const [, , code, details] of refusals)
      if (code === status.UNAUTHENTICATED) assert.ok(UNAUTH_TEXTS.has(details));
  });

  void test("two authorization values: only the first counts (checked on the Metadata itself)", async (t) => {
    const http = new HttpIntrospector({ adminUrl: fake.url, ca: pki.set.ca.certPem });
    t.after(() => http.close());
    const auth = new AuthInterceptor({ introspector: new CachingIntrospector(http), log });
    const path = admin.AdminServiceService.listAgents.path;
    await assert.rejects(auth.authorize(path, md("Basic abc", "Bearer admin-token")), {
      reason: "malformed_token",
    });
    assert.equal((await auth.authorize(path, md("Bearer admin-token", "Basic abc"))).clientId, "clawker-cli");
  });

  void test("a method mapped to an empty scope is refused like an unmapped one", async (t) => {
    const http = new HttpIntrospector({ adminUrl: fake.url, ca: pki.set.ca.certPem });
    t.after(() => http.close());
    const auth = new AuthInterceptor({ introspector: http, log, scopeOf: () => "" });
    await assert.rejects(
      auth.authorize(admin.AdminServiceService.listAgents.path, md("Bearer admin-token")),
      {
        reason: "unmapped_method",
      },
    );
  });

  void test("a method missing from the scope map is refused even with a valid token", async () => {
    const u = clientFor(l.port, "unmapped");
    try {
      const r = await unary(u, "notInTheScopeMap", md("Bearer admin-token"));
      assert.deepEqual([r.code, r.details], [status.UNAUTHENTICATED, reasonMessage.unmapped_method]);
    } finally {
      u.close();
    }
  });

  void test("GetSystemTime is public: no token needed", async () => {
    const r = await unary(c, "getSystemTime", md());
    assert.equal(r.code, status.OK);
    assert.ok(typeof (r.value as admin.GetSystemTimeResult).unixNanos === "bigint");
  });

  void test("WatchSOS (server streaming) is covered: refused without token, wrong scope; streams with one", async () => {
    const none = await stream(c, "watchSos", md());
    assert.deepEqual(
      [none.code, none.details, none.messages.length],
      [status.UNAUTHENTICATED, reasonMessage.missing_token, 0],
    );
    const wrong = await stream(c, "watchSos", md("Bearer agent-token"));
    assert.deepEqual([wrong.code, wrong.messages.length], [status.PERMISSION_DENIED, 0]);
    const ok = await stream(c, "watchSos", md("Bearer admin-token"));
    assert.equal(ok.code, status.OK);
    assert.equal(ok.messages.length, 1);
  });

  void test("recovery: sync throw, async rejection and code-less callback error are INTERNAL with no detail", async () => {
    for (const method of ["firewallStatus", "firewallListRules", "firewallReload"]) {
      const r = await unary(c, method, md("Bearer admin-token"));
      assert.deepEqual([method, status[r.code], r.details], [method, "INTERNAL", reasonMessage.internal]);
    }
    const logs = logLines.join("");
    for (const secret of ["sync secret", "async secret", "callback secret"])
      assert.ok(logs.includes(secret), `${secret} logged`);
  });

  void test("intentional gRPC errors pass recovery unchanged", async () => {
    const r = await unary(c, "firewallInit", md("Bearer admin-token"));
    assert.deepEqual([r.code, r.details], [status.UNIMPLEMENTED, "not implemented"]);
  });

  void test("no token ever reaches the logs", () => {
    const logs = logLines.join("");
    assert.ok(logs.includes("auth_refused"), "refusals are logged");
    for (const t of ["admin-token", "agent-token", "expired-token", "multi-scope"])
      assert.ok(!logs.includes(t), `${t} not logged`);
  });
});

void describe("handlers learn the caller's decision through authContextOf", () => {
  let l: Listener;
  let c: AnyClient;
  const seen: Array<AuthContext | undefined> = [];
  before(async () => {
    const record =
      (answer: unknown) =>
      (call: { metadata: Metadata }, cb: (e: null, r: unknown) => void): void => {
        seen.push(authContextOf(call.metadata));
        cb(null, answer);
      };
    l = await startListener({
      introspectUrl: fake.url,
      overrides: {
        listAgents: record({ agents: [] }),
        getSystemTime: record({ unixNanos: 1n }),
      },
    });
    c = clientFor(l.port);
  });
  after(async () => {
    c.close();
    await l.close();
  });

  void test("the token's client id and scopes, the public marker, nothing from headers a caller sends", async () => {
    seen.length = 0;
    const forged = md("Bearer multi-scope");
    forged.set("clawker-client-id", "somebody-else");
    assert.equal((await unary(c, "listAgents", forged)).code, status.OK);
    assert.equal((await unary(c, "getSystemTime", new Metadata())).code, status.OK);
    assert.deepEqual(seen, [
      { isPublic: false, clientId: "clawker-cli", sub: "", scopes: ["openid", "admin", "offline"] },
      { isPublic: true, clientId: "", sub: "", scopes: [] },
    ]);
    // Metadata no interceptor passed has no decision.
    assert.equal(authContextOf(new Metadata()), undefined);
  });
});

void describe("AuthInterceptor on the agent listener (client pin)", () => {
  let l: Listener;
  let c: AnyClient;
  before(async () => {
    l = await startListener({ introspectUrl: fake.url, kind: "agent" });
    c = clientFor(l.port, "agent");
  });
  after(async () => {
    c.close();
    await l.close();
  });

  void test("clawker-agent with agent:self:register calls Register", async () => {
    assert.equal((await unary(c, "register", md("Bearer agent-token"))).code, status.OK);
  });

  void test("the right scope from another client id is PERMISSION_DENIED with the missing-scope text", async () => {
    const pinned = await unary(c, "register", md("Bearer agent-scope-wrong-client"));
    const scope = await unary(c, "register", md("Bearer admin-token"));
    assert.equal(pinned.code, status.PERMISSION_DENIED);
    assert.equal(scope.code, status.PERMISSION_DENIED);
    assert.equal(pinned.details, scope.details);
  });
});

void describe("introspections per connection", () => {
  void test("a connection sending unknown tokens gets 20, then is refused without asking the endpoint", async (t) => {
    const l = await startListener({ introspectUrl: fake.url });
    const c = clientFor(l.port);
    // Its own connection (grpc-js would otherwise share one subchannel between the two clients).
    const other = new admin.AdminServiceClient(
      `127.0.0.1:${l.port}`,
      credentials.createSsl(
        Buffer.from(pki.set.ca.certPem),
        Buffer.from(pki.set.cli.keyPem),
        Buffer.from(pki.set.cli.certPem),
      ),
      { "grpc.use_local_subchannel_pool": 1 },
    ) as unknown as AnyClient;
    t.after(async () => {
      c.close();
      other.close();
      await l.close();
    });
    const before = fake.requests();
    const started = Date.now();
    const answers = [];
    for (let i = 0; i < 60; i++) answers.push(await unary(c, "listAgents", md(`Bearer junk-${i}`)));
    const asked = fake.requests() - before;
    // The burst, plus what 10 per second refilled meanwhile.
    const allowed = 20 + Math.ceil(((Date.now() - started) / 1000) * 10);
    assert.ok(asked >= 20 && asked <= allowed, `${asked} introspections, at most ${allowed} allowed`);
    assert.ok(asked < 60, "the rest never reached the endpoint");
    assert.ok(answers.every((a) => a.code === status.UNAUTHENTICATED));
    assert.deepEqual(
      [...new Set(answers.map((a) => a.details))].sort(),
      [reasonMessage.introspection_failed, reasonMessage.token_inactive].sort(),
      "the throttled ones say the token could not be verified",
    );
    // A valid token on another connection is unaffected, and a cached one never spends anything.
    assert.equal((await unary(other, "listAgents", md("Bearer admin-token"))).code, status.OK);
  });

  void test("64 calls at once on one fresh token are one introspection, and none is throttled", async (t) => {
    const l = await startListener({ introspectUrl: fake.url });
    const c = clientFor(l.port);
    fake.tokens.set("fresh-burst-token", {
      active: true,
      scope: "admin",
      client_id: "clawker-cli",
      sub: "clawker-cli",
      exp: nowS() + 3600,
      token_use: "access_token",
    });
    fake.delayMs = 200; // every call arrives while the one request is under way
    t.after(async () => {
      fake.delayMs = 0;
      c.close();
      await l.close();
    });
    const before = fake.requests();
    const answers = await Promise.all(
      Array.from({ length: 64 }, () => unary(c, "listAgents", md("Bearer fresh-burst-token"))),
    );
    assert.deepEqual(
      [...new Set(answers.map((a) => a.code))],
      [status.OK],
      "more calls than the burst of 20, all on one connection",
    );
    assert.equal(fake.requests() - before, 1);
  });
});

void describe("introspection endpoint down or slow", () => {
  void test("connection refused: UNAUTHENTICATED, and the server keeps serving", async (t) => {
    const probe = createNetServer();
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
    const deadPort = (probe.address() as { port: number }).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const l = await startListener({ introspectUrl: `https://127.0.0.1:${deadPort}` });
    const c = clientFor(l.port);
    t.after(async () => {
      c.close();
      await l.close();
    });
    for (let i = 0; i < 3; i++) {
      const r = await unary(c, "listAgents", md("Bearer admin-token"));
      assert.deepEqual([r.code, r.details], [status.UNAUTHENTICATED, reasonMessage.introspection_failed]);
    }
    assert.equal((await unary(c, "getSystemTime", md())).code, status.OK);
  });

  void test("slow endpoint: UNAUTHENTICATED at the introspection timeout, server keeps serving", async (t) => {
    const slow = await startFakeIntrospectionServer({
      cert: pki.set.controlPlaneServer.certPem,
      key: pki.set.controlPlaneServer.keyPem,
    });
    slow.delayMs = 5000;
    slow.tokens.set("admin-token", fake.tokens.get("admin-token")!);
    const l = await startListener({ introspectUrl: slow.url, timeoutMs: 300 });
    const c = clientFor(l.port);
    t.after(async () => {
      c.close();
      await l.close();
      await slow.close();
    });
    const [a, b] = await Promise.all([
      unary(c, "listAgents", md("Bearer admin-token")),
      unary(c, "getSystemTime", md()),
    ]);
    assert.deepEqual([a.code, a.details], [status.UNAUTHENTICATED, reasonMessage.introspection_failed]);
    assert.equal(b.code, status.OK);
    // Once the endpoint answers again, the same token works: the failure was not cached.
    slow.delayMs = 0;
    assert.equal((await unary(c, "listAgents", md("Bearer admin-token"))).code, status.OK);
  });
});

void describe("recovery on a streaming handler", () => {
  void test("a throwing or rejecting WatchSOS ends INTERNAL with the fixed text; messages sent before stay", async (t) => {
    for (const [name, watchSos] of [
      [
        "sync throw",
        () => {
          throw new Error("stream sync secret");
        },
      ],
      [
        "async rejection after one message",
        async (call: { write(m: admin.SOS): void }) => {
          call.write({ message: "first", kind: admin.SOSKind.SOS_KIND_UNSPECIFIED });
          await Promise.resolve();
          throw new Error("stream async secret");
        },
      ],
    ] as const) {
      const l = await startListener({ introspectUrl: fake.url, overrides: { watchSos } });
      const c = clientFor(l.port);
      t.after(async () => {
        c.close();
        await l.close();
      });
      const r = await stream(c, "watchSos", md("Bearer admin-token"));
      assert.deepEqual([name, status[r.code], r.details], [name, "INTERNAL", reasonMessage.internal]);
      if (name !== "sync throw") assert.equal(r.messages.length, 1);
    }
    const logs = logLines.join("");
    assert.ok(logs.includes("stream sync secret") && logs.includes("stream async secret"));
  });
});

void describe("recovery interceptor without the handler wrapper", () => {
  void test("grpc-js's UNKNOWN for a thrown or code-less error becomes INTERNAL with the fixed text", async (t) => {
    const l = await startListener({ introspectUrl: fake.url, wrap: false });
    const c = clientFor(l.port);
    t.after(async () => {
      c.close();
      await l.close();
    });
    for (const method of ["firewallStatus", "firewallReload"]) {
      const r = await unary(c, method, md("Bearer admin-token"));
      assert.deepEqual([method, status[r.code], r.details], [method, "INTERNAL", reasonMessage.internal]);
    }
  });
});

void describe("ready gate", () => {
  void test("FAILED_PRECONDITION until ready; GetSystemTime and WatchSOS exempt; gate before auth", async (t) => {
    const l = await startListener({ introspectUrl: fake.url, ready: false });
    const c = clientFor(l.port);
    t.after(async () => {
      c.close();
      await l.close();
    });
    const withToken = await unary(c, "listAgents", md("Bearer admin-token"));
    assert.deepEqual(
      [withToken.code, withToken.details],
      [status.FAILED_PRECONDITION, "control plane is starting up"],
    );
    const without = await unary(c, "listAgents", md());
    assert.equal(without.code, status.FAILED_PRECONDITION);
    assert.equal((await unary(c, "getSystemTime", md())).code, status.OK);
    const sos = await stream(c, "watchSos", md("Bearer admin-token"));
    assert.deepEqual([sos.code, sos.messages.length], [status.OK, 1]);
    // Exempt from the gate, not from auth.
    assert.equal((await stream(c, "watchSos", md())).code, status.UNAUTHENTICATED);
    l.gate.setReady();
    assert.equal((await unary(c, "listAgents", md("Bearer admin-token"))).code, status.OK);
  });
});
