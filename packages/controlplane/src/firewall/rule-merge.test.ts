import assert from "node:assert/strict";
import { test } from "node:test";
import type { Rule, RuleInput } from "./rule.js";
import { compareRules, mergeRule, rulesEqual } from "./rule-merge.js";
import { canonicalRules } from "./rule-validation.js";

function rule(input: RuleInput): Rule {
  return canonicalRules([input])[0]!;
}

void test("merge follows API.md: caller wins on action, path_default only when set, path rules by path (table)", () => {
  const base: RuleInput = {
    dst: "a.test",
    action: "allow",
    pathDefault: "deny",
    pathRules: [
      { path: "/a", action: "allow" },
      { path: "/b", action: "deny" },
    ],
  };
  const cases: Array<[string, RuleInput, RuleInput, RuleInput]> = [
    ["same rule again", base, base, base],
    ["caller wins on action", base, { dst: "a.test", action: "deny" }, { ...base, action: "deny" }],
    [
      "no action given means allow, and the caller wins",
      { ...base, action: "deny" },
      { dst: "a.test" },
      base,
    ],
    ["empty path_default keeps the stored one", base, { dst: "a.test" }, base],
    [
      "a path_default replaces",
      base,
      { dst: "a.test", pathDefault: "allow" },
      { ...base, pathDefault: "allow" },
    ],
    [
      "path rules merge by path: a new path is added, a known path is replaced, the rest stay",
      base,
      {
        dst: "a.test",
        pathRules: [
          { path: "/c", action: "deny" },
          { path: "/b", action: "allow", methods: ["get"] },
        ],
      },
      {
        ...base,
        pathRules: [
          { path: "/a", action: "allow" },
          { path: "/b", action: "allow", methods: ["GET"] },
          { path: "/c", action: "deny" },
        ],
      },
    ],
    [
      "the caller wins on insecure_skip_tls_verify (re-adding without it turns verification back on)",
      { dst: "a.test", insecureSkipTlsVerify: true },
      { dst: "a.test" },
      { dst: "a.test" },
    ],
  ];
  for (const [name, existing, incoming, want] of cases) {
    const merged = mergeRule(rule(existing), rule(incoming));
    assert.deepEqual(merged, rule(want), name);
    assert.ok(rulesEqual(merged, rule(want)), `${name}: rulesEqual`);
  }
});

void test("rulesEqual sees every field, down to one method", () => {
  const a = rule({ dst: "a.test", pathRules: [{ path: "/x", methods: ["GET", "POST"] }] });
  const variants: RuleInput[] = [
    { dst: "a.test", pathRules: [{ path: "/x", methods: ["GET"] }] },
    { dst: "a.test", pathRules: [{ path: "/x", methods: ["GET", "PUT"] }] },
    { dst: "a.test", pathRules: [{ path: "/x", action: "deny", methods: ["GET", "POST"] }] },
    { dst: "a.test", pathRules: [{ path: "/y", methods: ["GET", "POST"] }] },
    { dst: "a.test", pathRules: [{ path: "/x", methods: ["GET", "POST"] }], pathDefault: "deny" },
    { dst: "a.test", pathRules: [{ path: "/x", methods: ["GET", "POST"] }], action: "deny" },
    { dst: "a.test", pathRules: [{ path: "/x", methods: ["GET", "POST"] }], project: "p" },
    { dst: "b.test", pathRules: [{ path: "/x", methods: ["GET", "POST"] }] },
    { dst: "a.test", port: "8443", pathRules: [{ path: "/x", methods: ["GET", "POST"] }] },
    { dst: "a.test", proto: "wss", pathRules: [{ path: "/x", methods: ["GET", "POST"] }] },
    { dst: "a.test", pathRules: [{ path: "/x", methods: ["GET", "POST"] }], insecureSkipTlsVerify: true },
  ];
  assert.ok(rulesEqual(a, rule({ dst: "A.test", pathRules: [{ path: "/x", methods: ["post", "get"] }] })));
  for (const v of variants) assert.equal(rulesEqual(a, rule(v)), false, JSON.stringify(v));
});

void test("canonical order: scope (global, projects, agents), then dst, proto, and port numerically", () => {
  const inputs: RuleInput[] = [
    { dst: "b.test", agentName: "dev", project: "web" },
    { dst: "a.test", project: "web" },
    { dst: "a.test", proto: "tcp", port: "8080" },
    { dst: "a.test", proto: "tcp", port: "1000-2000" },
    { dst: "a.test", proto: "tcp", port: "1000-1500" },
    { dst: "a.test", proto: "tcp", port: "80" },
    { dst: "a.test", port: "443" },
    { dst: "*.a.test" },
    { dst: "a.test", project: "api" },
    { dst: "10.0.0.0/8", proto: "tcp", port: "22" },
  ];
  const sorted = canonicalRules(inputs).sort(compareRules);
  assert.deepEqual(
    sorted.map((r) => `${r.scope.kind}:${r.scope.name} ${r.dst}:${r.proto}:${r.port}`),
    [
      "global: *.a.test:https:443",
      "global: 10.0.0.0/8:tcp:22",
      "global: a.test:https:443",
      "global: a.test:tcp:80",
      "global: a.test:tcp:1000-1500",
      "global: a.test:tcp:1000-2000",
      "global: a.test:tcp:8080",
      "project:api a.test:https:443",
      "project:web a.test:https:443",
      "agent:web.dev b.test:https:443",
    ],
  );
});
