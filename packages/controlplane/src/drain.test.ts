// The drain runner: fixed order, every step runs, one deadline shared by all steps, nothing lost.
import assert from "node:assert/strict";
import { setImmediate as flush } from "node:timers/promises";
import { test, type TestContext } from "node:test";
import { pino, type Logger } from "pino";
import { runDrain, type DrainStep } from "./drain.js";

type LogLine = Record<string, unknown>;

function capture(): { log: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const log = pino({ level: "trace" }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) });
  return { log, lines };
}

/**
 * Settles `promise` on mocked time: the clock moves 1 ms at a time, and promise chains run between
 * steps (`flush` is the real setImmediate), so each step's timers are set before the next tick.
 */
async function onMockedTime<T>(t: TestContext, promise: Promise<T>, limitMs: number): Promise<T> {
  let isSettled = false;
  const settled = promise.finally(() => (isSettled = true));
  await flush();
  for (let ms = 0; !isSettled && ms < limitMs; ms++) {
    t.mock.timers.tick(1);
    await flush();
  }
  assert.ok(isSettled, `not settled after ${limitMs} ms of mocked time`);
  return settled;
}

const stepsLogged = (lines: LogLine[]): unknown[][] =>
  lines.filter((l) => l["event"] === "drain_step").map((l) => [l["step"], l["outcome"]]);

void test("every step runs in order, also after failures, and each logs its outcome and duration", async () => {
  const { log, lines } = capture();
  const ran: string[] = [];
  const steps: DrainStep[] = [
    { name: "a", run: () => void ran.push("a") },
    {
      name: "throws",
      run: () => {
        ran.push("throws");
        throw new Error("sync failure");
      },
    },
    { name: "rejects", run: () => (ran.push("rejects"), Promise.reject(new Error("async failure"))) },
    { name: "z", run: () => Promise.resolve().then(() => void ran.push("z")) },
  ];
  const result = await runDrain(steps, { deadlineMs: 1_000, log });
  assert.deepEqual(ran, ["a", "throws", "rejects", "z"]);
  assert.deepEqual(result.failed, ["throws", "rejects"]);
  assert.deepEqual(stepsLogged(lines), [
    ["a", "ok"],
    ["throws", "failed"],
    ["rejects", "failed"],
    ["z", "ok"],
  ]);
  for (const l of lines.filter((x) => x["event"] === "drain_step")) assert.equal(typeof l["ms"], "number");
  assert.match(JSON.stringify(lines.find((l) => l["step"] === "rejects")), /async failure/);
});

void test("one deadline for the whole drain: budgets shrink, a hung step is cut off, later steps still run", async (t) => {
  // Mocked time: runDrain reads Date.now and sets setTimeout, so the budgets and the drain's
  // length are exact instead of bounds that a loaded machine stretches.
  t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 0 });
  const { log, lines } = capture();
  const budgets: number[] = [];
  let lateRan = false;
  const result = await onMockedTime(
    t,
    runDrain(
      [
        {
          name: "slow",
          run: (b) => (budgets.push(b.remainingMs()), new Promise((resolve) => setTimeout(resolve, 300))),
        },
        { name: "measures", run: (b) => void budgets.push(b.remainingMs()) },
        { name: "hangs", run: () => new Promise(() => undefined) },
        { name: "late", run: (b) => ((lateRan = true), budgets.push(b.remainingMs())) },
      ],
      { deadlineMs: 500, overrunMs: 200, log },
    ),
    2_000,
  );
  // The first step spent 300 of the 500 ms; the hung one got only what was left up to deadline
  // + overrun (400 ms), not a grace of its own.
  assert.deepEqual(budgets, [500, 200, 0]);
  assert.ok(lateRan, "a step after a hung one still runs");
  assert.equal(result.ms, 700, "deadline 500 + overrun 200");
  assert.deepEqual(result.failed, ["hangs"]);
  assert.deepEqual(stepsLogged(lines), [
    ["slow", "ok"],
    ["measures", "ok"],
    ["hangs", "timed_out"],
    ["late", "ok"],
  ]);
});

void test("a step that fails after it was cut off is still logged", async () => {
  const { log, lines } = capture();
  let fail: (err: Error) => void = () => undefined;
  await runDrain([{ name: "late-failure", run: () => new Promise((_, reject) => (fail = reject)) }], {
    deadlineMs: 0,
    overrunMs: 50,
    log,
  });
  assert.deepEqual(stepsLogged(lines), [["late-failure", "timed_out"]]);
  assert.equal(lines.length, 1);
  // The step fails only now, after the drain moved on: its rejection reaches the log through
  // promise callbacks alone, so one turn of the event loop is enough to see it.
  fail(new Error("boom"));
  await flush();
  const late = lines.find((l) => l["event"] === "drain_step_late_failure");
  assert.equal(late?.["step"], "late-failure");
  assert.match(JSON.stringify(late), /boom/);
});
