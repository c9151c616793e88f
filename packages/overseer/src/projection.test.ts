import assert from "node:assert/strict";
import { test } from "node:test";
import { setImmediate as tick } from "node:timers/promises";
import { OverseerError } from "./errors.js";
import { LABELS } from "./events.js";
import { Overseer } from "./overseer.js";
import { WorldviewProjection } from "./projection.js";
import { countRunningAgents } from "./worldview.js";

async function until(cond: () => boolean, what: string, turns = 100_000): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (cond()) return;
    await tick();
  }
  throw new Error(`never happened: ${what}`);
}

const ID = "c".repeat(64);
const labels = {
  [LABELS.managed]: "true",
  [LABELS.purpose]: "agent",
  [LABELS.agent]: "proj.bob",
  [LABELS.project]: "proj",
};

void test("the projection follows every topic and snapshots are immutable JSON", async (t) => {
  const overseer = new Overseer();
  const projection = new WorldviewProjection({ sources: overseer.topics() });
  const ac = new AbortController();
  t.after(async () => {
    ac.abort();
    await projection.close();
    await overseer.close();
  });
  const before = projection.snapshot();
  projection.start(ac.signal);
  assert.equal(overseer.stats().totals.subscribers, 5);

  overseer.containers.publish({ type: "docker.connected", time: 1 });
  overseer.containers.publish({
    type: "container.started",
    id: ID,
    name: "bob",
    labels,
    time: 2,
    source: "reconcile",
  });
  overseer.containers.publish({ type: "docker.reconciled", time: 3, containerIds: [ID] });
  overseer.agents.publish({
    type: "agent.registered",
    containerId: ID,
    agentName: "proj.bob",
    project: "proj",
    thumbprint: "ab".repeat(32),
    time: 4,
  });
  overseer.commands.publish({
    type: "command.started",
    containerId: ID,
    commandId: "boot-0",
    plan: "boot",
    description: "boot plan",
    stages: 1,
    time: 5,
  });
  overseer.drain.publish({ type: "drain.count", agents: 1, streak: 0, time: 6 });
  overseer.firewall.publish({ type: "firewall.enrolled", containerId: ID, time: 7 });

  await until(() => projection.snapshot().applied === 7, "seven events applied");
  const view = projection.snapshot();
  assert.equal(countRunningAgents(view), 1);
  assert.equal(view.agents[ID]?.trust, "registered");
  assert.equal(view.commands[ID]?.["boot-0"]?.state, "running");
  assert.equal(view.drain.lastCount, 1);
  assert.deepEqual(Object.keys(view.firewall.enrolled), [ID]);
  // The earlier snapshot did not change under us, and none can be changed by the caller.
  assert.equal(before.applied, 0);
  assert.deepEqual(before.containers, {});
  assert.throws(() => {
    (view.containers as Record<string, unknown>)[ID] = null;
  }, TypeError);
  assert.throws(() => {
    (view.containers[ID]!.labels as Record<string, string>)["x"] = "y";
  }, TypeError);
  assert.deepEqual(JSON.parse(JSON.stringify(view)), view);

  overseer.containers.publish({
    type: "container.destroyed",
    id: ID,
    name: "bob",
    labels,
    time: 8,
    source: "event",
  });
  await until(() => projection.snapshot().containers[ID] === undefined, "container gone");
  assert.equal(countRunningAgents(projection.snapshot()), 0);
  assert.equal(view.containers[ID]?.state, "running"); // the old snapshot still says what it said
  assert.equal(projection.stats().dropped, 0);
});

void test("aborting the start signal unsubscribes the projection; start runs once", async (t) => {
  const overseer = new Overseer();
  t.after(() => overseer.close());
  const projection = new WorldviewProjection({ sources: overseer.topics() });
  const ac = new AbortController();
  projection.start(ac.signal);
  assert.throws(
    () => projection.start(ac.signal),
    (err: unknown) => err instanceof OverseerError && err.reason === "already_started",
  );
  overseer.drain.publish({ type: "drain.count", agents: 0, streak: 1, time: 1 });
  await until(() => projection.snapshot().applied === 1, "first event applied");
  ac.abort();
  await projection.close();
  assert.equal(overseer.stats().totals.subscribers, 0);
  overseer.drain.publish({ type: "drain.count", agents: 0, streak: 2, time: 2 });
  await tick();
  assert.equal(projection.snapshot().drain.streak, 1);
});

void test("closing the overseer drains the projection's queues before it ends", async () => {
  const overseer = new Overseer();
  const projection = new WorldviewProjection({ sources: overseer.topics() });
  projection.start(new AbortController().signal);
  for (let i = 1; i <= 100; i++)
    overseer.drain.publish({ type: "drain.count", agents: 0, streak: i, time: i });
  await overseer.close();
  assert.equal(projection.snapshot().drain.streak, 100);
  await projection.close();
});

void test("a small projection queue drops the oldest events and says so in its stats", async () => {
  const overseer = new Overseer();
  const projection = new WorldviewProjection({ sources: [overseer.drain], capacity: 4 });
  projection.start(new AbortController().signal);
  for (let i = 1; i <= 10; i++)
    overseer.drain.publish({ type: "drain.count", agents: 0, streak: i, time: i });
  await overseer.close();
  assert.equal(projection.stats().dropped, 6);
  assert.equal(projection.snapshot().applied, 4);
  assert.equal(projection.snapshot().drain.streak, 10);
  await projection.close();
});

void test("overseer stats sum the topics; close is idempotent; publish after close is counted", async () => {
  const overseer = new Overseer({ capacity: 2 });
  const seen: string[] = [];
  overseer.agents.subscribe(() => {
    throw new Error("handler bug");
  });
  overseer.firewall.subscribe((e) => void seen.push(e.type));
  for (let i = 0; i < 3; i++) {
    overseer.agents.publish({ type: "agent.ready", containerId: ID, agentName: "a", time: i });
  }
  overseer.firewall.publish({ type: "firewall.rules_changed", ruleCount: 1, time: 1 });
  const closing = overseer.close();
  assert.equal(overseer.close(), closing);
  await closing;
  assert.equal(overseer.containers.publish({ type: "docker.connected", time: 9 }), false);
  const s = overseer.stats();
  assert.deepEqual(
    s.topics.map((t) => t.name),
    ["containers", "agents", "commands", "drain", "firewall"],
  );
  assert.deepEqual(s.totals, {
    published: 4,
    delivered: 3,
    dropped: 1,
    panics: 2,
    rejected: 1,
    subscribers: 0,
  });
  assert.deepEqual(seen, ["firewall.rules_changed"]);
  assert.deepEqual(JSON.parse(JSON.stringify(s)), s);
});
