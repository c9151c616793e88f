import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ProxyError } from "./errors.js";
import {
  checkPolicy,
  isCidr4,
  normalizeName,
  parseDst,
  type ProxyEntry,
  type ProxyPolicy,
} from "./policy.js";

const limits = { routePorts: new Set([16000, 16001]) };
const base: ProxyEntry = {
  ruleId: "r1",
  scope: { kind: "global" },
  kind: "tls-passthrough",
  action: "allow",
  dst: "a.example.com",
  port: 443,
};
const policyOf = (...entries: ProxyEntry[]): ProxyPolicy => ({ entries, sources: [], forbidden: [] });

function problems(policy: ProxyPolicy): string {
  try {
    checkPolicy(policy, limits);
  } catch (err) {
    assert.ok(err instanceof ProxyError);
    assert.equal(err.reason, "invalid_policy");
    return err.message;
  }
  return "";
}

describe("parseDst", () => {
  const cases: [string, ReturnType<typeof parseDst>][] = [
    ["Api.Example.COM.", { form: "name", value: "api.example.com" }],
    ["*.example.com", { form: "wildcard", value: "*.example.com" }],
    ["10.1.2.3", { form: "ipv4", value: "10.1.2.3" }],
    ["10.1.0.0/16", { form: "cidr", value: "10.1.0.0/16" }],
    ["10.1.0.1/16", undefined], // host bits set
    ["010.1.2.3", undefined],
    ["exa mple.com", undefined],
    ["a..b", undefined],
    ["*.*.example.com", undefined],
    ["example.123", undefined],
    ["-a.example.com", undefined],
    ["", undefined],
  ];
  for (const [input, want] of cases) {
    test(JSON.stringify(input), () => assert.deepEqual(parseDst(input), want));
  }
  test("helpers", () => {
    assert.equal(normalizeName("x".repeat(64) + ".com"), undefined);
    assert.equal(isCidr4("0.0.0.0/0"), true);
    assert.equal(isCidr4("10.0.0.0/33"), false);
  });
});

