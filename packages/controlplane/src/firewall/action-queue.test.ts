import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import { setImmediate as tick } from "node:timers/promises";
import { status } from "@grpc/grpc-js";
import { pino } from "pino";
import { ActionQueue, type MutationOutcome } from "./action-queue.js";
import {
  FloorRuleError,
  InvalidRuleError,
  QueueClosedError,
  ReconcileError,
  SAVED_NOT_APPLIED_MESSAGE,
  firewallStatus,
} from "./errors.js";
import { type Actor, type AddStatus, RuleStore } from "./rule-store.js";

interface LogLine {
  level: number;
  event?: string;
  msg: string;
  waiting?: number;
}

const actor: Actor = { clientId: "clawker-cli", certCn: "alice" };

/** A reconcile that records each run and blocks until the test releases it. */
class Reconciler {
  readonly runs: Array<{ signal: AbortSignal; release: (ok?: boolean) => void; sawRules: number }> = [];
  #waiting: Array<() => void> = [];
  constructor(private readonly ruleCount: () => number = () => 0) {}

  readonly reconcile = (signal: AbortSignal): Promise<number> =>
    new Promise<number>((resolve, reject) => {
      const sawRules = this.ruleCount();
      const release = (ok = true): void =>
        ok ? resolve(this.runs.length) : reject(new Error("proxy unreachable"));
      signal.addEventListener("abort", () => reject(signal.reason as Error), { once: true });
      this.runs.push({ signal, release, sawRules });
      for (const wake of this.#waiting.splice(0)) wake();
    });

  /** Resolves once run number `n` (1-based) has started. */
  async started(n: number): Promise<void> {
    while (this.runs.length < n) await new Promise<void>((r) => this.#waiting.push(r));
  }
}

function setup(t: TestContext, ruleCount?: () => number) {
  const lines: LogLine[] = [];
  const log = pino({ level: "trace" }, { write: (s: string) => void lines.push(JSON.parse(s) as LogLine) });
  const reconciler = new Reconciler(ruleCount);
  const queue = new ActionQueue({ reconcile: reconciler.reconcile, log });
  t.after(() => queue.close());
  return { queue, reconciler, lines };
}

function storeIn(t: TestContext): RuleStore {
  const dir = mkdtempSync(join(tmpdir(), "clawker-queue-"));
  const store = new RuleStore({ db: join(dir, "cp.db") });
  t.after(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return store;
}

void test("mutations write in arrival order; one reconcile serves a same-turn burst", async (t) => {
  const { queue, reconciler } = setup(t);
  const order: number[] = [];
  const results = [1, 2, 3].map((n) => queue.mutate(() => (order.push(n), n)));
  await reconciler.started(1);
  assert.deepEqual(order, [1, 2, 3], "all three written before the reconcile");
  reconciler.runs[0]!.release();
  const outcomes = await Promise.all(results);
  assert.deepEqual(outcomes, [
    { applied: true, value: 1, reconciled: 1 },
    { applied: true, value: 2, reconciled: 1 },
    { applied: true, value: 3, reconciled: 1 },
  ]);
  assert.equal(queue.reconcileRuns, 1);
});

void test("mutations arriving while a reconcile runs coalesce into one more run, which sees all of them", async (t) => {
  const store = storeIn(t);
  const { queue, reconciler } = setup(t, () => store.list().length);
  const first = queue.mutate(() => store.add([{ dst: "r0.test" }], actor));
  await reconciler.started(1);
  // Nine more adds and a reload while run 1 is still going.
  const later: Array<Promise<MutationOutcome<AddStatus[], number>>> = [];
  for (let i = 1; i < 10; i++) later.push(queue.mutate(() => store.add([{ dst: `r${i}.test` }], actor)));
  const reload = queue.reconcile();
  await tick();
  assert.equal(store.list().length, 1, "nothing else is written while run 1 applies r0");
  reconciler.runs[0]!.release();
  assert.deepEqual(await first, { applied: true, value: ["added"], reconciled: 1 });
  await reconciler.started(2);
  assert.equal(reconciler.runs[1]!.sawRules, 10, "run 2 starts after all nine writes");
  reconciler.runs[1]!.release();
  for (const outcome of await Promise.all(later)) {
    assert.deepEqual(outcome, { applied: true, value: ["added"], reconciled: 2 });
  }
  assert.equal(await reload, 2);
  assert.equal(queue.reconcileRuns, 2, "ten mutations and a reload: two reconcile runs");
});

void test("actions run alone and in order: pending mutations are reconciled before a later action", async (t) => {
  const { queue, reconciler } = setup(t);
  const events: string[] = [];
  const m1 = queue.mutate(() => events.push("write 1"));
  const action = queue.run(async () => {
    events.push(`action (after ${reconciler.runs.length} reconcile)`);
    await tick();
    return "done";
  });
  const m2 = queue.mutate(() => events.push("write 2"));
  await reconciler.started(1);
  reconciler.runs[0]!.release();
  await reconciler.started(2);
  reconciler.runs[1]!.release();
  assert.equal(await action, "done");
  await Promise.all([m1, m2]);
  assert.deepEqual(events, ["write 1", "action (after 1 reconcile)", "write 2"]);
  await assert.rejects(
    queue.run(() => Promise.reject(new Error("enable failed"))),
    /enable failed/,
  );
});

void test("a failed write rejects its caller only, saves nothing, and the others still apply", async (t) => {
  const store = storeIn(t);
  const { queue, reconciler } = setup(t);
  const good = queue.mutate(() => store.add([{ dst: "a.test" }], actor));
  const bad = queue.mutate(() => store.add([{ dst: "b.test" }, { dst: "a..b" }], actor));
  const floorless = queue.mutate(() => {
    throw new FloorRuleError("k", "nope");
  });
  await reconciler.started(1);
  reconciler.runs[0]!.release();
  assert.equal((await good).applied, true);
  await assert.rejects(bad, InvalidRuleError);
  await assert.rejects(floorless, FloorRuleError);
  assert.deepEqual(
    store.list().map((l) => l.rule.dst),
    ["a.test"],
  );
});

void test("a reconcile failing after the durable write: 'saved, will apply on next reload'", async (t) => {
  const store = storeIn(t);
  const { queue, reconciler, lines } = setup(t);
  const add = queue.mutate(() => store.add([{ dst: "a.test" }], actor));
  const reload = queue.reconcile();
  await reconciler.started(1);
  reconciler.runs[0]!.release(false);
  const outcome = await add;
  assert.equal(outcome.applied, false);
  if (outcome.applied) return;
  assert.deepEqual(outcome.value, ["added"]);
  assert.equal(outcome.message, SAVED_NOT_APPLIED_MESSAGE);
  assert.ok(outcome.error instanceof ReconcileError);
  assert.equal(outcome.error.reason, "reconcile_failed");
  assert.match(String((outcome.error.cause as Error).message), /proxy unreachable/);
  assert.equal(firewallStatus(outcome.error).code, status.UNAVAILABLE);
  assert.equal(firewallStatus(outcome.error).details, "firewall rules could not be applied", "no cause text");
  await assert.rejects(reload, ReconcileError);
  assert.equal(store.list().length, 1, "the rule is saved");
  const warn = lines.find((l) => l.event === "firewall_reconcile_failed");
  assert.equal(warn?.level, 40);
  assert.equal(warn?.waiting, 2);
  // The next reload applies it.
  const again = queue.reconcile();
  await reconciler.started(2);
  reconciler.runs[1]!.release();
  assert.equal(await again, 2);
});

void test("close: queued work is refused (UNAVAILABLE) unwritten, a running reconcile is aborted, later calls refused", async (t) => {
  const store = storeIn(t);
  const { queue, reconciler } = setup(t);
  const running = queue.mutate(() => store.add([{ dst: "a.test" }], actor));
  await reconciler.started(1);
  let wroteQueued = false;
  const queued = queue.mutate(() => {
    wroteQueued = true;
    return store.add([{ dst: "b.test" }], actor);
  });
  const queuedReload = queue.reconcile();
  const queuedAction = queue.run(() => Promise.resolve("ran"));
  const closed = queue.close();
  await assert.rejects(queued, QueueClosedError);
  await assert.rejects(queuedReload, QueueClosedError);
  await assert.rejects(queuedAction, QueueClosedError);
  assert.equal(reconciler.runs[0]!.signal.aborted, true);
  // a.test was written before close: its caller hears it is saved but not applied.
  const outcome = await running;
  assert.equal(outcome.applied, false);
  assert.equal(!outcome.applied && outcome.message, SAVED_NOT_APPLIED_MESSAGE);
  await closed;
  assert.equal(wroteQueued, false);
  assert.deepEqual(
    store.list().map((l) => l.rule.dst),
    ["a.test"],
  );
  for (const late of [queue.mutate(() => 1), queue.reconcile(), queue.run(() => Promise.resolve(1))]) {
    await assert.rejects(late, (err: unknown) => {
      assert.ok(err instanceof QueueClosedError);
      assert.equal(err.reason, "queue_closed");
      assert.equal(firewallStatus(err).code, status.UNAVAILABLE);
      return true;
    });
  }
  await queue.close(); // idempotent
  assert.equal(queue.reconcileRuns, 1);
});

void test("a write that finishes after close began is saved, reported as not applied, and not reconciled", async (t) => {
  const { queue } = setup(t);
  let finishWrite!: () => void;
  const slow = queue.mutate(() => new Promise<string>((resolve) => (finishWrite = () => resolve("written"))));
  await tick();
  const closed = queue.close();
  finishWrite();
  const outcome = await slow;
  assert.equal(outcome.applied, false);
  assert.equal(outcome.value, "written");
  assert.ok(!outcome.applied && outcome.error instanceof QueueClosedError);
  await closed;
  assert.equal(queue.reconcileRuns, 0);
});
