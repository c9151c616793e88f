// The DNS gate against a real upstream DNS server on loopback, over real UDP and TCP sockets.
// Loopback source addresses stand for agents (127.0.0.2 web.dev, 127.0.0.3 web.ops, 127.0.0.4
// api.dev, 127.0.0.5 a rate-limited agent; 127.0.0.9 is no agent). Addresses are recorded by the
// RecordingDnsCacheWriter here; test/firewall-dns-ebpf.test.ts uses the real eBPF manager.
import assert from "node:assert/strict";
import { createSocket } from "node:dgram";
import { connect } from "node:net";
import { describe, test, type TestContext } from "node:test";
import { Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import pino from "pino";
import {
  DnsGate,
  InvalidPolicyError,
  UNKNOWN_SOURCE_TEXT,
  type DnsDecision,
  type DnsGateOptions,
  type DnsPolicy,
  type DnsRule,
} from "../src/firewall/dns/index.js";
import { waitFor } from "../../../test/harness/wait-for.js";
import {
  exchangeRaw,
  query,
  queryMessage,
  RecordingDnsCacheWriter,
  type Server,
} from "./fixtures/dns-client.js";
import { TestUpstream, type ZoneEntry } from "./fixtures/dns-upstream.js";

const ZONE: Record<string, ZoneEntry> = {
  "api.example.test": { addresses: ["10.1.0.1", "10.1.0.2"], ttl: 120 },
  "a.b.example.test": { addresses: ["10.1.0.3"], ttl: 120 },
  "example.test": { addresses: ["10.1.0.8"], ttl: 120 },
  "example.test.evil.test": { addresses: ["10.6.6.6"] },
  "db.internal.example.test": { addresses: ["10.1.0.6"] },
  "ok.internal.example.test": { addresses: ["10.1.0.7"], ttl: 120 },
  "short.example.test": { addresses: ["10.1.0.4"], ttl: 1 },
  "long.example.test": { addresses: ["10.1.0.5"], ttl: 999_999 },
  "big.example.test": {
    addresses: ["10.1.1.1", "10.1.1.2", "10.1.1.3", "10.1.1.4", "10.1.1.5"],
    truncateUdp: true,
    ttl: 120,
  },
  "slow.example.test": { silent: true },
  "cdn.example.test": {
    cname: "edge.cdn-provider.test",
    ttl: 50,
    unrelated: [{ type: "A", name: "evil.test", ttl: 300, data: "10.6.6.6" }],
  },
  "edge.cdn-provider.test": { addresses: ["10.2.0.1"], ttl: 80 },
  "lo.example.test": { addresses: ["127.0.0.1", "10.1.0.9", "0.0.0.0"], ttl: 120 },
  "empty.example.test": { addresses: [], ttl: 120 },
  "web-only.test": { addresses: ["10.3.0.1"] },
  "api-only.test": { addresses: ["10.3.0.2"] },
  "tie.test": { addresses: ["10.3.0.3"] },
  "dev-only.test": { addresses: ["10.3.0.4"] },
  "exact.test": { addresses: ["10.3.0.5"] },
  "sub.exact.test": { addresses: ["10.3.0.6"] },
};

const g = { kind: "global", name: "" } as const;
const RULES: DnsRule[] = [
  { scope: g, pattern: "*.example.test", action: "allow", identity: 10 },
  { scope: g, pattern: "*.internal.example.test", action: "deny" },
  { scope: g, pattern: "ok.internal.example.test", action: "allow", identity: 11 },
  { scope: { kind: "project", name: "web" }, pattern: "web-only.test", action: "allow", identity: 20 },
  { scope: { kind: "project", name: "api" }, pattern: "api-only.test", action: "allow", identity: 21 },
  { scope: g, pattern: "tie.test", action: "allow", identity: 30 },
  { scope: { kind: "project", name: "web" }, pattern: "tie.test", action: "deny" },
  { scope: { kind: "agent", name: "web.dev" }, pattern: "dev-only.test", action: "allow", identity: 40 },
  { scope: g, pattern: "exact.test", action: "allow", identity: 50 },
];
const CLIENTS = [
  { address: "127.0.0.2", project: "web", agent: "dev" },
  { address: "127.0.0.3", project: "web", agent: "ops" },
  { address: "127.0.0.4", project: "api", agent: "dev" },
  { address: "127.0.0.5", project: "api", agent: "noisy" },
];

interface Rig {
  readonly gate: DnsGate;
  readonly server: Server;
  readonly upstream: TestUpstream;
  readonly writer: RecordingDnsCacheWriter;
  readonly decisions: DnsDecision[];
  readonly logLines: Record<string, unknown>[];
  policy(overrides?: Partial<DnsPolicy>): DnsPolicy;
}

async function rig(
  t: TestContext,
  options: { policy?: Partial<DnsPolicy>; gate?: Partial<DnsGateOptions>; apply?: boolean } = {},
): Promise<Rig> {
  const upstream = await TestUpstream.start(ZONE);
  const writer = new RecordingDnsCacheWriter();
  const decisions: DnsDecision[] = [];
  const logLines: Record<string, unknown>[] = [];
  const log = pino(
    { level: "debug" },
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        logLines.push(JSON.parse(chunk.toString("utf8")) as Record<string, unknown>);
        cb();
      },
    }),
  );
  const gate = new DnsGate({
    address: "127.0.0.1",
    port: 0,
    writer,
    log,
    onDecision: (d) => decisions.push(d),
    ...options.gate,
  });
  const server = await gate.start(AbortSignal.timeout(120_000));
  const policy = (overrides: Partial<DnsPolicy> = {}): DnsPolicy => ({
    rules: RULES,
    clients: CLIENTS,
    upstreams: [{ address: upstream.address, port: upstream.port }],
    ttl: { floor: 30, ceiling: 3_600 },
    ...options.policy,
    ...overrides,
  });
  if (options.apply !== false) gate.applyPolicy(policy());
  t.after(async () => {
    await gate.close();
    await upstream.close();
  });
  return { gate, server, upstream, writer, decisions, logLines, policy };
}

