import assert from "node:assert/strict";
import { test } from "node:test";
import { status } from "@grpc/grpc-js";
import { InvalidRuleError, firewallStatus } from "./errors.js";
import {
  type Rule,
  type RuleInput,
  anchoredPattern,
  describeKey,
  dstKind,
  portSpan,
  ruleKey,
  ruleToWire,
} from "./rule.js";
import { canonicalIdentity, canonicalRemovePath, canonicalRules, checkRule } from "./rule-validation.js";

function valid(input: RuleInput): Rule {
  const check = checkRule(input, 0);
  assert.ok(check.ok, `expected ${JSON.stringify(input)} to be valid, got ${JSON.stringify(check)}`);
  return check.rule;
}

const long = (n: number, c = "a"): string => c.repeat(n);
/** A name of exactly `n` characters (n >= 193): three 63-character labels and one more. */
function nameOfLength(n: number): string {
  return `${long(63)}.${long(63)}.${long(63)}.${long(n - 192)}`;
}

void test("canonicalisation fills defaults and picks one spelling (table)", () => {
  const cases: Array<[string, RuleInput, Partial<Rule>]> = [
    [
      "bare domain: https, 443, allow, global",
      { dst: "example.com" },
      { dst: "example.com", proto: "https", port: "443", action: "allow", pathDefault: "", pathRules: [] },
    ],
    ["uppercase name is lowercased", { dst: "API.Example.COM" }, { dst: "api.example.com" }],
    ["trailing root dot is dropped", { dst: "example.com." }, { dst: "example.com" }],
    ["wildcard", { dst: "*.Example.com" }, { dst: "*.example.com" }],
    [
      "wildcard over 8 labels (the layers' limit)",
      { dst: "*.a.b.c.d.e.f.g.h" },
      { dst: "*.a.b.c.d.e.f.g.h" },
    ],
    ["63-character label", { dst: `${long(63)}.com` }, { dst: `${long(63)}.com` }],
    ["253-character name", { dst: nameOfLength(253) }, { dst: nameOfLength(253) }],
    ["single-label name (a sibling container)", { dst: "postgres", proto: "tcp", port: "5432" }, {}],
    ["punycode", { dst: "xn--bcher-kva.example" }, { dst: "xn--bcher-kva.example" }],
    ["proto is lowercased; http's port", { dst: "a.test", proto: "HTTP" }, { proto: "http", port: "80" }],
    ["ws default port", { dst: "a.test", proto: "ws" }, { port: "80" }],
    ["wss default port", { dst: "a.test", proto: "wss" }, { port: "443" }],
    ["ssh default port", { dst: "a.test", proto: "ssh" }, { port: "22" }],
    ["explicit port", { dst: "a.test", port: "8443" }, { port: "8443" }],
    ["leading zeros in a port", { dst: "a.test", proto: "tcp", port: "0443" }, { port: "443" }],
    ["range lo==hi is one port", { dst: "a.test", proto: "udp", port: "80-80" }, { port: "80" }],
    ["range on tcp", { dst: "a.test", proto: "tcp", port: "1000-2000" }, { port: "1000-2000" }],
    [
      "the widest range (1024 ports) on an opaque name",
      { dst: "a.test", proto: "postgres", port: "1-1024" },
      { proto: "postgres", port: "1-1024" },
    ],
    ["IPv4", { dst: "192.168.1.10", proto: "tcp", port: "22" }, { dst: "192.168.1.10" }],
    ["CIDR", { dst: "10.0.0.0/8", proto: "tcp", port: "5432" }, { dst: "10.0.0.0/8" }],
    ["/32 is the address", { dst: "10.0.0.1/32", proto: "tcp", port: "22" }, { dst: "10.0.0.1" }],
    ["0.0.0.0/0 to deny", { dst: "0.0.0.0/0", proto: "tcp", port: "25", action: "deny" }, { action: "deny" }],
    ["action is case-insensitive", { dst: "a.test", action: "DENY" }, { action: "deny" }],
    ["path default", { dst: "a.test", pathDefault: "Deny" }, { pathDefault: "deny" }],
    [
      "insecure on wss",
      { dst: "a.test", proto: "wss", insecureSkipTlsVerify: true },
      { insecureSkipTlsVerify: true },
    ],
    [
      "path rules sorted by path; methods uppercased, deduplicated, sorted; default action allow",
      {
        dst: "a.test",
        pathRules: [
          { path: "/b", action: "deny" },
          { path: "/a", methods: ["post", "get", "GET"] },
        ],
      },
      {
        pathRules: [
          { path: "/a", action: "allow", methods: ["GET", "POST"] },
          { path: "/b", action: "deny", methods: [] },
        ],
      },
    ],
    [
      "percent-escapes are uppercased",
      { dst: "a.test", pathRules: [{ path: "/a%2fb%7e" }] },
      { pathRules: [{ path: "/a%2Fb%7E", action: "allow", methods: [] }] },
    ],
    [
      "trailing slash is kept",
      { dst: "a.test", pathRules: [{ path: "/api/" }] },
      { pathRules: [{ path: "/api/", action: "allow", methods: [] }] },
    ],
    [
      "an RE2 expression is kept as written",
      { dst: "a.test", pathRules: [{ path: "~/api/v[0-9]+/.*", action: "deny", methods: ["DELETE"] }] },
      { pathRules: [{ path: "~/api/v[0-9]+/.*", action: "deny", methods: ["DELETE"] }] },
    ],
    [
      "no scope is global",
      { dst: "a.test", project: "", agentName: "" },
      { scope: { kind: "global", name: "" } },
    ],
    ["project scope", { dst: "a.test", project: "web" }, { scope: { kind: "project", name: "web" } }],
    [
      "agent scope: project.agent",
      { dst: "a.test", project: "web", agentName: "dev" },
      { scope: { kind: "agent", name: "web.dev" } },
    ],
    [
      "agent without a project",
      { dst: "a.test", agentName: "Dev_1" },
      { scope: { kind: "agent", name: "Dev_1" } },
    ],
  ];
  for (const [name, input, want] of cases) {
    const rule = valid(input);
    for (const [field, value] of Object.entries(want)) {
      assert.deepEqual(rule[field as keyof Rule], value, `${name}: ${field}`);
    }
  }
});

