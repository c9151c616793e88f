// AgentWatcher unit tests: ms-scale options on real timers, a real overseer Topic for events, and
// a scripted countAgents function (the watcher's one narrow injected dependency).
import assert from "node:assert/strict";
import { describe, test, type TestContext } from "node:test";
import { type ContainerEvent, type DrainEvent, LABELS, Topic } from "@clawker/overseer";
import { waitFor } from "@clawker/test-support";
import { setImmediate as flush } from "node:timers/promises";
import { pino } from "pino";
import { AgentWatcher, type AgentWatcherOptions, WATCHER_DEFAULTS, WatcherError } from "./watcher.js";

const log = pino({ level: "silent" });

/**
 * Moves mocked time on by `ms`, one millisecond at a time, flushing the watcher's promise chain
 * after each step: it sets its next timer only once its count has resolved. `flush` is the real
 * setImmediate (only setTimeout and Date are mocked).
 */
async function advance(t: TestContext, ms: number): Promise<void> {
  for (let i = 0; i < ms; i++) {
    t.mock.timers.tick(1);
    await flush();
  }
}

/** A scripted agent count: `queue` first, then `value` (or a thrown error); calls recorded. */
class ScriptedCount {
  value: number | Error = 0;
  readonly queue: (number | Error)[] = [];
  readonly calls: number[] = [];
  readonly fn = (): Promise<number> => {
    this.calls.push(performance.now());
    const v = this.queue.shift() ?? this.value;
    return v instanceof Error ? Promise.reject(v) : Promise.resolve(v);
  };
}

interface Harness {
  readonly watcher: AgentWatcher;
  readonly count: ScriptedCount;
  readonly containers: Topic<ContainerEvent>;
  readonly drainEvents: DrainEvent[];
  drains: number;
}

function harness(t: TestContext, options: AgentWatcherOptions, onDrain?: () => void): Harness {
  const count = new ScriptedCount();
  const containers = new Topic<ContainerEvent>({ name: "containers" });
  const drain = new Topic<DrainEvent>({ name: "drain" });
  const drainEvents: DrainEvent[] = [];
  drain.subscribe((e) => void drainEvents.push(e));
  const h: Harness = {
    watcher: undefined as unknown as AgentWatcher,
    count,
    containers,
    drainEvents,
    drains: 0,
  };
  (h as { watcher: AgentWatcher }).watcher = new AgentWatcher(
    {
      countAgents: count.fn,
      onDrain: () => {
        h.drains++;
        onDrain?.();
      },
      log,
      containers,
      drain,
    },
    options,
  );
  t.after(async () => {
    await h.watcher.close();
    await containers.close();
    await drain.close();
  });
  return h;
}

function agentEvent(
  type: "container.died" | "container.destroyed" | "container.started",
  id = "c1",
): ContainerEvent {
  const labels = { [LABELS.managed]: "true", [LABELS.purpose]: "agent", [LABELS.agent]: "a" };
  const base = { id, name: id, labels, time: Date.now(), source: "event" as const };
  return type === "container.died" ? { ...base, type, exitCode: 0 } : { ...base, type };
}

describe("AgentWatcher options", () => {
  test("zero or omitted options pick the defaults", () => {
    const deps = { countAgents: () => Promise.resolve(0), onDrain: () => undefined, log };
    assert.deepEqual({ ...new AgentWatcher(deps).options }, { ...WATCHER_DEFAULTS });
    const zero = new AgentWatcher(deps, {
      pollInterval: 0,
      missedThreshold: 0,
      gracePeriod: 0,
      listErrCeiling: 0,
      eventDebounce: 0,
      confirmInterval: 0,
      eventWindow: 0,
    });
    assert.deepEqual({ ...zero.options }, { ...WATCHER_DEFAULTS });
    assert.deepEqual(WATCHER_DEFAULTS, {
      pollInterval: 30_000,
      missedThreshold: 2,
      gracePeriod: 60_000,
      listErrCeiling: 20,
      eventDebounce: 100,
      confirmInterval: 300,
      eventWindow: 3_000,
    });
    const custom = new AgentWatcher(deps, { pollInterval: 5, missedThreshold: 3 });
    assert.equal(custom.options.pollInterval, 5);
    assert.equal(custom.options.missedThreshold, 3);
    assert.equal(custom.options.gracePeriod, 60_000);
  });

  const bad: [keyof AgentWatcherOptions, number][] = [
    ["pollInterval", -1],
    ["missedThreshold", -1],
    ["gracePeriod", -5],
    ["listErrCeiling", -20],
    ["eventDebounce", -1],
    ["confirmInterval", -1],
    ["eventWindow", -1],
    ["missedThreshold", 1.5],
    ["listErrCeiling", Number.NaN],
    ["pollInterval", Number.POSITIVE_INFINITY],
  ];
  for (const [key, value] of bad) {
    test(`${key} = ${value} throws at construction`, () => {
      const deps = { countAgents: () => Promise.resolve(0), onDrain: () => undefined, log };
      assert.throws(
        () => new AgentWatcher(deps, { [key]: value }),
        (err: unknown) =>
          err instanceof WatcherError && err.reason === "invalid_option" && err.message.includes(key),
      );
    });
  }
});