const NOERROR = 0;
const SERVFAIL = 2;
const NXDOMAIN = 3;
const NOTIMP = 4;
const REFUSED = 5;
const FORMERR = 1;
const BADVERS = 16;

describe("DNS gate: policy", () => {
  test("allowed exact and wildcard names get the upstream's addresses, over UDP and TCP", async (t) => {
    const r = await rig(t);
    for (const transport of ["udp", "tcp"] as const) {
      const api = await query(r.server, "api.example.test", "A", { transport });
      assert.equal(api.rcode, NOERROR);
      assert.deepEqual(api.addresses, ["10.1.0.1", "10.1.0.2"]);
      const deep = await query(r.server, "a.b.example.test", "A", { transport });
      assert.deepEqual(deep.addresses, ["10.1.0.3"]);
      const exact = await query(r.server, "exact.test", "A", { transport });
      assert.deepEqual(exact.addresses, ["10.3.0.5"]);
      // *.example.test covers example.test itself, as the proxy's lookup does (name-match.ts).
      const parent = await query(r.server, "example.test", "A", { transport });
      assert.equal(parent.rcode, NOERROR);
      assert.deepEqual(parent.addresses, ["10.1.0.8"]);
    }
    // Each address recorded with the identity of the rule that allowed the name.
    const recorded = r.writer.entries().map((e) => `${e.address}=${e.identity}`);
    for (const want of ["10.1.0.1=10", "10.1.0.2=10", "10.1.0.3=10", "10.3.0.5=50", "10.1.0.8=10"]) {
      assert.ok(recorded.includes(want), `${want} in ${recorded.join(" ")}`);
    }
  });

  test("blocked names: NXDOMAIN with EDE 15 and the policy text, never forwarded", async (t) => {
    const r = await rig(t);
    const cases = [
      "example.test.evil.test", // a suffix trick, not below example.test
      "db.internal.example.test", // deny *.internal.example.test is longer than allow *.example.test
      "sub.exact.test", // exact rules do not cover names below
      "nowhere.test",
      "internal.example.test", // deny *.internal.example.test covers its parent too
    ];
    for (const name of cases) {
      for (const transport of ["udp", "tcp"] as const) {
        const reply = await query(r.server, name, "A", { transport });
        assert.equal(reply.rcode, NXDOMAIN, name);
        assert.deepEqual(reply.addresses, [], name);
        assert.deepEqual(
          reply.ede,
          { code: 15, text: `${name} is not allowed by the clawker egress policy` },
          name,
        );
      }
      assert.equal(r.upstream.count(name), 0, `${name} was forwarded`);
    }
    // Without EDNS there is no OPT record to carry the EDE (RFC 6891 §7); the NXDOMAIN stays.
    const plain = await query(r.server, "nowhere.test", "A", { edns: false });
    assert.equal(plain.rcode, NXDOMAIN);
    assert.equal(plain.hasOpt, false);
    assert.equal(r.writer.entries().length, 0, "nothing recorded for blocked names");
    assert.equal(r.gate.stats().blocked, cases.length * 2 + 1);
  });

  test("longest match: an exact allow under a denied wildcard", async (t) => {
    const r = await rig(t);
    const reply = await query(r.server, "ok.internal.example.test");
    assert.deepEqual(reply.addresses, ["10.1.0.7"]);
    assert.deepEqual(
      r.writer.entries().map((e) => [e.address, e.identity]),
      [["10.1.0.7", 11]],
    );
  });

  test("deny beats allow at equal length: a project's deny over a global allow", async (t) => {
    const r = await rig(t);
    assert.equal((await query(r.server, "tie.test", "A", { from: "127.0.0.2" })).rcode, NXDOMAIN);
    assert.equal((await query(r.server, "tie.test", "A", { from: "127.0.0.3" })).rcode, NXDOMAIN);
    // The deny is web's: api's agent gets the global allow.
    assert.deepEqual((await query(r.server, "tie.test", "A", { from: "127.0.0.4" })).addresses, ["10.3.0.3"]);
  });

  test("project and agent isolation", async (t) => {
    const r = await rig(t);
    // web's agent: its project's name yes, api's no.
    assert.deepEqual((await query(r.server, "web-only.test", "A", { from: "127.0.0.2" })).addresses, [
      "10.3.0.1",
    ]);
    assert.equal((await query(r.server, "api-only.test", "A", { from: "127.0.0.2" })).rcode, NXDOMAIN);
    // api's agent: the reverse.
    assert.equal((await query(r.server, "web-only.test", "A", { from: "127.0.0.4" })).rcode, NXDOMAIN);
    assert.deepEqual((await query(r.server, "api-only.test", "A", { from: "127.0.0.4" })).addresses, [
      "10.3.0.2",
    ]);
    // An agent rule: web.dev only, not its sibling web.ops, not api.dev (same short name).
    assert.equal((await query(r.server, "dev-only.test", "A", { from: "127.0.0.2" })).rcode, NOERROR);
    assert.equal((await query(r.server, "dev-only.test", "A", { from: "127.0.0.3" })).rcode, NXDOMAIN);
    assert.equal((await query(r.server, "dev-only.test", "A", { from: "127.0.0.4" })).rcode, NXDOMAIN);
    assert.equal(r.upstream.count("api-only.test"), 1, "forwarded once, for api's agent only");
  });

  test("an unknown source address is refused (EDE 18), before and after a policy", async (t) => {
    const r = await rig(t, { apply: false });
    // No policy yet: no address is known, nothing is answered.
    const early = await query(r.server, "api.example.test", "A", { from: "127.0.0.2" });
    assert.equal(early.rcode, REFUSED);
    r.gate.applyPolicy(r.policy());
    const reply = await query(r.server, "api.example.test", "A", { from: "127.0.0.9" });
    assert.equal(reply.rcode, REFUSED);
    assert.deepEqual(reply.ede, { code: 18, text: UNKNOWN_SOURCE_TEXT });
    assert.equal(r.upstream.count("api.example.test"), 0);
    const d = r.decisions.find((x) => x.client === "127.0.0.9");
    assert.equal(d?.reason, "unknown_source");
    assert.equal(d?.verdict, "denied");
  });

  test("AAAA and other types of allowed names: NOERROR, no records, never forwarded", async (t) => {
    const r = await rig(t);
    for (const type of ["AAAA", "TXT", "MX"] as const) {
      const reply = await query(r.server, "api.example.test", type);
      assert.equal(reply.rcode, NOERROR, type);
      assert.equal(reply.packet.answers?.length, 0, type);
    }
    assert.equal(r.upstream.count("api.example.test"), 0);
    // AAAA of a blocked name is blocked like A.
    assert.equal((await query(r.server, "nowhere.test", "AAAA")).rcode, NXDOMAIN);
  });

  test("a label with a dot byte cannot pose as a name below an allowed parent", async (t) => {
    const r = await rig(t);
    // Wire labels ["x.example", "test"]: text "x.example.test" would match *.example.test.
    const name = Buffer.from([9, ...Buffer.from("x.example"), 4, ...Buffer.from("test"), 0]);
    const msg = Buffer.concat([
      Buffer.from([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]),
      name,
      Buffer.from([0, 1, 0, 1]),
    ]);
    const reply = await exchangeRaw(r.server, msg);
    assert.ok(reply !== undefined);
    assert.equal(reply.readUInt16BE(2) & 0xf, NXDOMAIN);
    assert.equal(r.upstream.seen.length, 0);
    assert.equal(r.decisions[0]?.reason, "invalid_name");
  });

  test("applyPolicy refuses an invalid policy and keeps the one in force", async (t) => {
    const r = await rig(t);
    const before = r.gate.stats().policyGeneration;
    assert.throws(
      () =>
        r.gate.applyPolicy({
          ...r.policy(),
          rules: [{ scope: g, pattern: "*.com", action: "allow", identity: 1 }],
        }),
      (err) => err instanceof InvalidPolicyError && /rules\[0\]\.pattern/.test(err.message),
    );
    assert.throws(
      () => r.gate.applyPolicy(r.policy({ upstreams: [{ address: r.server.address, port: r.server.port }] })),
      (err) => err instanceof InvalidPolicyError && /forwarding loop/.test(err.message),
    );
    assert.equal(r.gate.stats().policyGeneration, before);
    assert.deepEqual((await query(r.server, "api.example.test")).addresses, ["10.1.0.1", "10.1.0.2"]);
    // A valid swap takes effect for the next query.
    const summary = r.gate.applyPolicy(r.policy({ rules: [] }));
    assert.deepEqual(summary, { generation: before + 1, rules: 0, clients: 4 });
    assert.equal((await query(r.server, "api.example.test")).rcode, NXDOMAIN);
  });

  test("every decision is one event, logged at debug; denials at info", async (t) => {
    const r = await rig(t);
    await query(r.server, "api.example.test", "A", { from: "127.0.0.2" });
    await query(r.server, "db.internal.example.test", "A", { from: "127.0.0.2", transport: "tcp" });
    assert.equal(r.decisions.length, 2);
    const [allowed, denied] = r.decisions;
    assert.deepEqual(
      { ...allowed, time: 0 },
      {
        time: 0,
        client: "127.0.0.2",
        agent: "web.dev",
        project: "web",
        name: "api.example.test",
        type: "A",
        transport: "udp",
        verdict: "allowed",
        reason: "rule_allow",
        rule: { pattern: "*.example.test", scope: { kind: "global", name: "" }, action: "allow" },
        identity: 10,
        rcode: "NOERROR",
        addresses: ["10.1.0.1", "10.1.0.2"],
        cached: false,
        error: undefined,
      },
    );
    assert.equal(denied?.verdict, "denied");
    assert.equal(denied?.reason, "rule_deny");
    assert.equal(denied?.transport, "tcp");
    assert.deepEqual(denied?.rule, {
      pattern: "*.internal.example.test",
      scope: { kind: "global", name: "" },
      action: "deny",
    });
    assert.equal(r.logLines.filter((l) => l["event"] === "dns_decision").length, 2);
    const info = r.logLines.filter((l) => l["event"] === "dns_denied");
    assert.equal(info.length, 1);
    assert.equal(info[0]?.["name"], "db.internal.example.test");
  });
});