void test("invalid rules name the field and say what is wrong (table)", () => {
  const tcp = { proto: "tcp", port: "22" };
  const cases: Array<[RuleInput, string, RegExp]> = [
    [{}, "dst", /is required/],
    [{ dst: "*." }, "dst", /names no domain/],
    [{ dst: "*" }, "dst", /names no domain/],
    [{ dst: "." }, "dst", /names no domain/],
    [{ dst: "a..b" }, "dst", /empty label/],
    [{ dst: "example.com.." }, "dst", /empty label/],
    [{ dst: `${long(64)}.com` }, "dst", /label longer than 63/],
    [{ dst: nameOfLength(254) }, "dst", /longer than 253/],
    [{ dst: "-a.com" }, "dst", /invalid label "-a"/],
    [{ dst: "a-.com" }, "dst", /invalid label "a-"/],
    [{ dst: "a_b.com" }, "dst", /invalid label "a_b"/],
    [{ dst: "*.com" }, "dst", /wildcard over a single label/],
    [
      { dst: "*.a.b.c.d.e.f.g.h.i" },
      "dst",
      /"\*\.a\.b\.c\.d\.e\.f\.g\.h\.i" is a wildcard over 9 labels; at most 8/,
    ],
    [{ dst: "a.*.com" }, "dst", /whole first label/],
    [{ dst: "*a.com" }, "dst", /whole first label/],
    [{ dst: "*.*.a.com" }, "dst", /whole first label/],
    [{ dst: ".example.com" }, "dst", /write a wildcard as \*\.example\.com/],
    [
      { dst: "bücher.example" },
      "dst",
      /not ASCII: give an internationalised name in punycode \(xn--bcher-kva\.example\)/,
    ],
    [{ dst: "*.bücher.example" }, "dst", /punycode \(\*\.xn--bcher-kva\.example\)/],
    [{ dst: " example.com" }, "dst", /whitespace/],
    [{ dst: "exa\nmple.com" }, "dst", /whitespace or control/],
    [{ dst: "example.com:443" }, "dst", /port field/],
    [{ dst: "https://example.com" }, "dst", /is a URL/],
    [{ dst: "example.com/path" }, "dst", /only in an IPv4 CIDR/],
    [{ dst: "::1" }, "dst", /IPv6: the firewall is IPv4-only/],
    [{ dst: "2001:db8::1" }, "dst", /IPv6/],
    [{ dst: "[2001:db8::1]" }, "dst", /IPv6/],
    [{ dst: "2001:db8::/32" }, "dst", /IPv6/],
    [{ dst: "10.0.0.1/33", ...tcp }, "dst", /invalid prefix length/],
    [{ dst: "10.0.0.0/", ...tcp }, "dst", /invalid prefix length/],
    [{ dst: "10.0.0.0/08", ...tcp }, "dst", /invalid prefix length/],
    [
      { dst: "10.0.0.1/8", ...tcp },
      "dst",
      /host bits set: write the network 10\.0\.0\.0\/8 or the address 10\.0\.0\.1/,
    ],
    [{ dst: "256.1.1.1", ...tcp }, "dst", /octets are 0-255/],
    [{ dst: "01.2.3.4", ...tcp }, "dst", /leading zero in "01"/],
    [{ dst: "1.2.3", ...tcp }, "dst", /not an IPv4 address/],
    [{ dst: "1.2.3.4.5", ...tcp }, "dst", /not an IPv4 address/],
    [{ dst: "example.123" }, "dst", /last label is all digits/],
    [{ dst: "0.0.0.0/0", ...tcp }, "dst", /admits every IPv4 address/],
    [{ dst: "a.test", port: "0" }, "port", /0 is out of range/],
    [{ dst: "a.test", port: "65536" }, "port", /65536 is out of range/],
    [{ dst: "a.test", port: "99999999999999999999" }, "port", /out of range/],
    [{ dst: "a.test", proto: "tcp", port: "80-70" }, "port", /range 80-70 is reversed \(write 70-80\)/],
    [{ dst: "a.test", proto: "tcp", port: "0-70" }, "port", /0 is out of range/],
    [{ dst: "a.test", port: "1000-2000" }, "port", /ranges are for opaque protocols .* https takes one port/],
    [{ dst: "a.test", proto: "ssh", port: "22-23" }, "port", /ssh takes one port/],
    [{ dst: "a.test", proto: "tcp", port: "1-65535" }, "port", /spans 65535 ports; at most 1024/],
    [{ dst: "a.test", proto: "udp", port: "1000-2024" }, "port", /spans 1025 ports/],
    [{ dst: "a.test", port: "http" }, "port", /neither a port/],
    [{ dst: "a.test", port: " 443" }, "port", /neither a port/],
    [{ dst: "a.test", port: "-1" }, "port", /neither a port/],
    [{ dst: "a.test", proto: "tcp" }, "port", /is required for tcp/],
    [{ dst: "a.test", proto: "udp" }, "port", /is required for udp/],
    [{ dst: "a.test", proto: "h t t p" }, "proto", /not a protocol name/],
    [{ dst: "a.test", proto: "1tcp" }, "proto", /not a protocol name/],
    [{ dst: "a.test", proto: long(33) }, "proto", /not a protocol name/],
    [{ dst: "a.test", proto: "\u212Aafka" }, "proto", /not a protocol name/],
    [{ dst: "a.test", action: "permit" }, "action", /not an action \(allow or deny\)/],
    [{ dst: "a.test", pathDefault: "maybe" }, "path_default", /not an action/],
    [
      { dst: "a.test", pathRules: [{ path: "~/(a)\\1" }] },
      "path_rules[0].path",
      /not a valid RE2 expression: invalid escape sequence/,
    ],
    [
      { dst: "a.test", pathRules: [{ path: "~/(?=admin)" }] },
      "path_rules[0].path",
      /not a valid RE2 expression/,
    ],
    [
      { dst: "a.test", pathRules: [{ path: "~/(?<=a)b" }] },
      "path_rules[0].path",
      /not a valid RE2 expression/,
    ],
    [{ dst: "a.test", pathRules: [{ path: "~/a{1001}" }] }, "path_rules[0].path", /invalid repeat count/],
    [{ dst: "a.test", pathRules: [{ path: "~[" }] }, "path_rules[0].path", /missing closing \]/],
    [
      { dst: "a.test", pathRules: [{ path: "~" }] },
      "path_rules[0].path",
      /must be followed by an RE2 expression/,
    ],
    [{ dst: "a.test", pathRules: [{ path: "~/a b" }] }, "path_rules[0].path", /whitespace/],
    [{ dst: "a.test", pathRules: [{ path: "" }] }, "path_rules[0].path", /is required/],
    [{ dst: "a.test", pathRules: [{ path: "api" }] }, "path_rules[0].path", /must start with "\/"/],
    [{ dst: "a.test", pathRules: [{ path: "/a b" }] }, "path_rules[0].path", /whitespace/],
    [{ dst: "a.test", pathRules: [{ path: "/caf\u00e9" }] }, "path_rules[0].path", /non-ASCII/],
    [{ dst: "a.test", pathRules: [{ path: "/a?x=1" }] }, "path_rules[0].path", /not a query/],
    [{ dst: "a.test", pathRules: [{ path: "/a#top" }] }, "path_rules[0].path", /not a query or fragment/],
    [
      { dst: "a.test", pathRules: [{ path: "/a/../secret" }] },
      "path_rules[0].path",
      /"\." or "\.\." segment/,
    ],
    [{ dst: "a.test", pathRules: [{ path: "/a/%2e%2E/secret" }] }, "path_rules[0].path", /"\.\." segment/],
    [{ dst: "a.test", pathRules: [{ path: "/a/./b" }] }, "path_rules[0].path", /segment/],
    [{ dst: "a.test", pathRules: [{ path: "/a//b" }] }, "path_rules[0].path", /empty segment/],
    [
      { dst: "a.test", pathRules: [{ path: "/a%zz" }] },
      "path_rules[0].path",
      /not followed by two hex digits/,
    ],
    [{ dst: "a.test", pathRules: [{ path: `/${long(1024)}` }] }, "path_rules[0].path", /longer than 1024/],
    [
      { dst: "a.test", pathRules: [{ path: "/a", action: "block" }] },
      "path_rules[0].action",
      /not an action/,
    ],
    [
      { dst: "a.test", pathRules: [{ path: "/a", methods: ["get", "FOO"] }] },
      "path_rules[0].methods[1]",
      /"FOO" is not a known HTTP method/,
    ],
    [
      { dst: "a.test", pathRules: [{ path: "/a", methods: [""] }] },
      "path_rules[0].methods[0]",
      /not a known HTTP method/,
    ],
    [
      { dst: "a.test", pathRules: [{ path: "/a", methods: ["G\u0131T"] }] },
      "path_rules[0].methods[0]",
      /not a known/,
    ],
    [
      { dst: "a.test", pathRules: [{ path: "/a", methods: ["DELTE"] }] },
      "path_rules[0].methods[0]",
      /not a known/,
    ],
    [
      { dst: "a.test", pathRules: [{ path: "/a" }, { path: "/a", action: "deny" }] },
      "path_rules[1].path",
      /repeats path_rules\[0\]/,
    ],
    [{ dst: "a.test", pathRules: [{ path: "/A%2f" }, { path: "/A%2F" }] }, "path_rules[1].path", /repeats/],
    [
      { dst: "a.test", pathRules: Array.from({ length: 257 }, (_, i) => ({ path: `/p${i}` })) },
      "path_rules",
      /at most 256/,
    ],
    [
      { dst: "a.test", proto: "tcp", port: "22", pathRules: [{ path: "/a" }] },
      "path_rules",
      /apply only to http, https, ws and wss, not tcp/,
    ],
    [{ dst: "a.test", proto: "ssh", pathDefault: "deny" }, "path_default", /not ssh/],
    [
      { dst: "a.test", proto: "http", insecureSkipTlsVerify: true },
      "insecure_skip_tls_verify",
      /only to https and wss/,
    ],
    [{ dst: "a.test", floor: true }, "floor", /output only/],
    [{ dst: "a.test", project: "we.b" }, "project", /not a name/],
    [{ dst: "a.test", project: "-web" }, "project", /not a name/],
    [{ dst: "a.test", project: "web", agentName: long(65) }, "agent_name", /longer than 64/],
    [{ dst: "a.test", agentName: "d\u00e9v" }, "agent_name", /not a name/],
  ];
  for (const [input, field, message] of cases) {
    const check = checkRule(input, 7);
    assert.equal(check.ok, false, `${JSON.stringify(input)} should be invalid`);
    if (check.ok) continue;
    const problem = check.problems.find((p) => p.field === field);
    assert.ok(problem, `${JSON.stringify(input)}: no problem on ${field}: ${JSON.stringify(check.problems)}`);
    assert.equal(problem.index, 7);
    assert.match(problem.message, message, `${JSON.stringify(input)}`);
  }
});

