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

void test("restoreAll() hands every bypassed or disabled container back to enforcement, even past a failure", async () => {
  const calls: Array<[string, ContainerMode]> = [];
  const enforcer: ModeEnforcer = {
    apply: (id, mode) => {
      calls.push([id, mode]);
      return id === "x" && mode === "enforced" ? Promise.reject(new Error("gone")) : Promise.resolve(true);
    },
  };
  const modes = new ContainerModes({ log, enforcer });
  await modes.bypass("x", 3600);
  await modes.disable("y");
  await modes.restoreAll();
  assert.deepEqual(modes.list(), []);
  assert.deepEqual(calls.slice(2), [
    ["x", "enforced"],
    ["y", "enforced"],
  ]);
  assert.equal(process.getActiveResourcesInfo().filter((r) => r === "Timeout").length, 0);
});

void test("a bypass hands its length to the enforcer, so the kernel can end it without us", async () => {
  const seen: Array<number | undefined> = [];
  const enforcer: ModeEnforcer = {
    apply: (_id, _mode, _signal, seconds) => {
      seen.push(seconds);
      return Promise.resolve(true);
    },
  };
  const modes = new ContainerModes({ log, enforcer });
  await modes.bypass("k", 42);
  await modes.disable("k");
  modes.clear();
  assert.deepEqual(seen, [42, undefined]);
});

void test("onBypassEnd hears every bypass's end with its cause, and nothing for a disable", async () => {
  const ends: Array<[string, string]> = [];
  const modes = new ContainerModes({ log, onBypassEnd: (id, cause) => ends.push([id, cause]) });
  await modes.bypass("e1", 1);
  await until(() => ends.length === 1);
  await modes.bypass("r1", 60);
  await modes.enforce("r1");
  await modes.bypass("g1", 60);
  modes.forget("g1");
  await modes.bypass("s1", 60);
  await modes.disable("d1");
  await modes.restoreAll();
  await modes.bypass("x1", 60);
  modes.clear();
  assert.deepEqual(ends, [
    ["e1", "expired"],
    ["r1", "replaced"],
    ["g1", "container_gone"],
    ["s1", "stack_down"],
    ["x1", "shutdown"],
  ]);
});
