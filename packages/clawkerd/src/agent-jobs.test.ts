// Job limits against the agent's own (table), and agentLimitsOf on this host.
import assert from "node:assert/strict";
import { test } from "node:test";
import { checkWithinAgent, NO_LIMITS } from "./agent-jobs.js";
import { ClawkerdError } from "./errors.js";
import { agentLimitsOf } from "./job-cgroup.js";

void test("a job may not ask for more CPU or memory than its agent has", () => {
  const agent = { cpuMillis: 500, memoryMaxBytes: 256 << 20 };
  const ok = [NO_LIMITS, { ...NO_LIMITS, cpuMillis: 500 }, { ...NO_LIMITS, memoryMaxBytes: 128 << 20 }];
  for (const l of ok) assert.doesNotThrow(() => checkWithinAgent(l, agent));
  const above: Array<[typeof NO_LIMITS, RegExp]> = [
    [{ ...NO_LIMITS, cpuMillis: 1000 }, /cpu limit 1 CPUs is above the agent's 0\.5/],
    [
      { ...NO_LIMITS, memoryMaxBytes: 512 << 20 },
      /memory limit 536870912 bytes is above the agent's 268435456/,
    ],
  ];
  for (const [l, message] of above) {
    assert.throws(
      () => checkWithinAgent(l, agent),
      (e: unknown) => e instanceof ClawkerdError && e.reason === "invalid_request" && message.test(e.message),
    );
  }
  // An agent without limits of its own (0) allows anything.
  assert.doesNotThrow(() =>
    checkWithinAgent({ ...NO_LIMITS, cpuMillis: 64_000 }, { cpuMillis: 0, memoryMaxBytes: 0 }),
  );
});

void test("agentLimitsOf reads a number or 0 for each, never NaN", () => {
  const l = agentLimitsOf();
  assert.ok(Number.isFinite(l.cpuMillis) && l.cpuMillis >= 0);
  assert.ok(Number.isFinite(l.memoryMaxBytes) && l.memoryMaxBytes >= 0);
});
