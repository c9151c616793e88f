// HttpIntrospector and CachingIntrospector against a real HTTPS RFC 7662 endpoint (the FAKE
// introspection server in test/fakes): parsing, typed failures, and the cache's rules.
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { createServer } from "node:net";
import { after, before, describe, test } from "node:test";
import { Metadata } from "@grpc/grpc-js";
import { admin, agent } from "@clawker/proto";
import pino from "pino";
import {
  AuthError,
  AuthInterceptor,
  CachingIntrospector,
  HttpIntrospector,
  IntrospectionError,
  tokenKey,
} from "../src/auth/index.js";
import {
  startFakeIntrospectionServer,
  type FakeIntrospectionServer,
} from "../../../test/fakes/fake-introspection-server.js";
import { mintTestTrust, type TestTrust } from "../../../test/harness/trust.js";
import { waitFor } from "../../../test/harness/wait-for.js";

const nowS = (): number => Math.floor(Date.now() / 1000);
const ADMIN_PATH = admin.AdminServiceService.listAgents.path;
const REGISTER_PATH = agent.AgentServiceService.register.path;

let pki: TestTrust;
let fake: FakeIntrospectionServer;
const closers: (() => Promise<void>)[] = [];

before(async () => {
  pki = await mintTestTrust();
  fake = await startFakeIntrospectionServer({
    cert: pki.set.controlPlaneServer.certPem,
    key: pki.set.controlPlaneServer.keyPem,
  });
  fake.tokens.set("good", {
    active: true,
    scope: "admin",
    client_id: "clawker-cli",
    sub: "clawker-cli",
    exp: nowS() + 3600,
    token_use: "access_token",
  });
});
after(async () => {
  for (const c of closers) await c();
  await fake.close();
  await pki.close();
});

function introspector(
  overrides: { adminUrl?: string; timeoutMs?: number; ca?: string } = {},
): HttpIntrospector {
  const i = new HttpIntrospector({
    adminUrl: fake.url,
    ca: pki.set.ca.certPem,
    timeoutMs: 1000,
    ...overrides,
  });
  closers.push(() => i.close());
  return i;
}

async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

void describe("HttpIntrospector", () => {
  void test("parses an active RFC 7662 answer", async () => {
    const r = await introspector().introspect("good");
    assert.equal(r.active, true);
    assert.equal(r.scope, "admin");
    assert.equal(r.clientId, "clawker-cli");
    assert.equal(r.tokenUse, "access_token");
    assert.ok(r.exp !== undefined && r.exp > nowS());
  });

  void test("an unknown token is inactive, and a forwarded scope the token lacks makes it inactive", async () => {
    const i = introspector();
    assert.equal((await i.introspect("nope")).active, false);
    assert.equal((await i.introspect("good", { scope: "agent:self:register" })).active, false);
    assert.equal((await i.introspect("good", { scope: "admin" })).active, true);
  });

  void test("connection refused is `unavailable`", async () => {
    const i = introspector({ adminUrl: `https://127.0.0.1:${await closedPort()}` });
    await assert.rejects(
      i.introspect("good"),
      (e: unknown) => e instanceof IntrospectionError && e.reason === "unavailable",
    );
  });

  void test("a slow endpoint is `timeout` within the hard timeout", async (t) => {
    fake.delayMs = 2000;
    t.after(() => (fake.delayMs = 0));
    const i = introspector({ timeoutMs: 200 });
    await assert.rejects(
      i.introspect("good"),
      (e: unknown) => e instanceof IntrospectionError && e.reason === "timeout",
    );
  });

  void test("a non-200 answer is `http_status` with the status", async (t) => {
    fake.failWith = 503;
    t.after(() => (fake.failWith = undefined));
    await assert.rejects(
      introspector().introspect("good"),
      (e: unknown) => e instanceof IntrospectionError && e.reason === "http_status" && e.httpStatus === 503,
    );
  });

  void test("a server certificate from another CA is refused (`unavailable`)", async () => {
    const other = await mintTestTrust();
    try {
      const i = introspector({ ca: other.set.ca.certPem });
      await assert.rejects(
        i.introspect("good"),
        (e: unknown) => e instanceof IntrospectionError && e.reason === "unavailable",
      );
    } finally {
      await other.close();
    }
  });
});

void describe("HttpIntrospector lifecycle", () => {
  void test("close() is idempotent and leaves no socket behind", async () => {
    const sockets = (): number =>
      process.getActiveResourcesInfo().filter((r) => r === "TCPSocketWrap" || r === "TLSWrap").length;
    const baseline = sockets();
    const i = new HttpIntrospector({ adminUrl: fake.url, ca: pki.set.ca.certPem });
    await Promise.all([i.introspect("good"), i.introspect("good"), i.introspect("good")]);
    assert.ok(sockets() > baseline, "keep-alive connections are open while in use");
    await i.close();
    await i.close();
    await waitFor(() => sockets() <= baseline, { what: "sockets back to the baseline" });
  });
});