describe("DNS gate: forwarding and cache", () => {
  test("TTL floor and ceiling; cache hits do not reach the upstream", async (t) => {
    const r = await rig(t);
    const short = await query(r.server, "short.example.test");
    assert.deepEqual(short.ttls, [30], "upstream TTL 1 raised to the floor");
    const long = await query(r.server, "long.example.test");
    assert.deepEqual(long.ttls, [3_600], "upstream TTL 999999 cut to the ceiling");
    const again = await query(r.server, "short.example.test", "A", { transport: "tcp" });
    assert.deepEqual(again.addresses, ["10.1.0.4"]);
    assert.ok(again.ttls[0]! <= 30 && again.ttls[0]! >= 29, String(again.ttls[0]));
    assert.equal(r.upstream.count("short.example.test"), 1);
    assert.equal(r.decisions.at(-1)?.cached, true);
    // The map gets the same TTLs, and a cache hit is recorded again (its entry may have been evicted).
    const writes = r.writer.entries().filter((e) => e.address === "10.1.0.4");
    assert.equal(writes.length, 2);
    assert.equal(writes[0]?.ttl, 30);
    assert.equal(r.writer.entries().find((e) => e.address === "10.1.0.5")?.ttl, 3_600);
    const s = r.gate.stats();
    assert.equal(s.cacheHits, 1);
    assert.equal(s.cacheMisses, 2);
  });

  test("an expired entry is asked for again", async (t) => {
    const r = await rig(t, { policy: { ttl: { floor: 1, ceiling: 1 } } });
    await query(r.server, "api.example.test");
    await waitFor(
      async () => {
        await query(r.server, "api.example.test");
        return r.upstream.count("api.example.test") === 2;
      },
      { timeoutMs: 5_000, intervalMs: 200, what: "a second upstream query after expiry" },
    );
  });

  test("concurrent queries for one uncached name share one upstream query", async (t) => {
    const r = await rig(t);
    const replies = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        query(r.server, "a.b.example.test", "A", { from: `127.0.0.${2 + (i % 3)}` }),
      ),
    );
    for (const reply of replies) assert.deepEqual(reply.addresses, ["10.1.0.3"]);
    assert.equal(r.upstream.count("a.b.example.test"), 1);
  });

  test("a truncated upstream answer is asked again over TCP", async (t) => {
    const r = await rig(t);
    const reply = await query(r.server, "big.example.test");
    assert.deepEqual(reply.addresses, ["10.1.1.1", "10.1.1.2", "10.1.1.3", "10.1.1.4", "10.1.1.5"]);
    assert.deepEqual(
      r.upstream.seen.filter((q) => q.name === "big.example.test").map((q) => q.transport),
      ["udp", "tcp"],
    );
  });

  test("CNAME chains are followed and flattened; records off the chain and loopback addresses are dropped", async (t) => {
    const r = await rig(t);
    const cdn = await query(r.server, "cdn.example.test");
    assert.deepEqual(cdn.addresses, ["10.2.0.1"]);
    assert.deepEqual(
      cdn.packet.answers?.map((a) => [a.name, a.type]),
      [["cdn.example.test", "A"]],
    );
    assert.deepEqual(cdn.ttls, [50], "the smallest TTL on the chain");
    const lo = await query(r.server, "lo.example.test");
    assert.deepEqual(lo.addresses, ["10.1.0.9"]);
    assert.deepEqual(
      r.writer.entries().map((e) => e.address),
      ["10.2.0.1", "10.1.0.9"],
    );
    const empty = await query(r.server, "empty.example.test");
    assert.equal(empty.rcode, NOERROR);
    assert.deepEqual(empty.addresses, []);
  });

  test("an upstream that does not answer: SERVFAIL after the timeout; a failing upstream: the next one", async (t) => {
    const r = await rig(t, { policy: { upstreamTimeoutMs: 200 } });
    const reply = await query(r.server, "slow.example.test");
    assert.equal(reply.rcode, SERVFAIL);
    assert.equal(r.decisions.at(-1)?.error, "upstream_timeout");
    assert.equal(r.decisions.at(-1)?.verdict, "allowed");

    const failing = await TestUpstream.start({
      "api.example.test": { servfail: true },
      "a.b.example.test": { silent: true },
    });
    t.after(() => failing.close());
    r.gate.applyPolicy(
      r.policy({
        upstreamTimeoutMs: 200,
        upstreams: [
          { address: failing.address, port: failing.port },
          { address: r.upstream.address, port: r.upstream.port },
        ],
      }),
    );
    assert.deepEqual((await query(r.server, "api.example.test")).addresses, ["10.1.0.1", "10.1.0.2"]);
    assert.deepEqual((await query(r.server, "a.b.example.test")).addresses, ["10.1.0.3"]);
    assert.equal(failing.count("api.example.test"), 1);
    assert.equal(failing.count("a.b.example.test"), 1);
  });
});