describe("AgentWatcher", () => {
  test("the threshold cannot be reached inside the grace period", async (t) => {
    const grace = 200;
    const h = harness(t, { pollInterval: 10, missedThreshold: 2, gracePeriod: grace });
    const started = performance.now();
    const outcome = await h.watcher.run();
    const drainedAfter = performance.now() - started;
    assert.equal(outcome, "drained");
    assert.equal(h.drains, 1);
    assert.ok(drainedAfter >= grace, `drained ${drainedAfter} ms after start, grace ${grace} ms`);
    // Zero counts were made, and the streak passed the threshold, while the grace ran.
    const during = h.count.calls.filter((at) => at - started < grace - 20);
    assert.ok(during.length >= 2, `only ${during.length} counts during the grace`);
    const counts = h.drainEvents.filter((e) => e.type === "drain.count");
    assert.ok(counts.some((e) => e.streak >= 2 && e.time - counts[0]!.time < grace - 20));
  });

  test("run() works once; the drain callback fires once", async (t) => {
    const h = harness(t, { pollInterval: 5, gracePeriod: 1 });
    assert.equal(await h.watcher.run(), "drained");
    await assert.rejects(
      h.watcher.run(),
      (err: unknown) => err instanceof WatcherError && err.reason === "already_run",
    );
    assert.equal(h.drains, 1);
  });

  test("a second concurrent run() is refused too", async (t) => {
    const h = harness(t, { pollInterval: 5, gracePeriod: 1 });
    h.count.value = 1;
    const first = h.watcher.run();
    await assert.rejects(h.watcher.run(), (err: unknown) => (err as WatcherError).reason === "already_run");
    await h.watcher.close();
    assert.equal(await first, "aborted");
    assert.equal(h.drains, 0);
  });

  test("does not drain while agents run, nor on isolated zero counts", async (t) => {
    const h = harness(t, { pollInterval: 2, missedThreshold: 2, gracePeriod: 1 });
    // 1, 0, 1, 0, ...: never two zeros in a row.
    let n = 0;
    const script = h.count.fn;
    const alternating = (): Promise<number> => {
      h.count.value = n++ % 2 === 0 ? 1 : 0;
      return script();
    };
    const w = new AgentWatcher(
      { countAgents: alternating, onDrain: () => void h.drains++, log },
      h.watcher.options,
    );
    t.after(() => w.close());
    const run = w.run();
    await waitFor(() => h.count.calls.length >= 40, { what: "40 counts" });
    assert.equal(h.drains, 0);
    await w.close();
    assert.equal(await run, "aborted");
  });

  test("list errors reset the streak", async (t) => {
    const h = harness(t, { pollInterval: 2, missedThreshold: 2, gracePeriod: 1, listErrCeiling: 1000 });
    let n = 0;
    const flaky = (): Promise<number> => {
      h.count.value = n++ % 2 === 0 ? 0 : new Error("docker down");
      return h.count.fn();
    };
    const w = new AgentWatcher(
      { countAgents: flaky, onDrain: () => void h.drains++, log },
      h.watcher.options,
    );
    t.after(() => w.close());
    const run = w.run();
    await waitFor(() => h.count.calls.length >= 40, { what: "40 counts" });
    assert.equal(h.drains, 0);
    await w.close();
    assert.equal(await run, "aborted");
  });

  test("listErrCeiling consecutive errors end run() with the last error", async (t) => {
    const h = harness(t, { pollInterval: 2, gracePeriod: 1, listErrCeiling: 3 });
    let n = 0;
    const failing = (): Promise<number> => {
      h.count.value = new Error(`failure ${++n}`);
      return h.count.fn();
    };
    const w = new AgentWatcher(
      { countAgents: failing, onDrain: () => void h.drains++, log },
      h.watcher.options,
    );
    t.after(() => w.close());
    await assert.rejects(w.run(), (err: unknown) => {
      assert.ok(err instanceof WatcherError);
      assert.equal(err.reason, "list_error_ceiling");
      assert.equal((err.cause as Error).message, "failure 3");
      return true;
    });
    assert.equal(h.count.calls.length, 3);
    assert.equal(h.drains, 0);
  });

  test("a bad count (negative, fractional) is a list error, not zero", async (t) => {
    const h = harness(t, { pollInterval: 2, gracePeriod: 1, listErrCeiling: 2 });
    h.count.value = -1;
    await assert.rejects(
      h.watcher.run(),
      (err: unknown) => (err as WatcherError).reason === "list_error_ceiling",
    );
    assert.equal(h.drains, 0);
  });

  test("an agent died event drains after missedThreshold quick counts, not a poll interval", async (t) => {
    const h = harness(t, {
      pollInterval: 600_000,
      missedThreshold: 2,
      gracePeriod: 1,
      eventDebounce: 5,
      confirmInterval: 20,
    });
    h.count.value = 1;
    const run = h.watcher.run();
    await waitFor(() => h.count.calls.length >= 1, { what: "the first count" });
    assert.equal(h.drains, 0);
    h.count.value = 0;
    const before = h.count.calls.length;
    h.containers.publish(agentEvent("container.died"));
    assert.equal(await run, "drained");
    assert.equal(h.drains, 1);
    // Exactly the event's count and one confirmation (threshold 2), no poll.
    assert.equal(h.count.calls.length - before, 2);
    const [first, second] = h.count.calls.slice(before);
    assert.ok(second! - first! >= 20, "the confirmation waited confirmInterval");
  });

  test("an event-triggered zero needs its confirmation: an agent seen by it cancels the drain", async (t) => {
    const h = harness(t, {
      pollInterval: 600_000,
      missedThreshold: 2,
      gracePeriod: 1,
      eventDebounce: 5,
      confirmInterval: 20,
    });
    h.count.value = 1;
    const run = h.watcher.run();
    await waitFor(() => h.count.calls.length >= 1, { what: "the first count" });
    const before = h.count.calls.length;
    // The event's count sees 0, the confirmation sees 1 (an agent just started), then 1 for ever.
    h.count.queue.push(0, 1);
    h.containers.publish(agentEvent("container.died"));
    await waitFor(() => h.count.calls.length - before >= 2, { intervalMs: 1, what: "the confirming count" });
    const streaks = h.drainEvents.flatMap((e) => (e.type === "drain.count" ? [e.streak] : []));
    assert.deepEqual(streaks.slice(1, 3), [1, 0]);
    assert.equal(h.drains, 0);
    await h.watcher.close();
    assert.equal(await run, "aborted");
  });

  test("a listing that lags the die event is counted again, not trusted until the next poll", async (t) => {
    const h = harness(t, {
      pollInterval: 600_000,
      missedThreshold: 2,
      gracePeriod: 1,
      eventDebounce: 5,
      confirmInterval: 10,
    });
    h.count.value = 1;
    const run = h.watcher.run();
    await waitFor(() => h.count.calls.length >= 1, { what: "the first count" });
    const before = h.count.calls.length;
    // Docker logs `die` before its listing drops the container: the first counts still see it.
    h.count.queue.push(1, 1, 0);
    h.count.value = 0;
    h.containers.publish(agentEvent("container.died"));
    assert.equal(await run, "drained");
    assert.equal(h.count.calls.length - before, 4);
  });

  test("after the event window, a running agent sends the watcher back to polling", async (t) => {
    // Mocked time: the watcher schedules by performance.now(), which reads the mocked Date here, so
    // the window and the 10 min poll are crossed by tick() and the quiet period costs no waiting.
    t.mock.timers.enable({ apis: ["setTimeout", "Date"], now: 0 });
    t.mock.method(performance, "now", () => Date.now());
    const h = harness(t, {
      pollInterval: 600_000,
      gracePeriod: 1,
      eventDebounce: 5,
      confirmInterval: 10,
      eventWindow: 100,
    });
    h.count.value = 1;
    const run = h.watcher.run();
    t.mock.timers.tick(0);
    await flush();
    assert.equal(h.count.calls.length, 1, "the first count, at start");
    h.containers.publish(agentEvent("container.died"));
    await flush();
    // The event's count at 5 ms, then one every 10 ms while the window (5 + 100 ms) lasts: 5..105.
    await advance(t, 200);
    assert.deepEqual(
      h.count.calls.slice(1),
      Array.from({ length: 11 }, (_, i) => 5 + 10 * i),
    );
    // Then only the poll is left: nothing until 10 min after the last count, then exactly one.
    t.mock.timers.tick(600_105 - 1 - 200);
    await flush();
    assert.equal(h.count.calls.length, 12, "no count between the window and the poll");
    await advance(t, 1);
    assert.deepEqual(h.count.calls.slice(12), [600_105]);
    assert.equal(h.drains, 0);
    await h.watcher.close();
    assert.equal(await run, "aborted");
  });

  test("an agent start between zero counts restarts the streak", async (t) => {
    const h = harness(t, {
      pollInterval: 600_000,
      missedThreshold: 3,
      gracePeriod: 1,
      eventDebounce: 5,
      confirmInterval: 200,
    });
    h.count.value = 1;
    const run = h.watcher.run();
    await waitFor(() => h.count.calls.length >= 1, { what: "the first count" });
    h.count.value = 0;
    h.containers.publish(agentEvent("container.died"));
    const streaks = (): number[] =>
      h.drainEvents.flatMap((e) => (e.type === "drain.count" ? [e.streak] : []));
    await waitFor(() => streaks().at(-1) === 2, { intervalMs: 1, what: "a streak of 2" });
    // An agent started (and, say, stopped again unseen): the zero counts so far are stale.
    h.containers.publish(agentEvent("container.started", "c2"));
    h.containers.publish(agentEvent("container.died", "c2"));
    assert.equal(await run, "drained");
    assert.deepEqual(streaks(), [0, 1, 2, 1, 2, 3]);
  });

  test("events of non-agent containers are ignored", async (t) => {
    const h = harness(t, { pollInterval: 600_000, gracePeriod: 1, eventDebounce: 1, confirmInterval: 1 });
    h.count.value = 1;
    const run = h.watcher.run();
    await waitFor(() => h.count.calls.length >= 1, { what: "the first count" });
    h.count.value = 0;
    const labels = { [LABELS.managed]: "true", [LABELS.purpose]: "controlplane" };
    h.containers.publish({
      type: "container.died",
      id: "cp",
      name: "cp",
      labels,
      time: 0,
      source: "event",
      exitCode: 0,
    });
    // Then an agent event: the counts that follow are its own (two), none for the first event.
    const before = h.count.calls.length;
    h.containers.publish(agentEvent("container.destroyed"));
    assert.equal(await run, "drained");
    assert.equal(h.count.calls.length - before, 2);
  });

  test("an agent stopping during the grace drains only once the grace has passed", async (t) => {
    const grace = 300;
    const h = harness(t, {
      pollInterval: 600_000,
      missedThreshold: 2,
      gracePeriod: grace,
      eventDebounce: 5,
      confirmInterval: 10,
    });
    h.count.value = 1;
    const started = performance.now();
    const run = h.watcher.run();
    await waitFor(() => h.count.calls.length >= 1, { what: "the first count" });
    h.count.value = 0;
    h.containers.publish(agentEvent("container.died"));
    assert.equal(await run, "drained");
    const drainedAfter = performance.now() - started;
    assert.ok(drainedAfter >= grace, `drained ${drainedAfter} ms after start, grace ${grace} ms`);
    // Drained by the grace-end count, long before the (10 min) poll.
    assert.ok(h.count.calls.length <= 5, `${h.count.calls.length} counts`);
  });

  test("abort and close() end run() with 'aborted'; close() is idempotent", async (t) => {
    const h = harness(t, { pollInterval: 5, gracePeriod: 1 });
    h.count.value = 2;
    const ac = new AbortController();
    const run = h.watcher.run(ac.signal);
    await waitFor(() => h.count.calls.length >= 2, { what: "two counts" });
    ac.abort();
    assert.equal(await run, "aborted");
    await h.watcher.close();
    await h.watcher.close();
    assert.equal(h.drains, 0);
  });

  test("close() from inside the drain callback does not deadlock", async (t) => {
    let closed: Promise<void> | undefined;
    const h = harness(t, { pollInterval: 5, gracePeriod: 1 }, () => {
      closed = h.watcher.close();
    });
    assert.equal(await h.watcher.run(), "drained");
    await closed;
    assert.equal(h.drains, 1);
  });

  test("a failing drain callback ends run() with drain_failed, once", async (t) => {
    const h = harness(t, { pollInterval: 5, gracePeriod: 1 }, () => {
      throw new Error("stop failed");
    });
    await assert.rejects(h.watcher.run(), (err: unknown) => {
      assert.ok(err instanceof WatcherError);
      assert.equal(err.reason, "drain_failed");
      assert.equal((err.cause as Error).message, "stop failed");
      return true;
    });
    assert.equal(h.drains, 1);
  });

  test("a started run() stops counting after close(): no timer is left", async (t) => {
    const h = harness(t, { pollInterval: 5, gracePeriod: 1 });
    h.count.value = 1;
    const run = h.watcher.run();
    await waitFor(() => h.count.calls.length >= 3, { what: "three counts" });
    await h.watcher.close();
    assert.equal(await run, "aborted");
    const after = h.count.calls.length;
    // A fresh watcher proves time passes while this one stays quiet.
    const other = harness(t, { pollInterval: 5, gracePeriod: 1 });
    other.count.value = 1;
    void other.watcher.run();
    await waitFor(() => other.count.calls.length >= 5, { what: "five counts of another watcher" });
    assert.equal(h.count.calls.length, after);
    assert.equal(h.containers.stats().subscribers, 0);
  });
});
