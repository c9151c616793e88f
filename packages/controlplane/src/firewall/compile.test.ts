// The compile step on tables of rules: proxy entries per kind and port, scopes, path defaults,
// certificates, route listeners (stable across compiles, exhausted), collisions, routes and the
// DNS gate's rules and clients; every policy it produces passes the proxy's and the gate's own
// validation.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  compileFirewall,
  compileRuleId,
  effectivePathDefault,
  type CompileInput,
  type CompiledFirewall,
} from "./compile.js";
import { compilePolicy, dnsRulesFromListing } from "./dns/index.js";
import { checkPolicy, type ProxyEntry } from "./proxy/index.js";
import type { ListedRule } from "./rule-store.js";
import type { RuleInput } from "./rule.js";
import { compareRules } from "./rule-merge.js";
import { HTTP_METHODS, canonicalRules } from "./rule-validation.js";

const PORTS = { tls: 15443, http: 15080, routes: [16000, 16001, 16002], udp: [16000, 16001] };

/**
 * Canonical rules from wire-shaped inputs in the store's listing order; identities 1, 2, ... by
 * first appearance of a dst in that order.
 */
function listed(inputs: readonly RuleInput[]): ListedRule[] {
  const ids = new Map<string, number>();
  return canonicalRules(inputs)
    .sort(compareRules)
    .map((rule) => {
      if (!ids.has(rule.dst)) ids.set(rule.dst, ids.size + 1);
      return { rule, floor: false, identity: ids.get(rule.dst)! };
    });
}

function compile(inputs: readonly RuleInput[], extra: Partial<CompileInput> = {}): CompiledFirewall {
  const out = compileFirewall({
    rules: listed(inputs),
    sources: [{ address: "172.20.0.5", agent: "web.dev", project: "web" }],
    forbidden: ["127.0.0.0/8"],
    ports: PORTS,
    ...extra,
  });
  // Whatever it compiles, the proxy and the DNS gate accept.
  checkPolicy(out.proxy, { routePorts: new Set(PORTS.routes) });
  compilePolicy({ ...out.dns, upstreams: [{ address: "192.0.2.53", port: 53 }] });
  return out;
}

/** An entry without the fields every row shares. */
function brief(e: ProxyEntry): Record<string, unknown> {
  const { ruleId: _r, scope: _s, ...rest } = e;
  return rest;
}