describe("DNS gate: recording before replying", () => {
  test("the reply waits for the write", async (t) => {
    const r = await rig(t);
    let release!: () => void;
    r.writer.hold = new Promise((res) => (release = res));
    let repliedAt = 0;
    const pending = query(r.server, "api.example.test").then((reply) => {
      repliedAt = performance.now();
      return reply;
    });
    await waitFor(() => r.writer.writes.length === 1, { what: "the write" });
    // A gate that replied first would have answered by now (loopback: well under a millisecond).
    await sleep(100);
    assert.equal(repliedAt, 0, "replied before the write finished");
    const releasedAt = performance.now();
    release();
    const reply = await pending;
    assert.ok(repliedAt >= releasedAt);
    assert.deepEqual(reply.addresses, ["10.1.0.1", "10.1.0.2"]);
  });

  test("a failed write is SERVFAIL, never an answer", async (t) => {
    const r = await rig(t);
    r.writer.failWith = new Error("manager gone");
    const reply = await query(r.server, "api.example.test");
    assert.equal(reply.rcode, SERVFAIL);
    assert.deepEqual(reply.addresses, []);
    // Also from the cache: the entry is there, but the write still fails.
    const cached = await query(r.server, "api.example.test", "A", { transport: "tcp" });
    assert.equal(cached.rcode, SERVFAIL);
    assert.equal(r.gate.stats().cacheWriteFailures, 2);
    assert.equal(r.decisions.at(-1)?.error, "cache_write_failed");
    assert.ok(r.logLines.some((l) => l["event"] === "dns_cache_write_failed"));
  });

  test("a write that hangs is SERVFAIL after writeTimeoutMs", async (t) => {
    const r = await rig(t, { gate: { writeTimeoutMs: 150 } });
    r.writer.hold = new Promise(() => undefined);
    const reply = await query(r.server, "api.example.test");
    assert.equal(reply.rcode, SERVFAIL);
  });
});

