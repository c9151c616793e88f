import assert from "node:assert/strict";
import { test } from "node:test";
import { decisionJson, type DnsDecision } from "./decision.js";

const base: DnsDecision = {
  time: 1_767_000_000_123,
  client: "10.0.0.2",
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
  cached: true,
  error: undefined,
};

test("decisionJson is the text JSON.stringify gives", () => {
  const cases: DnsDecision[] = [
    base,
    { ...base, addresses: [], cached: false, rcode: "SERVFAIL", error: "cache_write_failed" },
    {
      ...base,
      agent: undefined,
      project: undefined,
      verdict: "denied",
      reason: "unknown_source",
      rule: undefined,
      identity: undefined,
      rcode: "REFUSED",
      addresses: [],
    },
    // An invalid name keeps its odd bytes (as latin1 text): they must come out escaped.
    { ...base, name: 'a"b\\c\u0001.\u00e9', verdict: "denied", reason: "invalid_name", rule: undefined },
    { ...base, project: "", agent: "solo", type: "TYPE65", transport: "tcp" },
  ];
  for (const d of cases) {
    assert.equal(decisionJson(d), JSON.stringify(d));
    assert.equal(decisionJson(d), JSON.stringify(d), "again, with the rule's JSON cached");
  }
});