void test("one rule per kind: passthrough, interception, http, tcp through a route listener, udp", () => {
  const table: Array<[string, RuleInput, Record<string, unknown>[]]> = [
    [
      "https name",
      { dst: "api.example.com" },
      [{ kind: "tls-passthrough", action: "allow", dst: "api.example.com", port: 443 }],
    ],
    [
      "wss name",
      { dst: "ws.example.com", proto: "wss" },
      [{ kind: "tls-passthrough", action: "allow", dst: "ws.example.com", port: 443 }],
    ],
    [
      "https with path rules: intercepted, allowlist of paths -> default deny",
      { dst: "api.example.com", pathRules: [{ path: "/v1/", methods: ["get"] }] },
      [
        {
          kind: "tls-intercept",
          action: "allow",
          dst: "api.example.com",
          port: 443,
          pathRules: [{ path: "/v1/", action: "allow", methods: ["GET"] }],
          pathDefault: "deny",
        },
      ],
    ],
    [
      "https with deny paths only: denylist -> default allow; insecure kept",
      { dst: "x.example.com", pathRules: [{ path: "/admin", action: "deny" }], insecureSkipTlsVerify: true },
      [
        {
          kind: "tls-intercept",
          action: "allow",
          dst: "x.example.com",
          port: 443,
          pathRules: [{ path: "/admin", action: "deny", methods: [] }],
          pathDefault: "allow",
          insecureSkipTlsVerify: true,
        },
      ],
    ],
    [
      "https with only path_default deny: every path denied, so intercepted",
      { dst: "y.example.com", pathDefault: "deny" },
      [
        {
          kind: "tls-intercept",
          action: "allow",
          dst: "y.example.com",
          port: 443,
          pathRules: [],
          pathDefault: "deny",
        },
      ],
    ],
    [
      "https without path rules drops insecure (nothing is verified on a passthrough)",
      { dst: "z.example.com", insecureSkipTlsVerify: true },
      [{ kind: "tls-passthrough", action: "allow", dst: "z.example.com", port: 443 }],
    ],
    [
      "http name",
      { dst: "deb.debian.org", proto: "http" },
      [{ kind: "http", action: "allow", dst: "deb.debian.org", port: 80 }],
    ],
    [
      "http with paths and an explicit default",
      {
        dst: "h.example.com",
        proto: "http",
        pathDefault: "allow",
        pathRules: [{ path: "~/x/[0-9]+", action: "deny" }],
      },
      [
        {
          kind: "http",
          action: "allow",
          dst: "h.example.com",
          port: 80,
          pathRules: [{ path: "~/x/[0-9]+", action: "deny", methods: [] }],
          pathDefault: "allow",
        },
      ],
    ],
    [
      "ssh name",
      { dst: "github.com", proto: "ssh" },
      [{ kind: "tcp", action: "allow", dst: "github.com", port: 22, listener: 16000 }],
    ],
    [
      "tcp range: one entry per port",
      { dst: "db.internal", proto: "tcp", port: "5432-5434" },
      [5432, 5433, 5434].map((port) => ({
        kind: "tcp",
        action: "allow",
        dst: "db.internal",
        port,
        listener: 16000,
      })),
    ],
    [
      "https to an address goes through a route listener",
      { dst: "10.0.0.7" },
      [{ kind: "tcp", action: "allow", dst: "10.0.0.7", port: 443, listener: 16000 }],
    ],
    [
      "CIDR",
      { dst: "10.1.0.0/16", proto: "tcp", port: "22" },
      [{ kind: "tcp", action: "allow", dst: "10.1.0.0/16", port: 22, listener: 16000 }],
    ],
    [
      "udp",
      { dst: "ntp.example.com", proto: "udp", port: "123" },
      [{ kind: "udp", action: "allow", dst: "ntp.example.com", port: 123 }],
    ],
    [
      "a deny with path rules is a plain deny",
      { dst: "d.example.com", action: "deny", pathRules: [{ path: "/a" }] },
      [{ kind: "tls-passthrough", action: "deny", dst: "d.example.com", port: 443 }],
    ],
    [
      "wildcard",
      { dst: "*.example.org" },
      [{ kind: "tls-passthrough", action: "allow", dst: "*.example.org", port: 443 }],
    ],
  ];
  for (const [name, input, want] of table) {
    const out = compile([input]);
    assert.deepEqual(out.proxy.entries.map(brief), want, name);
    assert.deepEqual(out.skipped, [], name);
  }
});

void test("rule ids, scopes and sources", () => {
  const out = compile([
    { dst: "a.example.com" },
    { dst: "a.example.com", project: "web", action: "deny" },
    { dst: "a.example.com", project: "web", agentName: "dev" },
  ]);
  assert.deepEqual(
    out.proxy.entries.map((e) => [e.ruleId, e.scope]),
    [
      ["global/a.example.com:https:443", { kind: "global" }],
      ["project:web/a.example.com:https:443", { kind: "project", project: "web" }],
      ["agent:web.dev/a.example.com:https:443", { kind: "agent", agent: "web.dev" }],
    ],
  );
  assert.deepEqual(out.proxy.sources, [{ address: "172.20.0.5", agent: "web.dev", project: "web" }]);
  assert.deepEqual(out.proxy.forbidden, ["127.0.0.0/8"]);
  // A 253-character name does not fit the proxy's 200-character id: a readable head and a digest.
  const long = `${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(61)}`;
  const id = compileRuleId({ scope: { kind: "global", name: "" }, dst: long, proto: "https", port: "443" });
  assert.equal(id.length, 200);
  assert.match(id, /^global\/a+\..*@[0-9a-f]{16}$/);
  assert.notEqual(
    id,
    compileRuleId({ scope: { kind: "global", name: "" }, dst: long, proto: "https", port: "444" }),
  );
});

