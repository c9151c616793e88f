import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { test } from "node:test";
import { setImmediate as tick } from "node:timers/promises";
import { pino } from "pino";
import { OverseerError } from "./errors.js";
import type { Logger } from "./logger.js";
import { Topic } from "./topic.js";

/** Polls `cond` on every macrotask turn (no timers) until it holds or the budget is spent. */
async function until(cond: () => boolean, what: string, turns = 100_000): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (cond()) return;
    await tick();
  }
  throw new Error(`never happened: ${what}`);
}

/** A promise with its resolve function, to hold a handler until the test lets it go. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

/** A logger that records what it is given. */
function recordingLogger(): Logger & { lines: { obj: Record<string, unknown>; msg: string }[] } {
  const lines: { obj: Record<string, unknown>; msg: string }[] = [];
  return { lines, warn: (obj, msg) => void lines.push({ obj, msg }) };
}

void test("each subscriber sees events in publish order, sync and async handlers alike", async () => {
  const topic = new Topic<number>({ name: "t", capacity: 2048 });
  const seenSync: number[] = [];
  const seenAsync: number[] = [];
  const seenStream: number[] = [];
  topic.subscribe((n) => void seenSync.push(n));
  topic.subscribe(async (n) => {
    if (n % 7 === 0) await tick(); // yield to the event loop now and then
    seenAsync.push(n);
  });
  const stream = topic.stream();
  const reading = (async () => {
    for await (const n of stream) seenStream.push(n);
  })();
  const expected: number[] = [];
  for (let i = 0; i < 1000; i++) {
    expected.push(i);
    assert.equal(topic.publish(i), true);
    if (i % 100 === 0) await tick(); // interleave publishing with delivery
  }
  await topic.close();
  await reading;
  assert.deepEqual(seenSync, expected);
  assert.deepEqual(seenAsync, expected);
  assert.deepEqual(seenStream, expected);
  const s = topic.stats();
  assert.equal(s.published, 1000);
  assert.equal(s.delivered, 3000);
  assert.equal(s.dropped, 0);
  assert.equal(s.subscribers, 0);
});

