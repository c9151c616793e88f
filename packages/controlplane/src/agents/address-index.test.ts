import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Overseer, type ContainerEvent } from "@clawker/overseer";
import { LABELS } from "@clawker/proto";
import pino from "pino";
import {
  ContainerAddressIndex,
  normalizeAddress,
  type AddressIndexChange,
  type InspectedContainer,
} from "./address-index.js";

const log = pino({ level: "silent" });
const AGENT = { [LABELS.managed]: "true", [LABELS.purpose]: "agent", [LABELS.agent]: "dev" };
const id = (n: number): string => n.toString(16).padStart(64, "0");
const started = (cid: string, labels: Record<string, string> = AGENT): ContainerEvent => ({
  type: "container.started",
  id: cid,
  name: "x",
  labels,
  time: 0,
  source: "event",
});

describe("normalizeAddress", () => {
  const cases: Array<[string, string | undefined]> = [
    ["10.213.0.5:51234", "10.213.0.5"],
    ["10.213.0.5", "10.213.0.5"],
    ["[::ffff:10.213.0.5]:4000", "10.213.0.5"],
    ["::ffff:10.213.0.5", "10.213.0.5"],
    ["[fd00::5]:4000", "fd00::5"],
    ["FD00::5", "fd00::5"],
    ["[fe80::1%eth0]:1", "fe80::1"],
    ["unix:/tmp/x", undefined],
    ["not an address", undefined],
    ["[::1", undefined],
  ];
  for (const [input, want] of cases)
    test(JSON.stringify(input), () => assert.equal(normalizeAddress(input), want));
});

describe("ContainerAddressIndex", () => {
  test("a started agent is inspected once and indexed; died removes it", async () => {
    const calls: string[] = [];
    const index = new ContainerAddressIndex({
      log,
      inspect: (cid) => {
        calls.push(cid);
        return Promise.resolve({ id: cid, labels: AGENT, addresses: ["10.213.0.5"], isRunning: true });
      },
    });
    const changes: AddressIndexChange[] = [];
    index.onChange((c) => changes.push(c));
    index.handle(started(id(1)));
    await index.settled();
    for (let i = 0; i < 5; i++) assert.equal(index.lookup("10.213.0.5:1000").kind, "found");
    assert.deepEqual(calls, [id(1)]);
    index.handle({
      type: "container.died",
      id: id(1),
      name: "x",
      labels: AGENT,
      time: 0,
      source: "event",
      exitCode: 0,
    });
    assert.equal(index.lookup("10.213.0.5").kind, "none");
    assert.deepEqual(
      changes.map((c) => c.kind),
      ["up", "down"],
    );
  });

  test("non-agent containers are never inspected", async () => {
    let calls = 0;
    const index = new ContainerAddressIndex({
      log,
      inspect: () => {
        calls++;
        return Promise.resolve(undefined);
      },
    });
    index.handle(started(id(2), { [LABELS.managed]: "true", [LABELS.purpose]: "controlplane" }));
    await index.settled();
    assert.equal(calls, 0);
  });

  test("an inspect answer that arrives after the container died is dropped", async () => {
    let answer!: (c: InspectedContainer) => void;
    const index = new ContainerAddressIndex({ log, inspect: () => new Promise((r) => (answer = r)) });
    index.handle(started(id(3)));
    index.handle({
      type: "container.destroyed",
      id: id(3),
      name: "x",
      labels: AGENT,
      time: 0,
      source: "event",
    });
    answer({ id: id(3), labels: AGENT, addresses: ["10.213.0.7"], isRunning: true });
    await index.settled();
    assert.equal(index.lookup("10.213.0.7").kind, "none");
  });

  test("a stopped container, or an inspect failure, indexes nothing", async () => {
    const index = new ContainerAddressIndex({
      log,
      inspect: (cid) =>
        cid === id(4)
          ? Promise.resolve({ id: cid, labels: AGENT, addresses: ["10.213.0.8"], isRunning: false })
          : Promise.reject(new Error("docker down")),
    });
    index.handle(started(id(4)));
    index.handle(started(id(5)));
    await index.settled();
    assert.equal(index.records().length, 0);
  });

  test("one address on two containers is ambiguous until one goes", () => {
    const index = new ContainerAddressIndex({ log, inspect: () => Promise.resolve(undefined) });
    index.put({ id: id(6), labels: AGENT, addresses: ["10.213.0.9"] });
    index.put({ id: id(7), labels: AGENT, addresses: ["10.213.0.9", "10.213.1.9"] });
    const both = index.lookup("10.213.0.9");
    assert.equal(both.kind, "ambiguous");
    assert.deepEqual([...(both.kind === "ambiguous" ? both.containerIds : [])].sort(), [id(6), id(7)]);
    assert.equal(index.lookup("10.213.1.9").kind, "found");
    index.remove(id(6));
    const one = index.lookup("10.213.0.9");
    assert.equal(one.kind === "found" ? one.record.id : undefined, id(7));
  });

  test("a reconcile listing removes containers that no longer exist", () => {
    const index = new ContainerAddressIndex({ log, inspect: () => Promise.resolve(undefined) });
    index.put({ id: id(8), labels: AGENT, addresses: ["10.213.0.10"] });
    index.put({ id: id(9), labels: AGENT, addresses: ["10.213.0.11"] });
    index.handle({ type: "docker.reconciled", containerIds: [id(9)], time: 0 });
    assert.deepEqual(
      index.records().map((r) => r.id),
      [id(9)],
    );
  });

  test("start follows the containers topic and close stops following it", async () => {
    const overseer = new Overseer();
    try {
      const index = new ContainerAddressIndex({
        log,
        containers: overseer.containers,
        inspect: (cid) =>
          Promise.resolve({ id: cid, labels: AGENT, addresses: ["10.213.0.12"], isRunning: true }),
      });
      const ac = new AbortController();
      index.start(ac.signal);
      overseer.containers.publish(started(id(10)));
      for (let i = 0; i < 200 && index.records().length === 0; i++) await new Promise((r) => setImmediate(r));
      await index.settled();
      assert.equal(index.lookup("10.213.0.12").kind, "found");
      ac.abort();
      index.close();
      assert.equal(overseer.containers.stats().subscribers, 0);
    } finally {
      await overseer.close();
    }
  });
});
