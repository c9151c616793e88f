// The drain runner: fixed order, every step runs, one deadline shared by all steps, nothing lost.
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { test } from "node:test";
import { pino, type Logger } from "pino";
import { runDrain, type DrainStep } from "./drain.js";

type LogLine = Record<string, unknown>;

function capture(): { log: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const log = pino({ level: "trace" }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) });
  return { log, lines };
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

void test("one deadline for the whole drain: budgets shrink, a hung step is cut off, later steps still run", async () => {
  const { log, lines } = capture();
  const budgets: number[] = [];
  let lateRan = false;
  const began = Date.now();
  const result = await runDrain(
    [
      { name: "slow", run: async (b) => (budgets.push(b.remainingMs()), await sleep(300)) },
      { name: "measures", run: (b) => void budgets.push(b.remainingMs()) },
      { name: "hangs", run: () => new Promise(() => undefined) },
      { name: "late", run: (b) => ((lateRan = true), budgets.push(b.remainingMs())) },
    ],
    { deadlineMs: 500, overrunMs: 200, log },
  );
  const took = Date.now() - began;
  assert.ok(budgets[0]! > 450 && budgets[0]! <= 500, `first budget ${budgets[0]}`);
  assert.ok(budgets[1]! <= 200, `second budget ${budgets[1]}: the first step's time is spent`);
  assert.equal(budgets[2], 0, "past the deadline nothing is left");
  assert.ok(lateRan, "a step after a hung one still runs");
  assert.ok(took >= 650 && took < 1_200, `drain took ${took} ms (deadline 500 + overrun 200)`);
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
  await runDrain(
    [{ name: "late-failure", run: () => sleep(150).then(() => Promise.reject(new Error("boom"))) }],
    {
      deadlineMs: 0,
      overrunMs: 50,
      log,
    },
  );
  assert.deepEqual(stepsLogged(lines), [["late-failure", "timed_out"]]);
  const until = Date.now() + 5_000;
  while (!lines.some((l) => l["event"] === "drain_step_late_failure") && Date.now() < until) await sleep(10);
  const late = lines.find((l) => l["event"] === "drain_step_late_failure");
  assert.equal(late?.["step"], "late-failure");
  assert.match(JSON.stringify(late), /boom/);
});
