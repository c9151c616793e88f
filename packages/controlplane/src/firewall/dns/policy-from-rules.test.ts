import assert from "node:assert/strict";
import { test } from "node:test";
import type { ListedRule } from "../rule-store.js";
import { canonicalRules } from "../rule-validation.js";
import { dnsRulesFromListing } from "./policy-from-rules.js";

test("one DNS rule per scope and name: allow when any protocol or port is allowed; IP rules left out", () => {
  const rules = canonicalRules([
    { dst: "example.com", action: "deny" }, // https:443 denied...
    { dst: "example.com", proto: "ssh" }, // ...but ssh allowed: the name must resolve
    { dst: "*.evil.test", action: "deny" },
    { dst: "*.evil.test", proto: "http", action: "deny" },
    { dst: "pkg.test", project: "web" },
    { dst: "pkg.test", project: "web", agentName: "dev", action: "deny" },
    { dst: "10.0.0.0/8", proto: "tcp", port: "5432" },
    { dst: "10.1.2.3", proto: "tcp", port: "22" },
  ]);
  const identities: Record<string, number> = { "example.com": 1, "*.evil.test": 2, "pkg.test": 3 };
  const listing: ListedRule[] = rules.map((rule) => ({
    rule,
    floor: false,
    identity: identities[rule.dst] ?? 9,
  }));
  assert.deepEqual(dnsRulesFromListing(listing), [
    { scope: { kind: "global", name: "" }, pattern: "example.com", action: "allow", identity: 1 },
    { scope: { kind: "global", name: "" }, pattern: "*.evil.test", action: "deny" },
    { scope: { kind: "project", name: "web" }, pattern: "pkg.test", action: "allow", identity: 3 },
    { scope: { kind: "agent", name: "web.dev" }, pattern: "pkg.test", action: "deny" },
  ]);
});