void test("a full queue drops its oldest events, counted per subscriber and per topic", async () => {
  const log = recordingLogger();
  const topic = new Topic<number>({ name: "t", logger: log });
  const held = gate();
  const slowSeen: number[] = [];
  const fastSeen: number[] = [];
  const slow = topic.subscribe(
    async (n) => {
      slowSeen.push(n);
      if (n === 0) await held.promise;
    },
    { capacity: 4, name: "slow" },
  );
  const fast = topic.subscribe((n) => void fastSeen.push(n), { capacity: 64, name: "fast" });
  topic.publish(0);
  await until(() => slowSeen.length === 1, "slow handler holding event 0");
  for (let i = 1; i <= 10; i++) topic.publish(i);
  // The fast subscriber is not held up by the slow one.
  await until(() => fastSeen.length === 11, "fast subscriber has everything");
  assert.deepEqual(slow.stats().queued, 4);
  assert.equal(slow.stats().dropped, 6);
  held.open();
  await until(() => slowSeen.length === 5, "slow subscriber drained");
  assert.deepEqual(slowSeen, [0, 7, 8, 9, 10]);
  assert.deepEqual(fastSeen, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.equal(fast.stats().dropped, 0);
  assert.equal(topic.stats().dropped, 6);
  assert.equal(topic.stats().delivered, 16);
  // Drops are logged at 1, 2 and 4, not once per event.
  const dropLogs = log.lines.filter((l) => l.obj["event"] === "overseer_dropped");
  assert.deepEqual(
    dropLogs.map((l) => l.obj["dropped"]),
    [1, 2, 4],
  );
  await topic.close();
});

void test("a throwing or rejecting handler is logged and isolated; its subscription continues", async () => {
  const log = recordingLogger();
  const topic = new Topic<{ type: string; n: number }>({ name: "t", logger: log });
  const survivor: number[] = [];
  const neighbour: number[] = [];
  const sub = topic.subscribe(
    async (e) => {
      if (e.n === 1) throw new Error("sync-ish throw");
      if (e.n === 3) return Promise.reject(new Error("rejection"));
      survivor.push(e.n);
      await tick();
    },
    { name: "flaky" },
  );
  const plainThrow = topic.subscribe((e) => {
    if (e.n === 2) throw new TypeError("plain throw");
  });
  topic.subscribe((e) => void neighbour.push(e.n));
  for (let n = 0; n < 5; n++) topic.publish({ type: "x.happened", n });
  await topic.close();
  assert.deepEqual(survivor, [0, 2, 4]);
  assert.deepEqual(neighbour, [0, 1, 2, 3, 4]);
  assert.equal(sub.stats().panics, 2);
  assert.equal(plainThrow.stats().panics, 1);
  assert.equal(topic.stats().panics, 3);
  const failures = log.lines.filter((l) => l.obj["event"] === "overseer_handler_failed");
  assert.equal(failures.length, 3);
  const first = failures.find((l) => l.obj["subscriber"] === "flaky");
  assert.ok(first?.obj["err"] instanceof Error);
  assert.equal(first.obj["eventType"], "x.happened");
  assert.equal(first.obj["topic"], "t");
});

void test("a pino logger receives handler failures as JSON lines", async () => {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  const topic = new Topic<number>({ name: "pino", logger: pino({ level: "warn" }, sink) });
  topic.subscribe(() => {
    throw new Error("boom");
  });
  topic.publish(1);
  await topic.close();
  await until(() => lines.length > 0, "pino line written");
  const line = JSON.parse(lines[0]!) as Record<string, unknown>;
  assert.equal(line["level"], 40);
  assert.equal(line["msg"], "overseer handler failed");
  assert.equal((line["err"] as { message: string }).message, "boom");
});

void test("a logger that throws breaks neither publish nor delivery", async () => {
  const topic = new Topic<number>({
    name: "t",
    logger: {
      warn: () => {
        throw new Error("logger down");
      },
    },
  });
  const seen: number[] = [];
  topic.subscribe((n) => {
    if (n === 0) throw new Error("handler");
    seen.push(n);
  });
  topic.subscribe(() => {}, { capacity: 1 }); // overflows, so the drop path logs too
  for (let n = 0; n < 3; n++) assert.equal(topic.publish(n), true);
  await topic.close();
  assert.deepEqual(seen, [1, 2]);
  assert.equal(topic.stats().dropped, 2);
});

void test("aborting the signal ends a subscription and discards its queue", async () => {
  const topic = new Topic<number>({ name: "t" });
  const ac = new AbortController();
  const held = gate();
  const seen: number[] = [];
  const sub = topic.subscribe(
    async (n) => {
      seen.push(n);
      await held.promise;
    },
    { signal: ac.signal },
  );
  const other: number[] = [];
  topic.subscribe((n) => void other.push(n));
  topic.publish(1);
  await until(() => seen.length === 1, "first event in the handler");
  topic.publish(2);
  topic.publish(3);
  assert.equal(topic.stats().subscribers, 2);
  ac.abort();
  assert.equal(sub.isActive, false);
  assert.equal(topic.stats().subscribers, 1);
  topic.publish(4);
  held.open();
  await sub.done;
  assert.deepEqual(seen, [1]);
  assert.equal(sub.stats().dropped, 2); // 2 and 3 were queued and discarded
  await topic.close();
  assert.deepEqual(other, [1, 2, 3, 4]);
});

void test("unsubscribe and an already-aborted signal end subscriptions too", async () => {
  const topic = new Topic<number>({ name: "t" });
  const seen: number[] = [];
  const sub = topic.subscribe((n) => void seen.push(n));
  topic.publish(1);
  await until(() => seen.length === 1, "first event");
  sub.unsubscribe();
  sub.unsubscribe(); // idempotent
  topic.publish(2);
  await sub.done;
  const born = topic.subscribe(() => assert.fail("must not be called"), { signal: AbortSignal.abort() });
  assert.equal(born.isActive, false);
  await born.done;
  topic.publish(3);
  await topic.close();
  assert.deepEqual(seen, [1]);
  assert.equal(topic.stats().subscribers, 0);
});

void test("for await: break unsubscribes, abort ends the loop, close ends it after the queue", async () => {
  const topic = new Topic<number>({ name: "t" });

  const broken = topic.stream({ name: "breaker" });
  const firstTwo: number[] = [];
  const breaking = (async () => {
    for await (const n of broken) {
      firstTwo.push(n);
      if (firstTwo.length === 2) break;
    }
  })();

  const ac = new AbortController();
  const aborted = topic.stream({ signal: ac.signal });
  const abortedSeen: number[] = [];
  const aborting = (async () => {
    for await (const n of aborted) abortedSeen.push(n);
  })();

  const drained = topic.stream();
  for (let n = 1; n <= 3; n++) topic.publish(n);
  await breaking;
  assert.deepEqual(firstTwo, [1, 2]);
  assert.equal(broken.isActive, false);
  await until(() => abortedSeen.length === 3, "aborted stream read 3");
  ac.abort();
  await aborting;
  await aborted.done;
  topic.publish(4);
  assert.equal(topic.stats().subscribers, 1);
  await topic.close();
  const rest: number[] = [];
  for await (const n of drained) rest.push(n);
  assert.deepEqual(rest, [1, 2, 3, 4]);
  await drained.done;
  assert.deepEqual(abortedSeen, [1, 2, 3]);
});

void test("close drains the queues, waits for running handlers, and is idempotent", async () => {
  const topic = new Topic<number>({ name: "t" });
  const finished: number[] = [];
  let running = 0;
  topic.subscribe(async (n) => {
    running++;
    for (let i = 0; i < 5; i++) await tick(); // real asynchronous work across turns
    finished.push(n);
    running--;
  });
  for (let n = 0; n < 5; n++) topic.publish(n);
  const first = topic.close();
  const second = topic.close();
  assert.equal(first, second);
  assert.equal(topic.isClosed, true);
  assert.equal(finished.length < 5, true); // close did not finish synchronously
  await first;
  assert.deepEqual(finished, [0, 1, 2, 3, 4]);
  assert.equal(running, 0);
  await topic.close();
});

void test("publish after close is a counted no-op and subscribe after close is born ended", async () => {
  const topic = new Topic<string>({ name: "t" });
  await topic.close();
  assert.doesNotThrow(() => topic.publish("late"));
  assert.equal(topic.publish("later"), false);
  const s = topic.stats();
  assert.equal(s.rejected, 2);
  assert.equal(s.published, 0);
  assert.equal(s.isClosed, true);
  const sub = topic.subscribe(() => assert.fail("never"));
  assert.equal(sub.isActive, false);
  await sub.done;
  const stream = topic.stream();
  assert.deepEqual(await stream.next(), { done: true, value: undefined });
});

void test("a handler publishing during close is a counted no-op", async () => {
  const topic = new Topic<number>({ name: "t" });
  let echoes = 0;
  topic.subscribe((n) => {
    if (!topic.publish(n + 100)) echoes++;
  });
  topic.publish(1);
  await topic.close();
  assert.equal(echoes, 1);
  assert.equal(topic.stats().rejected, 1);
});

void test("close leaves no timers, immediates or pending handlers behind", async () => {
  const pending = (): number =>
    process.getActiveResourcesInfo().filter((r) => r === "Timeout" || r === "Immediate").length;
  await tick(); // let anything from earlier tests settle
  const before = pending();
  const topic = new Topic<number>({ name: "t", capacity: 8 });
  const ac = new AbortController();
  topic.subscribe(async () => {
    await tick();
  });
  topic.subscribe(() => {}, { signal: ac.signal });
  const stream = topic.stream();
  for (let n = 0; n < 100; n++) topic.publish(n);
  await topic.close();
  stream.unsubscribe();
  await stream.done;
  assert.equal(topic.stats().subscribers, 0);
  assert.equal(pending(), before);
  // The abort listener was removed when the subscription ended with the topic.
  ac.abort();
});

void test("bad capacities are refused with a stable reason", () => {
  assert.throws(
    () => new Topic<number>({ name: "t", capacity: 0 }),
    (err: unknown) => err instanceof OverseerError && err.reason === "invalid_option",
  );
  const topic = new Topic<number>({ name: "t" });
  for (const capacity of [-1, 1.5, Number.NaN]) {
    assert.throws(
      () => topic.subscribe(() => {}, { capacity }),
      (err: unknown) => err instanceof OverseerError && err.reason === "invalid_option",
    );
  }
});