void test("effective path default: explicit wins, an allow path makes an allowlist, else allow", () => {
  const p = (action: "allow" | "deny") => ({ path: "/x", action, methods: [] });
  assert.equal(effectivePathDefault({ pathDefault: "", pathRules: [] }), "allow");
  assert.equal(effectivePathDefault({ pathDefault: "", pathRules: [p("deny")] }), "allow");
  assert.equal(effectivePathDefault({ pathDefault: "", pathRules: [p("deny"), p("allow")] }), "deny");
  assert.equal(effectivePathDefault({ pathDefault: "allow", pathRules: [p("allow")] }), "allow");
  assert.equal(effectivePathDefault({ pathDefault: "deny", pathRules: [] }), "deny");
});

void test("certificates: one per intercepted name, none for passthrough or denies", () => {
  const out = compile([
    { dst: "b.example.com", pathRules: [{ path: "/v1/" }] },
    { dst: "b.example.com", proto: "https", port: "8443", pathRules: [{ path: "/v2/" }] },
    { dst: "*.w.example.com", proto: "wss", pathRules: [{ path: "/socket" }] },
    { dst: "a.example.com" },
    { dst: "c.example.com", action: "deny", pathRules: [{ path: "/x" }] },
  ]);
  assert.deepEqual(out.certificates, ["*.w.example.com", "b.example.com"]);
});

void test("route listeners: one per TCP destination, kept across compiles, exhausted ones reported", () => {
  const first = compile([
    { dst: "a.internal", proto: "tcp", port: "1" },
    { dst: "b.internal", proto: "ssh" },
    { dst: "a.internal", proto: "tcp", port: "2", project: "web" },
  ]);
  assert.deepEqual(
    [...first.listeners],
    [
      ["a.internal", 16000],
      ["b.internal", 16001],
    ],
  );
  // a.internal goes away: b keeps its listener, the newcomer takes the lowest free one.
  const second = compile(
    [
      { dst: "b.internal", proto: "ssh" },
      { dst: "c.internal", proto: "tcp", port: "9" },
    ],
    { listeners: first.listeners },
  );
  assert.deepEqual(
    [...second.listeners],
    [
      ["b.internal", 16001],
      ["c.internal", 16000],
    ],
  );
  // Four destinations, three listeners: the last is left out (denied) and reported.
  const third = compile(
    ["a", "b", "c", "d"].map((n) => ({ dst: `${n}.internal`, proto: "tcp", port: "7" })),
    { listeners: second.listeners },
  );
  assert.equal(third.listeners.size, 3);
  assert.equal(third.listeners.has("d.internal"), false);
  assert.deepEqual(
    third.skipped.map((s) => [s.ruleId, s.reason]),
    [["global/d.internal:tcp:7", "no_route_listener"]],
  );
  assert.equal(
    third.proxy.entries.some((e) => e.dst === "d.internal"),
    false,
  );
  // A listener that no longer exists (config changed) is not kept.
  const fourth = compile([{ dst: "b.internal", proto: "ssh" }], {
    listeners: new Map([["b.internal", 17000]]),
  });
  assert.deepEqual([...fourth.listeners], [["b.internal", 16000]]);
});

void test("path rules on an address cannot be enforced: the rule is left out, a deny is kept", () => {
  const out = compile([
    { dst: "10.0.0.9", pathRules: [{ path: "/x" }] },
    { dst: "10.0.0.10", action: "deny", pathRules: [{ path: "/x" }] },
  ]);
  assert.deepEqual(
    out.skipped.map((s) => [s.ruleId, s.reason]),
    [["global/10.0.0.9:https:443", "path_rules_on_address"]],
  );
  assert.deepEqual(
    out.proxy.entries.map((e) => [e.dst, e.kind, e.action]),
    [["10.0.0.10", "tcp", "deny"]],
  );
});