void test("every problem of every rule is reported, each with its index and field", () => {
  const inputs: RuleInput[] = [
    { dst: "ok.test" },
    { dst: "", port: "0", action: "x" },
    { dst: "fine.test" },
    { dst: "a.test", pathRules: [{ path: "~(a)\\1", methods: ["FOO"] }] },
  ];
  let thrown: unknown;
  try {
    canonicalRules(inputs);
  } catch (err) {
    thrown = err;
  }
  assert.ok(thrown instanceof InvalidRuleError);
  assert.equal(thrown.reason, "invalid_rule");
  assert.deepEqual(
    thrown.problems.map((p) => `${p.index}:${p.field}`),
    ["1:dst", "1:port", "1:action", "3:path_rules[0].path", "3:path_rules[0].methods[0]"],
  );
  assert.match(thrown.message, /^invalid rule: rules\[1\]\.dst: is required/);
  assert.match(
    thrown.message,
    /rules\[3\]\.path_rules\[0\]\.path: "~\(a\)\\\\1" is not a valid RE2 expression/,
  );
  const st = firewallStatus(thrown);
  assert.equal(st.code, status.INVALID_ARGUMENT);
  assert.equal(st.details, thrown.message);
});

void test("the message lists the first five problems and counts the rest", () => {
  const inputs = Array.from({ length: 8 }, () => ({ dst: "" }));
  assert.throws(
    () => canonicalRules(inputs),
    (err: unknown) => {
      assert.ok(err instanceof InvalidRuleError);
      assert.equal(err.problems.length, 8);
      assert.match(err.message, /rules\[4\]\.dst: is required \([^)]*\) \(and 3 more\)$/);
      return true;
    },
  );
});

