import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { LABELS, type FirewallDenied } from "@clawker/overseer";
import { egress } from "@clawker/proto";
import { pino } from "pino";
import { ContainerAddressIndex } from "../../agents/address-index.js";
import { Registry } from "../../agents/registry.js";
import { agentResolver } from "./agent-resolver.js";
import { EventHub, type FirewallEventInput } from "./event-hub.js";
import { eventFilter } from "./event-filter.js";
import { bpfEvent, dnsEvent, proxyEvent } from "./sources.js";

const log = pino({ level: "silent" });

function denial(layer: egress.Layer, over: Partial<FirewallEventInput> = {}): FirewallEventInput {
  const { seq: _s, schemaVersion: _v, ...blank } = egress.FirewallEvent.create();
  return {
    ...blank,
    timeUnixNanos: 1_000_000_000n,
    layer,
    verdict: egress.Verdict.VERDICT_DENIED,
    dstName: "denied.example",
    port: 443,
    reason: "no_rule",
    ...over,
  };
}

describe("EventHub", () => {
  test("assigns seq and schema version, keeps a bounded ring, backfills since a time in order", () => {
    const hub = new EventHub({ log, ringCapacity: 3 });
    const seen: egress.FirewallEvent[] = [];
    hub.onEvent((e) => seen.push(e));
    for (let i = 1; i <= 5; i++)
      hub.publish(denial(egress.Layer.LAYER_PROXY, { timeUnixNanos: BigInt(i) * 1000n, port: i }));
    assert.deepEqual(
      seen.map((e) => [e.seq, e.schemaVersion]),
      [1n, 2n, 3n, 4n, 5n].map((s) => [s, 1]),
    );
    assert.deepEqual(
      hub.backfill(1n, () => true).map((e) => e.port),
      [3, 4, 5],
      "the ring keeps the newest 3",
    );
    assert.deepEqual(
      hub.backfill(4000n, () => true).map((e) => e.port),
      [4, 5],
    );
    assert.equal(hub.oldest()?.port, 3);
    assert.equal(hub.stats().ringSize, 3);
  });

  test("10,000 denials/s for 10 s from two sources over 4,000/s limits each: published = delivered + counted drops, exactly", () => {
    let now = 0;
    let told = 0;
    const hub = new EventHub({
      log,
      ratePerSecond: { proxy: 4000, dns: 4000 },
      nowMs: () => now,
      onDrop: (_source, n) => (told += n),
    });
    let delivered = 0;
    hub.onEvent(() => delivered++);
    // 10 s of simulated time at 0.1 ms per denial, alternating two sources.
    for (let i = 0; i < 100_000; i++) {
      now = i / 10;
      hub.publish(denial(i % 2 === 0 ? egress.Layer.LAYER_PROXY : egress.Layer.LAYER_DNS));
    }
    hub.countUpstreamDrops("dns", 7);
    const s = hub.stats();
    assert.equal(s.published, 100_007);
    assert.equal(s.delivered, delivered);
    assert.equal(s.published, s.delivered + s.dropped);
    assert.equal(told, s.dropped, "every drop reaches the metrics seam");
    for (const src of ["proxy", "dns"] as const) {
      const c = s.sources[src];
      assert.equal(c.published, c.delivered + c.droppedRateLimited + c.droppedUpstream, src);
      // 5,000/s offered each: one second's burst plus 4,000/s for 10 s (within the bucket's rounding).
      assert.ok(c.delivered >= 43_000 && c.delivered <= 44_001, `${src} delivered ${c.delivered}`);
      assert.ok(c.droppedRateLimited > 0, `${src} dropped some`);
    }
    assert.equal(s.sources.dns.droppedUpstream, 7);
    assert.equal(s.sources.bpf.published, 0);
  });

  test("a throwing listener is counted and the others still get every event", () => {
    const hub = new EventHub({ log });
    let got = 0;
    hub.onEvent(() => {
      throw new Error("boom");
    });
    const off = hub.onEvent(() => got++);
    hub.publish(denial(egress.Layer.LAYER_BPF));
    off();
    hub.publish(denial(egress.Layer.LAYER_BPF));
    assert.equal(got, 1);
    assert.equal(hub.stats().listenerFailures, 2);
  });

  test("denials are published on the overseer's firewall topic", () => {
    const published: FirewallDenied[] = [];
    const hub = new EventHub({ log, topic: { publish: (e) => published.push(e) } });
    hub.publish(denial(egress.Layer.LAYER_PROXY, { containerId: "c1", timeUnixNanos: 5_000_000n }));
    hub.publish(denial(egress.Layer.LAYER_PROXY, { verdict: egress.Verdict.VERDICT_ALLOWED }));
    assert.deepEqual(published, [
      {
        type: "firewall.denied",
        containerId: "c1",
        destination: "denied.example",
        proto: "",
        port: 443,
        time: 5,
      },
    ]);
  });
});

