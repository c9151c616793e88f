// Table tests for the pure Docker <-> overseer translation (messages taken from engine 20.10).
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  containerEventFromMessage,
  containerEventsFromListing,
  exitCodeFromStatus,
  networkActionFromMessage,
  sinceFromLocalTime,
  sinceFromSystemTime,
} from "./event-parse.js";

const ID = "21341b659629b3053b126f5e592ac4db5a19d1e490620453cc253050493fdce7";
const attrs = {
  "dev.clawker.managed": "true",
  "dev.clawker.purpose": "agent",
  image: "clawker-test/busybox:070b8b06d0908f97cd9b",
  name: "gifted_ptolemy",
};

test("container stream messages become overseer events; labels lose Docker's own attributes", () => {
  const die = containerEventFromMessage(
    { Type: "container", Action: "die", Actor: { ID, Attributes: { ...attrs, exitCode: "143" } } },
    42,
  );
  assert.deepEqual(die, {
    type: "container.died",
    id: ID,
    name: "gifted_ptolemy",
    labels: { "dev.clawker.managed": "true", "dev.clawker.purpose": "agent" },
    time: 42,
    source: "event",
    exitCode: 143,
  });
  const cases: [string, string | undefined][] = [
    ["create", "container.created"],
    ["start", "container.started"],
    ["destroy", "container.destroyed"],
    ["kill", undefined],
    ["stop", undefined],
    ["exec_create: sh", undefined],
  ];
  for (const [action, type] of cases) {
    const e = containerEventFromMessage(
      { Type: "container", Action: action, Actor: { ID, Attributes: attrs } },
      1,
    );
    assert.equal(e?.type, type, action);
  }
});

test("unmanaged, malformed and non-container messages are dropped", () => {
  const unmanaged = { ...attrs, "dev.clawker.managed": "false" };
  assert.equal(
    containerEventFromMessage(
      { Type: "container", Action: "start", Actor: { ID, Attributes: unmanaged } },
      1,
    ),
    undefined,
  );
  assert.equal(
    containerEventFromMessage({ Type: "container", Action: "start", Actor: { ID } }, 1),
    undefined,
  );
  assert.equal(containerEventFromMessage({ Type: "container", Action: "start" }, 1), undefined);
  assert.equal(containerEventFromMessage({ Type: "network", Action: "create", Actor: { ID } }, 1), undefined);
  const noCode = containerEventFromMessage(
    { Type: "container", Action: "die", Actor: { ID, Attributes: attrs } },
    1,
  );
  assert.equal(noCode?.type === "container.died" ? noCode.exitCode : "wrong", null);
});

test("network messages: followed actions with the connected container", () => {
  const msg = {
    Type: "network",
    Action: "connect",
    Actor: { ID: "508d", Attributes: { container: ID, name: "mnet", type: "bridge" } },
  };
  assert.deepEqual(networkActionFromMessage(msg), {
    action: "connect",
    id: "508d",
    name: "mnet",
    containerId: ID,
  });
  assert.equal(networkActionFromMessage({ ...msg, Action: "prune" }), undefined);
  assert.equal(networkActionFromMessage({ ...msg, Type: "container" }), undefined);
});

test("listings become synthetic events for the container's state", () => {
  const base = { Id: ID, Names: ["/agent-a"], Labels: { "dev.clawker.managed": "true" } };
  const types = (state: string, status = ""): string[] =>
    containerEventsFromListing({ ...base, State: state, Status: status }, 7).map((e) => e.type);
  assert.deepEqual(types("created"), ["container.created"]);
  assert.deepEqual(types("running"), ["container.created", "container.started"]);
  assert.deepEqual(types("paused"), ["container.created", "container.started"]);
  assert.deepEqual(types("exited", "Exited (3) 2 seconds ago"), ["container.created", "container.died"]);
  assert.deepEqual(types("dead"), ["container.created", "container.died"]);
  const [created, died] = containerEventsFromListing(
    { ...base, State: "exited", Status: "Exited (3) 2 s ago" },
    7,
  );
  assert.equal(created?.type === "container.created" ? created.name : "", "agent-a");
  assert.equal(created?.type === "container.created" ? created.source : "", "reconcile");
  assert.equal(died?.type === "container.died" ? died.exitCode : "wrong", 3);
});

test("exit codes from listing status", () => {
  assert.equal(exitCodeFromStatus("Exited (0) 5 seconds ago"), 0);
  assert.equal(exitCodeFromStatus("Exited (143) Less than a second ago"), 143);
  assert.equal(exitCodeFromStatus("Up 3 minutes"), null);
  assert.equal(exitCodeFromStatus(undefined), null);
});

test("since from the daemon's SystemTime keeps nanoseconds; the local fallback subtracts a margin", () => {
  assert.equal(sinceFromSystemTime("2026-11-22T23:23:09.571944551Z"), "1795389789.571944551");
  assert.equal(sinceFromSystemTime("2026-11-22T23:23:09Z"), "1795389789.000000000");
  assert.equal(sinceFromSystemTime("2026-11-22T23:23:09.5+01:00"), "1795386189.500000000");
  assert.equal(sinceFromSystemTime("yesterday"), undefined);
  assert.equal(sinceFromSystemTime(undefined), undefined);
  assert.equal(sinceFromLocalTime(1_795_389_789_571, 2_000), "1795389787.571000000");
});