void test("two rules on one proxy key: deny beats allow, interception beats passthrough, reported", () => {
  const out = compile([
    { dst: "a.example.com", proto: "https" },
    { dst: "a.example.com", proto: "wss", pathRules: [{ path: "/ws" }] },
    { dst: "b.example.com", proto: "https", action: "deny" },
    { dst: "b.example.com", proto: "wss" },
    { dst: "10.0.0.1", proto: "ssh", port: "22" },
    { dst: "10.0.0.1", proto: "tcp", port: "22" },
  ]);
  assert.deepEqual(
    out.proxy.entries.map((e) => [e.ruleId, e.kind, e.action]),
    [
      ["global/10.0.0.1:ssh:22", "tcp", "allow"],
      ["global/a.example.com:wss:443", "tls-intercept", "allow"],
      ["global/b.example.com:https:443", "tls-passthrough", "deny"],
    ],
  );
  assert.deepEqual(
    out.skipped.map((s) => [s.ruleId, s.reason]),
    [
      ["global/10.0.0.1:tcp:22", "shadowed"],
      ["global/a.example.com:https:443", "shadowed"],
      ["global/b.example.com:wss:443", "shadowed"],
    ],
  );
  // The same key in two scopes is no collision.
  assert.deepEqual(compile([{ dst: "a.example.com" }, { dst: "a.example.com", project: "p" }]).skipped, []);
});

void test("routes: catch-all listeners for names, route listeners for opaque TCP, the UDP relay for udp", () => {
  const out = compile([
    { dst: "a.example.com" },
    { dst: "a.example.com", proto: "http" },
    { dst: "a.example.com", proto: "https", port: "8443", project: "web" },
    { dst: "git.example.com", proto: "ssh" },
    { dst: "ntp.example.com", proto: "udp", port: "123" },
    { dst: "b.example.com", proto: "tcp", port: "443" },
    { dst: "b.example.com", proto: "https" },
  ]);
  assert.deepEqual(out.routes, [
    { identity: 1, dstPort: 80, proxyPort: 15080, protocol: "tcp" },
    { identity: 1, dstPort: 443, proxyPort: 15443, protocol: "tcp" },
    { identity: 1, dstPort: 8443, proxyPort: 15443, protocol: "tcp" },
    // b.example.com as https sorts before its tcp rule, so the catch-all keeps the route.
    { identity: 2, dstPort: 443, proxyPort: 15443, protocol: "tcp" },
    { identity: 3, dstPort: 22, proxyPort: 16001, protocol: "tcp" },
    { identity: 4, dstPort: 123, proxyPort: 16000, protocol: "udp" },
  ]);
  assert.deepEqual(
    out.skipped.map((s) => [s.ruleId, s.reason]),
    [["global/b.example.com:tcp:443", "route_conflict"]],
  );
});

void test("DNS: the gate's rules are dnsRulesFromListing's; clients are single-address sources by short name", () => {
  const inputs: RuleInput[] = [
    { dst: "a.example.com" },
    { dst: "a.example.com", proto: "http", action: "deny" },
    { dst: "b.example.com", action: "deny" },
    { dst: "*.example.org", proto: "tcp", port: "5000" },
    { dst: "a.example.com", project: "web", action: "deny" },
    { dst: "10.0.0.1", proto: "tcp", port: "22" },
  ];
  const out = compile(inputs, {
    sources: [
      { address: "172.20.0.5", agent: "web.dev", project: "web" },
      { address: "172.20.0.6", agent: "solo" },
      // A CIDR names no single asker: the proxy admits by it, the gate has no client for it.
      { address: "172.21.0.0/16", agent: "web.ci", project: "web" },
    ],
  });
  assert.deepEqual(out.dns.rules, dnsRulesFromListing(listed(inputs)));
  assert.deepEqual(
    out.dns.rules.map((r) => [r.scope, r.pattern, r.action, r.identity]),
    [
      [{ kind: "global", name: "" }, "*.example.org", "allow", 1],
      [{ kind: "global", name: "" }, "a.example.com", "allow", 3],
      [{ kind: "global", name: "" }, "b.example.com", "deny", undefined],
      [{ kind: "project", name: "web" }, "a.example.com", "deny", undefined],
    ],
  );
  assert.deepEqual(out.dns.clients, [
    { address: "172.20.0.5", project: "web", agent: "dev" },
    { address: "172.20.0.6", project: "", agent: "solo" },
  ]);
});