describe("DNS gate: limits and malformed input", () => {
  test("per-client rate limit: REFUSED past the burst, other clients unaffected", async (t) => {
    const r = await rig(t, { policy: { rateLimit: { queriesPerSecond: 0.1, burst: 3 } } });
    const rcodes: number[] = [];
    for (let i = 0; i < 5; i++)
      rcodes.push((await query(r.server, "api.example.test", "A", { from: "127.0.0.5" })).rcode);
    assert.deepEqual(rcodes, [NOERROR, NOERROR, NOERROR, REFUSED, REFUSED]);
    assert.equal((await query(r.server, "api.example.test", "A", { from: "127.0.0.2" })).rcode, NOERROR);
    // TCP counts against the same bucket.
    assert.equal(
      (await query(r.server, "api.example.test", "A", { from: "127.0.0.5", transport: "tcp" })).rcode,
      REFUSED,
    );
    assert.equal(r.gate.stats().rateLimited, 3);
    const logged = r.logLines.filter((l) => l["event"] === "dns_rate_limited");
    assert.equal(logged.length, 1, "one summary per client per window");
  });

  test("malformed and unsupported queries", async (t) => {
    const r = await rig(t);
    const rcodeOf = async (msg: Buffer): Promise<number | undefined> => {
      const reply = await exchangeRaw(r.server, msg, { timeoutMs: 300 });
      return reply === undefined ? undefined : reply.readUInt16BE(2) & 0xf;
    };
    const base = queryMessage("api.example.test", "A", { edns: false, id: 77 });
    // 600 bytes without EDNS
    assert.equal(await rcodeOf(Buffer.concat([base, Buffer.alloc(600 - base.length)])), FORMERR);
    // two questions
    const two = Buffer.from(base);
    two.writeUInt16BE(2, 4);
    assert.equal(await rcodeOf(two), FORMERR);
    // opcode NOTIFY
    const notify = Buffer.from(base);
    notify.writeUInt16BE(0x2100, 2);
    assert.equal(await rcodeOf(notify), NOTIMP);
    // class CH (version.bind and friends)
    const chaos = Buffer.from(base);
    chaos.writeUInt16BE(3, chaos.length - 2);
    assert.equal(await rcodeOf(chaos), REFUSED);
    // EDNS version 1
    const v1 = queryMessage("api.example.test", "A", { id: 78 });
    v1[v1.length - 5] = 1;
    const badvers = await exchangeRaw(r.server, v1);
    assert.ok(badvers !== undefined);
    assert.equal(badvers.readUInt16BE(2) & 0xf, 0);
    assert.equal(badvers[badvers.length - 6], BADVERS >> 4);
    // a response, and a runt: no answer at all
    const response = Buffer.from(base);
    response.writeUInt16BE(0x8100, 2);
    assert.equal(await rcodeOf(response), undefined);
    assert.equal(await rcodeOf(Buffer.alloc(5)), undefined);
    assert.equal(r.upstream.seen.length, 0);
    const s = r.gate.stats();
    assert.equal(s.errors, 5);
    assert.equal(s.dropped, 2);
    // Still serving.
    assert.equal((await query(r.server, "api.example.test")).rcode, NOERROR);
  });

  test("a TCP frame longer than 4096 bytes closes the connection", async (t) => {
    const r = await rig(t);
    const closed = await new Promise<boolean>((resolve) => {
      const sock = connect({ host: r.server.address, port: r.server.port, localAddress: "127.0.0.2" });
      sock.on("error", () => resolve(true));
      sock.on("close", () => resolve(true));
      sock.on("connect", () => sock.write(Buffer.from([0x13, 0x88, 0, 0, 0])));
    });
    assert.ok(closed);
    assert.equal(r.gate.stats().dropped, 1);
  });

  test("an idle TCP connection is closed; pipelined queries on one connection are answered", async (t) => {
    const r = await rig(t, { gate: { tcpIdleMs: 300 } });
    const sock = connect({ host: r.server.address, port: r.server.port, localAddress: "127.0.0.2" });
    t.after(() => sock.destroy());
    const frames: Buffer[] = [];
    let buf = Buffer.alloc(0);
    sock.on("data", (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        frames.push(buf.subarray(2, 2 + buf.readUInt16BE(0)));
        buf = buf.subarray(2 + buf.readUInt16BE(0));
      }
    });
    const closed = new Promise<void>((res) => sock.on("close", () => res()));
    const out: Buffer[] = [];
    for (const name of ["api.example.test", "a.b.example.test", "nowhere.test"]) {
      const m = queryMessage(name);
      const len = Buffer.alloc(2);
      len.writeUInt16BE(m.length);
      out.push(len, m);
    }
    sock.write(Buffer.concat(out));
    await waitFor(() => frames.length === 3, { what: "three answers" });
    await closed;
  });
});