describe("agent resolution", () => {
  const dir = mkdtempSync(join(tmpdir(), "event-hub-"));
  const AGENT = "a".repeat(64);
  const LABELLED = "b".repeat(64);
  const registry = new Registry(join(dir, "registry.db"));
  registry.register(
    { containerId: AGENT, agentName: "dev", project: "web", certThumbprint: "ee".repeat(32) },
    1,
  );
  const index = new ContainerAddressIndex({ inspect: () => Promise.resolve(undefined), log });
  const agentLabels = { [LABELS.managed]: "true", [LABELS.purpose]: "agent" };
  index.put({ id: AGENT, labels: agentLabels, addresses: ["10.9.0.2"] });
  index.put({
    id: LABELLED,
    labels: { ...agentLabels, [LABELS.agent]: "ci", [LABELS.project]: "api" },
    addresses: ["10.9.0.3"],
  });
  // Two containers claiming one address: nobody (never a guess between them).
  index.put({ id: "c".repeat(64), labels: agentLabels, addresses: ["10.9.0.9"] });
  index.put({ id: "d".repeat(64), labels: agentLabels, addresses: ["10.9.0.9"] });
  const hub = new EventHub({
    log,
    resolver: agentResolver({
      registry: () => registry,
      index,
      enrolled: () => [{ containerId: AGENT, cgroupId: "4242" }],
    }),
  });
  const seen: egress.FirewallEvent[] = [];
  hub.onEvent((e) => seen.push(e));
  const who = (e: egress.FirewallEvent): string[] => [e.agentName, e.project, e.containerId];

  test("by source address through the registry, by cgroup id through the enrolments, labels before registering", () => {
    hub.publish(denial(egress.Layer.LAYER_PROXY), { address: "10.9.0.2" });
    hub.publish(denial(egress.Layer.LAYER_BPF), { cgroupId: "4242" });
    hub.publish(denial(egress.Layer.LAYER_DNS), { address: "10.9.0.3" });
    assert.deepEqual(seen.splice(0).map(who), [
      ["dev", "web", AGENT],
      ["dev", "web", AGENT],
      ["ci", "api", LABELLED],
    ]);
  });

  test("unknown, ambiguous, and a source's own claim: empty, never guessed", () => {
    hub.publish(denial(egress.Layer.LAYER_PROXY), { address: "10.9.0.77" });
    hub.publish(denial(egress.Layer.LAYER_PROXY), { address: "10.9.0.9" });
    hub.publish(denial(egress.Layer.LAYER_BPF), { cgroupId: "999" });
    // The proxy's log line named an agent: the hub does not take its word for it.
    hub.publish(denial(egress.Layer.LAYER_PROXY, { agentName: "dev", project: "web" }), {
      address: "10.9.0.77",
    });
    assert.deepEqual(seen.splice(0).map(who), [
      ["", "", ""],
      ["", "", ""],
      ["", "", ""],
      ["", "", ""],
    ]);
    registry.close();
    rmSync(dir, { recursive: true, force: true });
  });
});

