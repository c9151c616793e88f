// RequestTimers: each waiting call times out once, in order, after the timeout; a removed one
// never; one timer serves them all and re-arms for the next (mocked timers and clock: both are
// the only inputs).
import assert from "node:assert/strict";
import { test } from "node:test";
import { RequestTimers, type TimedRequest } from "./request-timers.js";

function entry(name: string, fired: string[], onTimeout?: () => void): TimedRequest {
  return {
    deadline: 0,
    prevTimed: undefined,
    nextTimed: undefined,
    timed: false,
    onRequestTimeout: () => {
      fired.push(name);
      onTimeout?.();
    },
  };
}

void test("calls time out in arrival order after the timeout; removed ones never; one timer for all", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const setTimeoutSpy = t.mock.method(globalThis, "setTimeout");
  let now = 0;
  const timers = new RequestTimers(100, () => now);
  const fired: string[] = [];
  const tick = (ms: number): void => {
    now += ms;
    t.mock.timers.tick(ms);
  };
  const [a, b, c, d] = ["a", "b", "c", "d"].map((n) => entry(n, fired)) as [
    TimedRequest,
    TimedRequest,
    TimedRequest,
    TimedRequest,
  ];
  timers.add(a);
  tick(10);
  timers.add(b);
  timers.add(c);
  tick(10);
  timers.add(d);
  timers.remove(b);
  timers.remove(b);
  assert.equal(b.timed, false);
  tick(79);
  assert.deepEqual(fired, [], "nothing before its timeout");
  tick(1);
  assert.deepEqual(fired, ["a"]);
  tick(10);
  assert.deepEqual(fired, ["a", "c"], "b was removed");
  timers.remove(d);
  tick(500);
  assert.deepEqual(fired, ["a", "c"], "d was removed after the timer was armed for it");
  assert.ok(
    setTimeoutSpy.mock.callCount() <= 4,
    `a timer per wake-up, not per call (${setTimeoutSpy.mock.callCount()})`,
  );
  // Empty again: a new call arms the timer afresh.
  const e = entry("e", fired);
  timers.add(e);
  tick(100);
  assert.deepEqual(fired, ["a", "c", "e"]);
});

void test("a timeout that throws does not stop the calls behind it", (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  let now = 0;
  const timers = new RequestTimers(50, () => now);
  const fired: string[] = [];
  timers.add(
    entry("bad", fired, () => {
      throw new Error("boom");
    }),
  );
  timers.add(entry("good", fired));
  now += 50;
  assert.throws(() => t.mock.timers.tick(50), /boom/);
  now += 1;
  t.mock.timers.tick(1);
  assert.deepEqual(fired, ["bad", "good"]);
});
