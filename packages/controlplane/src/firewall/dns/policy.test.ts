import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { InvalidPolicyError } from "./errors.js";
import { compilePolicy, type DnsPolicy, type DnsRule, type PolicyVerdict } from "./policy.js";

const upstreams = [{ address: "127.0.0.1", port: 5353 }];
const clients = [
  { address: "10.0.0.2", project: "web", agent: "dev" },
  { address: "10.0.0.3", project: "web", agent: "ops" },
  { address: "10.0.0.4", project: "api", agent: "dev" },
  { address: "10.0.0.5", project: "", agent: "solo" },
];

const global = { kind: "global", name: "" } as const;
const project = (name: string) => ({ kind: "project", name }) as const;
const agent = (name: string) => ({ kind: "agent", name }) as const;
const allow = (pattern: string, identity: number, scope: DnsRule["scope"] = global): DnsRule => ({
  scope,
  pattern,
  action: "allow",
  identity,
});
const deny = (pattern: string, scope: DnsRule["scope"] = global): DnsRule => ({
  scope,
  pattern,
  action: "deny",
});

function decide(rules: DnsRule[], from: string, name: string): PolicyVerdict {
  const policy = compilePolicy({ rules, clients, upstreams } satisfies DnsPolicy);
  const caller = policy.caller(from);
  assert.ok(caller !== undefined, from);
  return policy.decide(caller, name);
}

/** "allow:<identity>@<pattern>", "deny@<pattern>" or "none". */
function short(v: PolicyVerdict): string {
  if (v.allowed) return `allow:${v.identity}@${v.rule.pattern}`;
  return v.reason === "rule_deny" ? `deny@${v.rule.pattern}` : "none";
}