describe("sources and filter", () => {
  test("each layer's decision becomes one event with its origin", () => {
    const dns = dnsEvent({
      time: 1_700_000_000_123,
      client: "10.9.0.2",
      agent: "dev",
      project: "web",
      name: "denied.example",
      type: "A",
      transport: "udp",
      verdict: "denied",
      reason: "rule_deny",
      rule: { pattern: "denied.example", scope: { kind: "agent", name: "web.dev" }, action: "deny" },
      identity: undefined,
      rcode: "NXDOMAIN",
      addresses: [],
      cached: false,
      error: undefined,
    });
    assert.deepEqual(dns.origin, { address: "10.9.0.2" });
    assert.equal(dns.event.timeUnixNanos, 1_700_000_000_123_000_000n);
    assert.deepEqual(dns.event.rule, {
      key: "denied.example",
      project: "web",
      agentName: "dev",
      action: "deny",
    });
    assert.equal(dns.event.agentName, "", "the source's agent is not copied");
    assert.equal(dns.event.layer, egress.Layer.LAYER_DNS);

    const proxy = proxyEvent({
      layer: "mitm",
      time: 1_700_000_000.5,
      source: "10.9.0.2",
      sourcePort: 40000,
      agent: undefined,
      project: undefined,
      name: "api.example",
      port: 443,
      verdict: "deny",
      reason: "path_denied",
      rule: "api.example:https:443",
      upstream: undefined,
      method: "POST",
      path: "/admin",
      status: 403,
      durationMs: 2.5,
      bytesIn: 10,
      bytesOut: 20,
      termination: "--",
    });
    assert.equal(proxy.event.reason, "path_denied");
    assert.equal(proxy.event.protocol, "https");
    assert.equal(proxy.event.durationMicros, 2500n);
    assert.equal(proxy.event.timeUnixNanos, 1_700_000_000_500_000_000n);
    // The UDP relay reports in the proxy's shape: one session, protocol udp, the upstream it chose.
    const udp = proxyEvent({
      layer: "udp",
      time: 1_700_000_001,
      source: "10.9.0.2",
      sourcePort: 40001,
      agent: "web.dev",
      project: "web",
      name: "ntp.example",
      port: 123,
      verdict: "allow",
      reason: undefined,
      rule: "global/ntp.example:udp:123",
      upstream: "192.0.2.7",
      method: undefined,
      path: undefined,
      status: undefined,
      durationMs: 0,
      bytesIn: 0,
      bytesOut: 0,
      termination: "--",
    });
    assert.equal(udp.event.protocol, "udp");
    assert.equal(udp.event.layer, egress.Layer.LAYER_PROXY);
    assert.deepEqual(
      [udp.event.dstName, udp.event.dstAddr, udp.event.port],
      ["ntp.example", "192.0.2.7", 123],
    );

    const bpf = bpfEvent({
      tsNs: "1",
      cgroupId: "4242",
      hook: "sendmsg4",
      verdict: "deny",
      family: 4,
      protocol: "udp",
      address: "1.1.1.1",
      port: 53,
      newAddress: "",
      newPort: 0,
      identity: 0,
    });
    assert.deepEqual(bpf.origin, { cgroupId: "4242" });
    assert.equal(bpf.event.verdict, egress.Verdict.VERDICT_DENIED);
    assert.equal(bpf.event.reason, "kernel_deny");
    assert.equal(bpf.event.timeUnixNanos, 0n, "stamped by the hub: the kernel's clock is not wall time");
  });

  test("filters by agent, project, verdict and layer; gaps always pass; bad enums refused", () => {
    const e = (over: Partial<egress.FirewallEvent>): egress.FirewallEvent => ({
      ...egress.FirewallEvent.create(),
      agentName: "dev",
      project: "web",
      verdict: egress.Verdict.VERDICT_DENIED,
      layer: egress.Layer.LAYER_PROXY,
      ...over,
    });
    const f = eventFilter({
      agentName: "dev",
      project: "web",
      verdicts: [egress.Verdict.VERDICT_DENIED],
      layers: [egress.Layer.LAYER_PROXY, egress.Layer.LAYER_DNS],
    });
    assert.equal(f(e({})), true);
    assert.equal(f(e({ agentName: "ci" })), false);
    assert.equal(f(e({ project: "" })), false);
    assert.equal(f(e({ verdict: egress.Verdict.VERDICT_ALLOWED })), false);
    assert.equal(f(e({ layer: egress.Layer.LAYER_BPF })), false);
    assert.equal(f(e({ layer: egress.Layer.LAYER_BPF, gapCount: 3n })), true);
    assert.equal(eventFilter(undefined)(e({ agentName: "" })), true);
    assert.throws(
      () => eventFilter({ agentName: "", project: "", verdicts: [0], layers: [] }),
      /filter.verdicts/,
    );
    assert.throws(
      () => eventFilter({ agentName: "", project: "", verdicts: [], layers: [9 as egress.Layer] }),
      /filter.layers/,
    );
  });
});