describe("DNS gate: lifecycle", () => {
  test("close() releases both ports and every handle; it is idempotent", async (t) => {
    const before = process.getActiveResourcesInfo().filter((x) => x !== "TTYWrap").length;
    const r = await rig(t);
    await query(r.server, "api.example.test", "A", { transport: "tcp" });
    const slow = query(r.server, "slow.example.test", "A", { timeoutMs: 500 }).catch(() => undefined);
    await waitFor(() => r.upstream.count("slow.example.test") === 1, { what: "the slow query upstream" });
    await r.gate.close();
    await r.gate.close();
    await r.upstream.close();
    await slow;
    // The port is free again for UDP and TCP.
    const udp = createSocket("udp4");
    await new Promise<void>((res) => udp.bind(r.server.port, r.server.address, res));
    await new Promise<void>((res) => udp.close(() => res()));
    await assert.rejects(r.gate.start(AbortSignal.timeout(1_000)), /started or closed/);
    await waitFor(() => process.getActiveResourcesInfo().filter((x) => x !== "TTYWrap").length <= before, {
      what: "no handles left",
    });
  });

  test("aborting the start signal closes the gate", async (t) => {
    const upstream = await TestUpstream.start(ZONE);
    t.after(() => upstream.close());
    const gate = new DnsGate({
      address: "127.0.0.1",
      port: 0,
      writer: new RecordingDnsCacheWriter(),
      log: pino({ level: "silent" }),
    });
    const ac = new AbortController();
    const server = await gate.start(ac.signal);
    ac.abort();
    await gate.close();
    const udp = createSocket("udp4");
    await new Promise<void>((res) => udp.bind(server.port, server.address, res));
    await new Promise<void>((res) => udp.close(() => res()));
  });

  test("a port in use is bind_failed", async (t) => {
    const first = new DnsGate({
      address: "127.0.0.1",
      port: 0,
      writer: new RecordingDnsCacheWriter(),
      log: pino({ level: "silent" }),
    });
    const { port } = await first.start(AbortSignal.timeout(60_000));
    t.after(() => first.close());
    const second = new DnsGate({
      address: "127.0.0.1",
      port,
      writer: new RecordingDnsCacheWriter(),
      log: pino({ level: "silent" }),
    });
    await assert.rejects(
      second.start(AbortSignal.timeout(60_000)),
      (err: Error & { reason?: string }) => err.reason === "bind_failed",
    );
    await second.close();
  });
});