describe("DNS policy matching", () => {
  const cases: { what: string; rules: DnsRule[]; from?: string; name: string; want: string }[] = [
    {
      what: "exact name",
      rules: [allow("example.test", 1)],
      name: "example.test",
      want: "allow:1@example.test",
    },
    {
      what: "exact does not cover below",
      rules: [allow("example.test", 1)],
      name: "a.example.test",
      want: "none",
    },
    {
      what: "wildcard, one label below",
      rules: [allow("*.example.test", 2)],
      name: "a.example.test",
      want: "allow:2@*.example.test",
    },
    {
      what: "wildcard, two labels below",
      rules: [allow("*.example.test", 2)],
      name: "a.b.example.test",
      want: "allow:2@*.example.test",
    },
    {
      what: "wildcard covers its parent (as the proxy and the Go control plane)",
      rules: [allow("*.example.test", 2)],
      name: "example.test",
      want: "allow:2@*.example.test",
    },
    {
      what: "wildcard does not cover its parent's parent",
      rules: [allow("*.example.test", 2)],
      name: "test",
      want: "none",
    },
    {
      what: "an exact deny of the parent beats the wildcard",
      rules: [allow("*.example.test", 2), deny("example.test")],
      name: "example.test",
      want: "deny@example.test",
    },
    {
      what: "the exact deny of the parent leaves the names below allowed",
      rules: [allow("*.example.test", 2), deny("example.test")],
      name: "a.example.test",
      want: "allow:2@*.example.test",
    },
    {
      what: "an exact allow of the parent beats a denied wildcard",
      rules: [deny("*.example.test"), allow("example.test", 1)],
      name: "example.test",
      want: "allow:1@example.test",
    },
    {
      what: "a denied wildcard denies its parent",
      rules: [allow("*.example.test", 2), deny("*.internal.example.test")],
      name: "internal.example.test",
      want: "deny@*.internal.example.test",
    },
    {
      what: "suffix trick refused",
      rules: [allow("*.example.test", 2)],
      name: "example.test.evil.test",
      want: "none",
    },
    { what: "label boundary", rules: [allow("*.example.test", 2)], name: "evilexample.test", want: "none" },
    {
      what: "longest wins: deny below an allow",
      rules: [allow("*.example.test", 2), deny("*.internal.example.test")],
      name: "db.internal.example.test",
      want: "deny@*.internal.example.test",
    },
    {
      what: "longest wins: allow below a deny",
      rules: [deny("*.example.test"), allow("api.example.test", 3)],
      name: "api.example.test",
      want: "allow:3@api.example.test",
    },
    {
      what: "exact beats a wildcard over the same parent",
      rules: [allow("*.example.test", 2), deny("a.example.test")],
      name: "a.example.test",
      want: "deny@a.example.test",
    },
    {
      what: "deny beats allow at equal length (same scope)",
      rules: [allow("*.example.test", 2), deny("*.example.test")],
      name: "x.example.test",
      want: "deny@*.example.test",
    },
    {
      what: "deny beats allow at equal length (project deny over global allow)",
      rules: [allow("*.example.test", 2), deny("*.example.test", project("web"))],
      name: "x.example.test",
      want: "deny@*.example.test",
    },
    {
      what: "deny beats allow at equal length (global deny over agent allow)",
      rules: [deny("*.example.test"), allow("*.example.test", 2, agent("web.dev"))],
      name: "x.example.test",
      want: "deny@*.example.test",
    },
    {
      what: "another project's deny does not apply",
      rules: [allow("*.example.test", 2), deny("*.example.test", project("api"))],
      name: "x.example.test",
      want: "allow:2@*.example.test",
    },
    {
      what: "longer global allow beats shorter agent deny",
      rules: [deny("*.example.test", agent("web.dev")), allow("a.example.test", 4)],
      name: "a.example.test",
      want: "allow:4@a.example.test",
    },
    {
      what: "project rule applies to its agents",
      rules: [allow("pkg.test", 5, project("web"))],
      from: "10.0.0.3",
      name: "pkg.test",
      want: "allow:5@pkg.test",
    },
    {
      what: "project isolation",
      rules: [allow("pkg.test", 5, project("api"))],
      name: "pkg.test",
      want: "none",
    },
    {
      what: "agent rule: not for its sibling",
      rules: [allow("pkg.test", 5, agent("web.ops"))],
      name: "pkg.test",
      want: "none",
    },
    {
      what: "agent rule: same short name in another project does not match",
      rules: [allow("pkg.test", 5, agent("api.dev"))],
      name: "pkg.test",
      want: "none",
    },
    {
      what: "agent without a project",
      rules: [allow("pkg.test", 5, agent("solo"))],
      from: "10.0.0.5",
      name: "pkg.test",
      want: "allow:5@pkg.test",
    },
    {
      what: "a pattern with no rule for the caller falls through to a shorter one",
      rules: [allow("*.example.test", 2), deny("*.a.example.test", project("api"))],
      name: "x.a.example.test",
      want: "allow:2@*.example.test",
    },
    { what: "single-label name", rules: [allow("postgres", 6)], name: "postgres", want: "allow:6@postgres" },
  ];
  for (const c of cases) {
    test(c.what, () => {
      assert.equal(short(decide(c.rules, c.from ?? "10.0.0.2", c.name)), c.want);
    });
  }

  test("an allow reports the most specific scope's rule", () => {
    const v = decide([allow("pkg.test", 5), allow("pkg.test", 5, agent("web.dev"))], "10.0.0.2", "pkg.test");
    assert.ok(v.allowed);
    assert.deepEqual(v.rule.scope, { kind: "agent", name: "web.dev" });
  });

  test("unknown source addresses have no caller", () => {
    const policy = compilePolicy({ rules: [allow("a.test", 1)], clients, upstreams });
    assert.equal(policy.caller("10.0.0.9"), undefined);
    assert.equal(policy.callerCount, 4);
  });

  test("defaults for TTL, rate limit and upstream timeout", () => {
    const { settings } = compilePolicy({ rules: [], clients: [], upstreams: [{ address: "127.0.0.1" }] });
    assert.deepEqual(settings.ttl, { floor: 30, ceiling: 3_600 });
    assert.deepEqual(settings.rateLimit, { queriesPerSecond: 200, burst: 400 });
    assert.equal(settings.upstreamTimeoutMs, 2_000);
    assert.deepEqual(settings.upstreams, [{ address: "127.0.0.1", port: 53 }]);
  });
});

