// Container modes with real timers: a bypass ends by itself and hands enforcement back to the
// enforcer, enforce() ends it early, clear() leaves no timer, bad durations are refused.
import assert from "node:assert/strict";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { ContainerModes, type ContainerMode, type ModeEnforcer } from "./container-modes.js";
import { FirewallError } from "./errors.js";

const log = pino({ level: "silent" });

function recordingEnforcer(answer: boolean): ModeEnforcer & { calls: Array<[string, ContainerMode]> } {
  const calls: Array<[string, ContainerMode]> = [];
  return {
    calls,
    apply: (id, mode) => {
      calls.push([id, mode]);
      return Promise.resolve(answer);
    },
  };
}

async function until(condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("timed out");
    await sleep(20);
  }
}

void test("a bypass ends by itself: listed with its time left, then enforced again", async () => {
  const enforcer = recordingEnforcer(true);
  const modes = new ContainerModes({ log, enforcer });
  assert.equal(await modes.bypass("c1", 1), true);
  assert.deepEqual(modes.list(), [{ containerId: "c1", mode: "bypass", secondsLeft: 1, enforced: true }]);
  await until(() => modes.list().length === 0);
  await until(() => enforcer.calls.length === 2);
  assert.deepEqual(enforcer.calls, [
    ["c1", "bypass"],
    ["c1", "enforced"],
  ]);
});

void test("without an enforcer a mode is recorded, never claimed as enforced", async () => {
  const modes = new ContainerModes({ log });
  assert.equal(await modes.disable("c2"), false);
  assert.deepEqual(modes.list(), [{ containerId: "c2", mode: "disabled", secondsLeft: 0, enforced: false }]);
  assert.equal(await modes.enforce("c2"), false);
  assert.deepEqual(modes.list(), []);
});

void test("enforce() ends a bypass early; clear() cancels every timer; forget() drops a gone container", async () => {
  const enforcer = recordingEnforcer(true);
  const now = { t: 1_000_000 };
  const modes = new ContainerModes({ log, enforcer, now: () => now.t });
  await modes.bypass("a", 3600);
  now.t += 1_500;
  assert.equal(modes.list()[0]!.secondsLeft, 3599, "rounded up");
  await modes.enforce("a");
  assert.deepEqual(modes.list(), []);
  await modes.bypass("b", 3600);
  await modes.bypass("c", 3600);
  modes.forget("b");
  assert.deepEqual(
    modes.list().map((m) => m.containerId),
    ["c"],
  );
  modes.clear();
  assert.deepEqual(modes.list(), []);
  // Nothing left to fire: the process would exit now (timers are cleared, and unref'd anyway).
  assert.equal(
    process.getActiveResourcesInfo().filter((r) => r === "Timeout").length,
    0,
    "no bypass timer left behind",
  );
});

void test("a bypass is 1 to 3600 seconds", async () => {
  const modes = new ContainerModes({ log });
  for (const seconds of [0, -1, 3601, 1.5]) {
    await assert.rejects(
      modes.bypass("x", seconds),
      (err: unknown) => err instanceof FirewallError && err.reason === "invalid_request",
      String(seconds),
    );
  }
  assert.deepEqual(modes.list(), []);
});