describe("checkPolicy", () => {
  test("normalizes what it accepts", () => {
    const checked = checkPolicy(
      policyOf(
        { ...base, dst: "A.Example.com." },
        {
          ...base,
          ruleId: "r2",
          kind: "http",
          dst: "*.example.com",
          port: 80,
          pathRules: [{ path: "/x", action: "deny", methods: ["get", "HEAD", "GET"] }],
          pathDefault: "allow",
        },
        { ...base, ruleId: "r3", kind: "tcp", dst: "10.0.0.0/8", port: 22, listener: 16000 },
      ),
      limits,
    );
    assert.equal(checked.entries[0]?.dst, "a.example.com");
    assert.equal(checked.entries[0]?.pathDefault, "allow");
    assert.deepEqual(checked.entries[1]?.pathRules, [
      { path: "/x", action: "deny", methods: ["GET", "HEAD"] },
    ]);
    assert.equal(checked.entries[2]?.dstForm, "cidr");
  });

  const rejected: [string, ProxyPolicy, RegExp][] = [
    ["a ruleId that could split a map value", policyOf({ ...base, ruleId: "a|b" }), /entries\[0\]\.ruleId/],
    ["a ruleId with a space", policyOf({ ...base, ruleId: "a b" }), /entries\[0\]\.ruleId/],
    [
      "an agent name with a slash",
      policyOf({ ...base, scope: { kind: "agent", agent: "a/b" } }),
      /entries\[0\]\.scope\.agent/,
    ],
    ["a bad destination", policyOf({ ...base, dst: "a b" }), /entries\[0\]\.dst: not a DNS name/],
    ["an address for TLS", policyOf({ ...base, dst: "1.2.3.4" }), /need kind tcp/],
    ["tcp without listener", policyOf({ ...base, kind: "tcp" }), /listener: required/],
    [
      "tcp on a port that is no route listener",
      policyOf({ ...base, kind: "tcp", listener: 9 }),
      /not one of the proxy's route listener ports/,
    ],
    [
      "a listener on a TLS entry",
      policyOf({ ...base, listener: 16000 }),
      /only kind tcp has a route listener/,
    ],
    [
      "path rules on passthrough",
      policyOf({ ...base, pathRules: [{ path: "/x", action: "allow" }], pathDefault: "deny" }),
      /only kinds http and tls-intercept see paths/,
    ],
    [
      "path rules without a default",
      policyOf({ ...base, kind: "http", pathRules: [{ path: "/x", action: "allow" }] }),
      /pathDefault: required/,
    ],
    [
      "a path with a space",
      policyOf({
        ...base,
        kind: "http",
        pathRules: [{ path: "/a b", action: "allow" }],
        pathDefault: "deny",
      }),
      /whitespace/,
    ],
    [
      "a path without / or ~",
      policyOf({ ...base, kind: "http", pathRules: [{ path: "x", action: "allow" }], pathDefault: "deny" }),
      /must start with/,
    ],
    [
      "a broken regex",
      policyOf({
        ...base,
        kind: "http",
        pathRules: [{ path: "~/(a", action: "allow" }],
        pathDefault: "deny",
      }),
      /not a valid regular expression/,
    ],
    [
      "a method with a space",
      policyOf({
        ...base,
        kind: "http",
        pathRules: [{ path: "/", action: "allow", methods: ["GE T"] }],
        pathDefault: "deny",
      }),
      /methods/,
    ],
    [
      "a duplicate path",
      policyOf({
        ...base,
        kind: "http",
        pathRules: [
          { path: "/", action: "allow" },
          { path: "/", action: "deny" },
        ],
        pathDefault: "deny",
      }),
      /duplicate path/,
    ],
    ["insecure on passthrough", policyOf({ ...base, insecureSkipTlsVerify: true }), /insecureSkipTlsVerify/],
    ["a wildcard too deep", policyOf({ ...base, dst: "*.a.b.c.d.e.f.g.h.i" }), /at most 8 labels/],
    ["a wildcard over one label", policyOf({ ...base, dst: "*.com" }), /needs at least two labels/],
    [
      "two entries for one key (both TLS kinds share the SNI)",
      policyOf(base, { ...base, ruleId: "r2", kind: "tls-intercept" }),
      /same scope, kind, port and destination as entries\[0\]/,
    ],
    [
      "a bad source",
      { entries: [], sources: [{ address: "10.0.0.1/8" }], forbidden: [] },
      /sources\[0\]\.address/,
    ],
    [
      "a duplicate source",
      { entries: [], sources: [{ address: "10.0.0.1" }, { address: "10.0.0.1" }], forbidden: [] },
      /duplicate/,
    ],
    ["a bad forbidden entry", { entries: [], sources: [], forbidden: ["localhost"] }, /forbidden\[0\]/],
    ["an unknown field", policyOf({ ...base, extra: 1 } as ProxyEntry), /entries\[0\]/],
  ];
  for (const [name, policy, want] of rejected) {
    test(`rejects ${name}`, () => assert.match(problems(policy), want));
  }

  test("lists every problem in one error", () => {
    const msg = problems(policyOf({ ...base, dst: "a b" }, { ...base, ruleId: "r2", kind: "tcp" }));
    assert.match(msg, /entries\[0\]\.dst/);
    assert.match(msg, /entries\[1\]\.listener/);
  });

  test("the same destination in different scopes, ports or kinds is fine", () => {
    checkPolicy(
      policyOf(
        base,
        { ...base, ruleId: "r2", scope: { kind: "agent", agent: "x" } },
        { ...base, ruleId: "r3", port: 8443 },
        { ...base, ruleId: "r4", kind: "http", port: 443 },
      ),
      limits,
    );
  });
});