describe("DNS policy validation", () => {
  function problems(input: unknown): string[] {
    try {
      compilePolicy(input);
    } catch (err) {
      assert.ok(err instanceof InvalidPolicyError, String(err));
      assert.equal(err.reason, "invalid_policy");
      return err.problems.map((p) => `${p.path}: ${p.message}`);
    }
    assert.fail("policy was accepted");
  }

  test("lists every problem, with where it is", () => {
    const got = problems({
      rules: [
        allow("Example.test", 1),
        allow("*.com", 2),
        allow("10.0.0.1", 3),
        allow("example.test.", 4),
        { scope: global, pattern: "a.test", action: "allow" },
        allow("b.test", 5),
        allow("b.test", 6, project("web")),
        allow("c.test", 7, project("we b")),
        allow("d.test", 8, agent("a.b.c")),
        allow("e.test", 9, { kind: "global", name: "x" }),
        allow("*.*.test", 10),
        allow("*.a.b.c.d.e.f.g.h.test", 11),
      ],
      clients: [
        { address: "10.0.0.2", project: "web", agent: "dev" },
        { address: "10.0.0.2", project: "web", agent: "ops" },
        { address: "10.0.0.3", project: "", agent: "" },
        { address: "10.0.0.4", project: "a.b", agent: "x" },
      ],
      upstreams,
      ttl: { floor: 60, ceiling: 30 },
    });
    const want = [
      /^rules\[0\]\.pattern: "Example\.test" is not a canonical name/,
      /^rules\[1\]\.pattern: "\*\.com" is a wildcard over a single label/,
      /^rules\[2\]\.pattern: "10\.0\.0\.1" ends in an all-digit label/,
      /^rules\[3\]\.pattern: "example\.test\." is not a canonical name/,
      /^rules\[4\]\.identity: is required for an allow rule/,
      /^rules\[6\]\.identity: 6 differs from 5 given for "b\.test" in rules\[5\]/,
      /^rules\[7\]\.scope\.name: "we b" is not a project name/,
      /^rules\[8\]\.scope\.name: "a\.b\.c" is not <project>\.<agent> or <agent>/,
      /^rules\[9\]\.scope\.name: a global scope has no name/,
      /^rules\[10\]\.pattern: "\*\.\*\.test" is not a canonical name/,
      // The proxy's lookups stop at 8 labels: one meaning on both layers (name-match.ts).
      /^rules\[11\]\.pattern: "\*\.a\.b\.c\.d\.e\.f\.g\.h\.test" is a wildcard over more than 8 labels/,
      /^clients\[1\]\.address: 10\.0\.0\.2 is listed twice/,
      /^clients\[2\]\.agent: is required/,
      /^clients\[3\]\.project: "a\.b" is not a project name/,
      /^ttl: floor 60 is above ceiling 30/,
    ];
    for (const w of want)
      assert.ok(
        got.some((g) => w.test(g)),
        `${w} in ${JSON.stringify(got, null, 1)}`,
      );
    assert.equal(got.length, want.length, JSON.stringify(got, null, 1));
  });

  test("schema problems: unknown fields, types, bounds, no upstream", () => {
    const got = problems({
      rules: [{ scope: global, pattern: "a.test", action: "permit", identity: 0, extra: true }],
      clients: [{ address: "10.0.0.256", project: "", agent: "a" }],
      upstreams: [],
      ttl: { floor: 0 },
      rateLimit: { burst: 0 },
      surprise: 1,
    });
    const joined = got.join("\n");
    for (const where of [
      "rules[0].action",
      "rules[0].identity",
      "rules[0]:",
      "clients[0].address",
      "upstreams",
      "ttl.floor",
      "rateLimit.burst",
    ]) {
      assert.ok(joined.includes(where), `${where} in ${joined}`);
    }
    assert.ok(/surprise/.test(joined), joined);
  });

  test("a deny needs no identity; an allow and a deny of one pattern in one scope merge to deny", () => {
    const policy = compilePolicy({
      rules: [allow("a.test", 1), deny("a.test"), deny("a.test")],
      clients,
      upstreams,
    });
    assert.equal(policy.ruleCount, 1);
    assert.equal(short(policy.decide(policy.caller("10.0.0.2")!, "a.test")), "deny@a.test");
  });
});