void describe("CachingIntrospector", () => {
  void test("the key is the token's SHA-256, not the token", () => {
    const k = tokenKey("good");
    assert.notEqual(k, "good");
    assert.equal(k, createHash("sha256").update("good").digest("base64url"));
  });

  void test("miss then hit: one request for two lookups", async () => {
    const c = new CachingIntrospector(introspector());
    const before = fake.requests();
    assert.equal((await c.introspect("good")).active, true);
    assert.equal((await c.introspect("good")).active, true);
    assert.equal(fake.requests() - before, 1);
    assert.deepEqual({ hits: c.stats.hits, misses: c.stats.misses }, { hits: 1, misses: 1 });
  });

  void test("singleflight: 25 concurrent lookups of one token send one request", async (t) => {
    fake.delayMs = 100;
    t.after(() => (fake.delayMs = 0));
    const c = new CachingIntrospector(introspector());
    const before = fake.requests();
    const results = await Promise.all(Array.from({ length: 25 }, () => c.introspect("good")));
    assert.ok(results.every((r) => r.active));
    assert.equal(fake.requests() - before, 1);
  });

  void test("TTL is capped by the token's exp, and by maxTtlMs", async () => {
    const exp = nowS() + 3600;
    fake.tokens.set("short", { active: true, scope: "admin", client_id: "clawker-cli", exp });
    let clock = (exp - 2) * 1000;
    const c = new CachingIntrospector(introspector(), { maxTtlMs: 60_000, now: () => clock });
    const before = fake.requests();
    await c.introspect("short");
    clock = exp * 1000 - 1; // 1 ms before exp: still cached although maxTtl is a minute
    await c.introspect("short");
    assert.equal(fake.requests() - before, 1);
    clock = exp * 1000; // at exp: never served from cache
    await c.introspect("short");
    assert.equal(fake.requests() - before, 2);

    let clock2 = Date.now();
    const c2 = new CachingIntrospector(introspector(), { maxTtlMs: 5000, now: () => clock2 });
    const before2 = fake.requests();
    await c2.introspect("good");
    clock2 += 4999;
    await c2.introspect("good");
    assert.equal(fake.requests() - before2, 1);
    clock2 += 2;
    await c2.introspect("good");
    assert.equal(fake.requests() - before2, 2);
  });

  void test("failures and inactive answers are never cached", async (t) => {
    const c = new CachingIntrospector(introspector());
    const before = fake.requests();
    fake.failWith = 500;
    t.after(() => (fake.failWith = undefined));
    await assert.rejects(c.introspect("good"), IntrospectionError);
    fake.failWith = undefined;
    assert.equal((await c.introspect("good")).active, true);
    assert.equal((await c.introspect("unknown-token")).active, false);
    assert.equal((await c.introspect("unknown-token")).active, false);
    assert.equal(fake.requests() - before, 4);
    assert.equal(c.size, 1);
  });

  void test("bounded: the least recently used entry is evicted", async () => {
    for (const n of ["a", "b", "c"])
      fake.tokens.set(`lru-${n}`, { active: true, scope: "admin", exp: nowS() + 3600 });
    const c = new CachingIntrospector(introspector(), { maxEntries: 2 });
    await c.introspect("lru-a");
    await c.introspect("lru-b");
    await c.introspect("lru-a"); // a is now the most recent
    await c.introspect("lru-c"); // evicts b
    assert.equal(c.size, 2);
    assert.equal(c.stats.evictions, 1);
    const before = fake.requests();
    await c.introspect("lru-a");
    assert.equal(fake.requests() - before, 0);
    await c.introspect("lru-b");
    assert.equal(fake.requests() - before, 1);
  });

  void test("bounded: repeated hits on the newest entry keep the recency order exact", async () => {
    for (const n of ["a", "b", "c", "d"])
      fake.tokens.set(`lru2-${n}`, { active: true, scope: "admin", exp: nowS() + 3600 });
    const c = new CachingIntrospector(introspector(), { maxEntries: 2 });
    await c.introspect("lru2-a");
    await c.introspect("lru2-b");
    for (let i = 0; i < 5; i++) assert.notEqual(c.peek("lru2-b"), undefined); // b stays the newest
    await c.introspect("lru2-c"); // evicts a, the oldest
    const before = fake.requests();
    assert.equal(c.peek("lru2-a"), undefined, "a was evicted");
    assert.notEqual(c.peek("lru2-b"), undefined, "b was kept"); // b is the newest again
    await c.introspect("lru2-d"); // evicts c
    assert.equal(c.peek("lru2-c"), undefined, "c was evicted after b's hit");
    assert.notEqual(c.peek("lru2-b"), undefined);
    c.clear();
    await c.introspect("lru2-b");
    assert.equal(fake.requests() - before, 2, "d and b after clear() were asked for");
  });

  void test("scope is re-checked on a hit: a cached admin token is still refused for Register", async () => {
    const c = new CachingIntrospector(introspector());
    const auth = new AuthInterceptor({ introspector: c, log: pino({ level: "silent" }) });
    const md = (): Metadata => {
      const m = new Metadata();
      m.set("authorization", "Bearer good");
      return m;
    };
    const before = fake.requests();
    assert.equal((await auth.authorize(ADMIN_PATH, md())).clientId, "clawker-cli");
    await assert.rejects(
      auth.authorize(REGISTER_PATH, md()),
      (e: unknown) => e instanceof AuthError && e.reason === "insufficient_scope",
    );
    assert.equal(fake.requests() - before, 1);
    assert.equal(c.stats.hits, 1);
  });

  void test("exp is re-checked on a hit", async () => {
    const exp = nowS() + 3600;
    fake.tokens.set("exp-hit", {
      active: true,
      scope: "admin",
      client_id: "clawker-cli",
      exp,
      token_use: "access_token",
    });
    let clock = (exp - 1) * 1000;
    const c = new CachingIntrospector(introspector(), { maxTtlMs: 60_000, now: () => clock });
    const auth = new AuthInterceptor({ introspector: c, log: pino({ level: "silent" }), now: () => clock });
    const md = new Metadata();
    md.set("authorization", "Bearer exp-hit");
    await auth.authorize(ADMIN_PATH, md);
    clock = exp * 1000 + 1;
    // The cache drops the entry (exp passed) and asks again; the interceptor sees exp in the past.
    await assert.rejects(
      auth.authorize(ADMIN_PATH, md),
      (e: unknown) => e instanceof AuthError && e.reason === "token_inactive",
    );
  });
});