void test("no rules: an empty policy that still passes validation", () => {
  const out = compile([]);
  assert.deepEqual([out.proxy.entries, out.routes, out.certificates, out.dns.rules], [[], [], [], []]);
});

void test("udp: one relay port per (dst, port) with every scope's rules, sticky, CIDRs and exhausted pool reported", () => {
  const out = compile([
    { dst: "ntp.example.com", proto: "udp", port: "123-124" },
    { dst: "ntp.example.com", proto: "udp", port: "123", project: "web", action: "deny" },
    { dst: "10.0.0.0/8", proto: "udp", port: "500" },
    { dst: "deny-only.example.com", proto: "udp", port: "9", action: "deny" },
  ]);
  assert.deepEqual(
    out.udp.map((r) => [r.listener, r.dst, r.port, r.entries.map((e) => [e.ruleId, e.action])]),
    [
      [
        16000,
        "ntp.example.com",
        123,
        [
          ["global/ntp.example.com:udp:123-124", "allow"],
          ["project:web/ntp.example.com:udp:123", "deny"],
        ],
      ],
      [16001, "ntp.example.com", 124, [["global/ntp.example.com:udp:123-124", "allow"]]],
    ],
  );
  assert.deepEqual(
    out.routes.filter((r) => r.protocol === "udp").map((r) => [r.dstPort, r.proxyPort]),
    [
      [123, 16000],
      [124, 16001],
    ],
  );
  assert.deepEqual(
    out.skipped.map((s) => [s.ruleId, s.reason]),
    [["global/10.0.0.0/8:udp:500", "udp_cidr"]],
  );
  // Port 123 goes: 124 keeps its relay port; a new pair takes the freed one; a third finds none.
  const next = compile(
    [
      { dst: "ntp.example.com", proto: "udp", port: "124" },
      { dst: "dns.example.com", proto: "udp", port: "5353" },
      { dst: "more.example.com", proto: "udp", port: "7" },
    ],
    { udpListeners: out.udpListeners },
  );
  assert.deepEqual(
    next.udp.map((r) => [r.listener, r.dst, r.port]),
    [
      [16000, "dns.example.com", 5353],
      [16001, "ntp.example.com", 124],
    ],
  );
  assert.deepEqual(
    next.skipped.map((s) => [s.ruleId, s.reason]),
    [["global/more.example.com:udp:7", "no_route_listener"]],
  );
});

void test("rules at every limit validation allows compile into policies both layers accept", () => {
  // Whatever validation lets through must apply: a rule the proxy or the gate refused later would
  // be saved and then fail every reconcile. compile() runs both layers' own checks.
  const label = (c: string): string => c.repeat(63);
  const name253 = `${label("a")}.${label("b")}.${label("c")}.${"d".repeat(61)}`;
  const name64 = "p".repeat(64);
  const out = compile(
    [
      { dst: name253 },
      { dst: `*.${label("e")}.${label("f")}.${label("g")}.${"h".repeat(59)}` },
      { dst: "*.a.b.c.d.e.f.g.h" },
      { dst: "*.a.b.c.d.e.f.g.h", proto: "http" },
      { dst: "limits.test", project: name64, agentName: "q".repeat(64) },
      {
        dst: "paths.test",
        pathRules: [
          { path: "~(?i)/admin/.*", action: "deny" },
          { path: "~/v1/\\pL+/[[:alpha:]]+\\z", methods: [...HTTP_METHODS] },
          { path: `/${"x".repeat(1023)}` },
          ...Array.from({ length: 253 }, (_, i) => ({ path: `/p${i}` })),
        ],
      },
      { dst: "range.test", proto: "tcp", port: "1-1024" },
      { dst: "one.test", proto: "tcp", port: "65535" },
    ],
    {
      sources: [{ address: "172.20.0.5", agent: `${name64}.${"q".repeat(64)}`, project: name64 }],
    },
  );
  assert.equal(out.skipped.length, 0);
  assert.ok(out.proxy.entries.some((e) => e.dst === "*.a.b.c.d.e.f.g.h" && e.kind === "http"));
});
