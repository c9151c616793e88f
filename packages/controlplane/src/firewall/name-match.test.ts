import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { MAX_WILDCARD_LABELS, matchingPatterns, wildcardDepth } from "./name-match.js";

describe("matchingPatterns: what a name can be matched by, most specific first", () => {
  const cases: [string, string[]][] = [
    // A wildcard covers its parent: `*.example.com` right after the exact name.
    ["example.com", ["example.com", "*.example.com"]],
    ["a.example.com", ["a.example.com", "*.a.example.com", "*.example.com"]],
    ["a.b.example.com", ["a.b.example.com", "*.a.b.example.com", "*.b.example.com", "*.example.com"]],
    // One label: nothing but the name (a wildcard over one label is never valid).
    ["localhost", ["localhost"]],
    // The label boundary is the dot.
    ["evilexample.com", ["evilexample.com", "*.evilexample.com"]],
    [
      "example.com.evil.org",
      ["example.com.evil.org", "*.example.com.evil.org", "*.com.evil.org", "*.evil.org"],
    ],
  ];
  for (const [name, want] of cases) {
    test(name, () => assert.deepEqual(matchingPatterns(name), want));
  }

  test(`parents of more than ${MAX_WILDCARD_LABELS} labels are skipped`, () => {
    const name = "a.b.c.d.e.f.g.h.i.j"; // 10 labels
    assert.deepEqual(matchingPatterns(name), [
      name,
      "*.c.d.e.f.g.h.i.j",
      "*.d.e.f.g.h.i.j",
      "*.e.f.g.h.i.j",
      "*.f.g.h.i.j",
      "*.g.h.i.j",
      "*.h.i.j",
      "*.i.j",
    ]);
    for (const p of matchingPatterns(name).slice(1)) assert.ok(wildcardDepth(p) <= MAX_WILDCARD_LABELS, p);
  });

  test("wildcardDepth", () => {
    assert.equal(wildcardDepth("example.com"), 0);
    assert.equal(wildcardDepth("*.example.com"), 2);
    assert.equal(wildcardDepth("*.a.b.c"), 3);
  });
});