void test("a problem message quotes the caller's text so it cannot forge more message", () => {
  const check = checkRule({ dst: 'a"; rules[0].dst: fine\n' }, 0);
  assert.ok(!check.ok);
  assert.match(check.problems[0]!.message, /^"a\\"; rules\[0\]\.dst: fine\\n" contains whitespace/);
});

void test("an unanchored RE2 expression must match the whole path: anchoredPattern wraps it", () => {
  const rule = valid({ dst: "a.test", pathRules: [{ path: "~/api/v[0-9]+" }] });
  const pattern = anchoredPattern(rule.pathRules[0]!.path);
  assert.equal(pattern, "^(?:/api/v[0-9]+)$");
  // Alternation stays inside the group: "^a|b$" would anchor only one side.
  assert.equal(anchoredPattern("~/a|/b"), "^(?:/a|/b)$");
  assert.equal(anchoredPattern("/literal"), undefined);
});

void test("keys, spans, kinds and the wire form of a canonical rule", () => {
  const rule = valid({
    dst: "Example.com",
    proto: "tcp",
    port: "8000-8100",
    project: "web",
    agentName: "dev",
  });
  assert.equal(ruleKey(rule), "agent:web.dev example.com:tcp:8000-8100");
  assert.equal(describeKey(rule), "example.com:tcp:8000-8100 (agent web.dev)");
  assert.deepEqual(portSpan(rule.port), [8000, 8100]);
  assert.deepEqual(portSpan("443"), [443, 443]);
  assert.equal(dstKind("example.com1"), "domain");
  assert.equal(dstKind("*.example.com"), "wildcard");
  assert.equal(dstKind("10.1.2.3"), "ipv4");
  assert.equal(dstKind("10.0.0.0/8"), "cidr");
  assert.deepEqual(ruleToWire(rule), {
    dst: "example.com",
    proto: "tcp",
    port: "8000-8100",
    action: "allow",
    pathRules: [],
    pathDefault: "",
    insecureSkipTlsVerify: false,
    project: "web",
    agentName: "dev",
    floor: false,
  });
  const wire = ruleToWire(valid({ dst: "a.test", agentName: "solo" }), true);
  assert.deepEqual([wire.project, wire.agentName, wire.floor], ["", "solo", true]);
  // The wire form validates back to the same rule.
  assert.deepEqual(valid(ruleToWire(rule)), rule);
});

void test("remove selectors canonicalise like add, so any spelling finds the stored rule", () => {
  const stored = valid({ dst: "example.com" });
  const id = canonicalIdentity({ dst: "EXAMPLE.com.", proto: "", port: "" });
  assert.equal(ruleKey(id), ruleKey(stored));
  assert.equal(canonicalRemovePath("/a%2fb"), "/a%2Fb");
  assert.throws(
    () => canonicalIdentity({ dst: "a..b", proto: "tcp" }),
    (err: unknown) =>
      err instanceof InvalidRuleError &&
      err.problems.map((p) => `${p.index}:${p.field}`).join() === "undefined:dst,undefined:port" &&
      /^invalid rule: dst: "a\.\.b" has an empty label; port: is required for tcp/.test(err.message),
  );
  assert.throws(() => canonicalRemovePath("nope"), InvalidRuleError);
});
