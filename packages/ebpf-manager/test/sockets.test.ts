// Real sockets in real cgroups: the programs steer, deny and restore on the running kernel.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { bpffs, cgroup2, root, skipReason } from "../../../test/harness/preconditions.js";
import { waitFor } from "../../../test/harness/wait-for.js";
import type { DecisionEvent } from "@clawker/controlplane";
import { ensureBpffs, Lab, ports, remote } from "./fixture.js";

ensureBpffs();
const EPERM = 1;

describe("ebpf programs on real sockets", { skip: skipReason(root, cgroup2, bpffs) }, () => {
  let lab: Lab;
  let agent: string;

  before(async () => {
    lab = new Lab();
    try {
      await lab.setUp();
    } catch (err) {
      await lab.tearDown();
      throw err;
    }
    agent = lab.cgroup("agent");
  });
  after(async () => {
    await lab.tearDown();
  });

  test("a process outside the enrolled parent is untouched", async () => {
    const r = await lab.probe(undefined, "tcp", remote.web, "443");
    assert.equal(r.ok, true);
    assert.deepEqual(r["reply"], {
      listener: "direct",
      origDst: null,
      peer: (r["reply"] as { peer: string }).peer,
    });
  });

  test("TCP to an unknown address goes to the catch-all; getpeername and SO_ORIGINAL_DST show the original", async () => {
    const r = await lab.probe(agent, "tcp", remote.web, "443");
    assert.equal(r.ok, true);
    assert.equal(r["peer"], `${remote.web}:443`);
    const reply = r["reply"] as { listener: string; origDst: string };
    assert.equal(reply.listener, "catchall");
    assert.equal(reply.origDst, `${remote.web}:443`);
  });

  test("TCP to an address of a routed name goes to that route's listener", async (t) => {
    await lab.client.syncRoutes([{ identity: 7, port: 443, protocol: "tcp", listener: ports.route }]);
    await lab.client.dnsUpdate([{ address: remote.web, identity: 7, ttl: 60 }]);
    t.after(async () => {
      await lab.client.dnsUpdate([{ address: remote.web, identity: 7, ttl: 0 }]);
      await lab.client.syncRoutes([]);
    });
    const r = await lab.probe(agent, "tcp", remote.web, "443");
    assert.equal((r["reply"] as { listener: string }).listener, "route");
    assert.equal((r["reply"] as { origDst: string }).origDst, `${remote.web}:443`);
    // same address, a port without a route: the catch-all
    const other = await lab.probe(agent, "tcp", remote.web, "80");
    assert.equal((other["reply"] as { listener: string }).listener, "catchall");
  });

  test("a TCP Fast Open connect (sendto with MSG_FASTOPEN) is steered too", async () => {
    const r = await lab.probe(agent, "tcp-fastopen", remote.web, "443");
    assert.equal(r.ok, true);
    assert.equal(r["peer"], `${remote.web}:443`);
    assert.equal((r["reply"] as { listener: string }).listener, "catchall");
  });

  test("a v4-mapped IPv6 connect takes the IPv4 path, and getpeername restores the mapped address", async () => {
    const r = await lab.probe(agent, "tcp", `::ffff:${remote.web}`, "443");
    assert.equal(r.ok, true);
    assert.equal(r["peer"], `[::ffff:${remote.web}]:443`);
    assert.equal((r["reply"] as { listener: string }).listener, "catchall");
    assert.equal((r["reply"] as { origDst: string }).origDst, `${remote.web}:443`);
  });

  test("native IPv6 is denied, IPv6 loopback passes", async () => {
    const denied = await lab.probe(agent, "tcp", "fd00::1", "443");
    assert.equal(denied.ok, false);
    assert.equal(denied.errno, EPERM);
    const loop = await lab.probe(agent, "tcp", "::1", String(ports.v6loop));
    assert.equal(loop.ok, true);
    assert.equal((loop["reply"] as { listener: string }).listener, "v6loop");
  });

  test("UDP 53 via sendto reaches the DNS gate and the reply appears to come from the server asked", async () => {
    const r = await lab.probe(agent, "udp-sendto", remote.dns, "53");
    assert.equal(r.ok, true);
    assert.equal((r["reply"] as { listener: string }).listener, "dnsgate");
    assert.equal(r["from"], `${remote.dns}:53`);
  });

  test("UDP 53 via a connected socket: DNS gate, reply source and peer restored", async () => {
    const r = await lab.probe(agent, "udp-connected", remote.dns, "53");
    assert.equal(r.ok, true);
    assert.equal((r["reply"] as { listener: string }).listener, "dnsgate");
    assert.equal(r["from"], `${remote.dns}:53`);
    assert.equal(r["peer"], `${remote.dns}:53`);
    const mapped = await lab.probe(agent, "udp-connected", `::ffff:${remote.dns}`, "53");
    assert.equal((mapped["reply"] as { listener: string }).listener, "dnsgate");
    assert.equal(mapped["from"], `[::ffff:${remote.dns}]:53`);
  });

  test("other UDP is denied; routed UDP goes to the proxy's UDP port with the source restored", async (t) => {
    const denied = await lab.probe(agent, "udp-sendto", remote.web, "5000");
    assert.equal(denied.ok, false);
    assert.equal(denied.errno, EPERM);
    const deniedConnected = await lab.probe(agent, "udp-connected", remote.web, "5000");
    assert.equal(deniedConnected.errno, EPERM);

    await lab.client.syncRoutes([{ identity: 9, port: 5000, protocol: "udp", listener: ports.udpProxy }]);
    await lab.client.dnsUpdate([{ address: remote.web, identity: 9, ttl: 60 }]);
    t.after(async () => {
      await lab.client.dnsUpdate([{ address: remote.web, identity: 9, ttl: 0 }]);
      await lab.client.syncRoutes([]);
    });
    const routed = await lab.probe(agent, "udp-sendto", remote.web, "5000");
    assert.equal(routed.ok, true);
    assert.equal((routed["reply"] as { listener: string }).listener, "udpproxy");
    assert.equal(routed["from"], `${remote.web}:5000`);
  });

  test("raw, ICMP ping and other non-TCP/UDP sockets are denied inside, allowed outside", async () => {
    for (const kind of ["raw", "ping"]) {
      const inside = await lab.probe(agent, kind);
      assert.equal(inside.ok, false, kind);
      assert.equal(inside.errno, EPERM, kind);
      const outside = await lab.probe(undefined, kind);
      assert.equal(outside.ok, true, kind);
    }
    // SCTP may be missing from the kernel; inside it must fail either way, and with EPERM when
    // the kernel would have created it
    const sctpOutside = await lab.probe(undefined, "sctp");
    const sctpInside = await lab.probe(agent, "sctp");
    assert.equal(sctpInside.ok, false);
    if (sctpOutside.ok) assert.equal(sctpInside.errno, EPERM);
  });

  test("bypass lets a cgroup through untouched until unbypass", async (t) => {
    const cg = lab.cgroup("bypassed");
    await lab.client.bypass({ cgroup: cg });
    t.after(() => lab.client.unbypass({ cgroup: cg }).then(() => undefined));
    const open = await lab.probe(cg, "tcp", remote.web, "443");
    assert.equal((open["reply"] as { listener: string }).listener, "direct");
    assert.equal((await lab.probe(cg, "raw")).ok, true);
    await lab.client.unbypass({ cgroup: cg });
    const closed = await lab.probe(cg, "tcp", remote.web, "443");
    assert.equal((closed["reply"] as { listener: string }).listener, "catchall");
  });

  test("a timed bypass ends in the kernel by itself: no unbypass, no manager call", async (t) => {
    const cg = lab.cgroup("timed");
    await lab.client.bypass({ cgroup: cg }, 5);
    t.after(() => lab.client.unbypass({ cgroup: cg }).then(() => undefined));
    const [entry] = (await lab.client.dump()).bypass.filter((b) => b.path?.endsWith("/timed"));
    assert.ok(
      entry !== undefined &&
        entry.expiresInMs !== null &&
        entry.expiresInMs > 4_000 &&
        entry.expiresInMs <= 6_000,
      JSON.stringify(entry),
    );
    // Open now (five seconds is long enough for one probe); then the kernel's clock ends it.
    const open = await lab.probe(cg, "tcp", remote.web, "443");
    assert.equal((open["reply"] as { listener: string }).listener, "direct");
    await waitFor(
      async () =>
        ((await lab.probe(cg, "tcp", remote.web, "443"))["reply"] as { listener: string }).listener ===
        "catchall",
      { what: "the bypass to end in the kernel", timeoutMs: 20_000 },
    );
    assert.equal((await lab.client.gc()).bypass, 1, "gc removes the spent entry");
    await assert.rejects(
      lab.client.bypass({ cgroup: cg }, 0),
      (err: { reason?: string }) => err.reason === "invalid_argument",
    );
  });

  test("loopback passes unchanged, the agents' subnet passes, the gateway goes to the catch-all", async (t) => {
    const loop = await lab.probe(agent, "tcp", "127.0.0.1", String(ports.route));
    assert.equal((loop["reply"] as { listener: string; origDst: unknown }).listener, "route");
    assert.equal((loop["reply"] as { origDst: unknown }).origDst, null);

    const cg = lab.cgroup("subnet");
    await lab.client.enroll(
      { cgroup: cg },
      { ...lab.defaultConfig(), subnet: "10.250.0.0/24", gateway: remote.dns },
    );
    t.after(() => lab.client.unenroll({ cgroup: cg }).then(() => undefined));
    const inSubnet = await lab.probe(cg, "tcp", remote.web, "443");
    assert.equal((inSubnet["reply"] as { listener: string }).listener, "direct");
    const gw = await lab.probe(cg, "tcp", remote.dns, "443");
    assert.equal((gw["reply"] as { listener: string }).listener, "catchall");
  });

  test("only the gateway's exempt ports pass: another port of it goes to the catch-all, UDP to it is denied", async (t) => {
    const cg = lab.cgroup("gateway");
    await lab.client.enroll(
      { cgroup: cg },
      { ...lab.defaultConfig(), subnet: "10.250.0.0/24", gateway: remote.dns },
    );
    await lab.client.gatewayPorts([{ address: remote.dns, port: ports.gatewayCp, protocol: "tcp" }]);
    t.after(async () => {
      await lab.client.gatewayPorts([]);
      await lab.client.unenroll({ cgroup: cg });
    });
    const cp = await lab.probe(cg, "tcp", remote.dns, String(ports.gatewayCp));
    assert.equal((cp["reply"] as { listener: string }).listener, "gatewaycp");
    assert.equal((cp["reply"] as { origDst: unknown }).origDst, null, "passed unchanged, not steered");
    // A host service on another port of the gateway (listening: a hole would reach it).
    const host = await lab.probe(cg, "tcp", remote.dns, String(ports.gatewayHost));
    assert.equal((host["reply"] as { listener: string }).listener, "catchall");
    assert.equal((host["reply"] as { origDst: string }).origDst, `${remote.dns}:${ports.gatewayHost}`);
    // The exemption is TCP only: UDP to the same port of the gateway is denied.
    const udp = await lab.probe(cg, "udp-sendto", remote.dns, String(ports.gatewayCp));
    assert.equal(udp.ok, false);
    assert.equal(udp.errno, EPERM);
    assert.deepEqual((await lab.client.dump()).gatewayPorts, [
      { address: remote.dns, port: ports.gatewayCp, protocol: "tcp" },
    ]);
    // Replacing the set removes what is not in it: the port is refused again.
    await lab.client.gatewayPorts([]);
    const closed = await lab.probe(cg, "tcp", remote.dns, String(ports.gatewayCp));
    assert.equal((closed["reply"] as { listener: string }).listener, "catchall");
  });

  test("a deeper cgroup is enforced by its ancestor's config, and its own config wins over it", async (t) => {
    const deep = lab.cgroup("a/b/c");
    const r = await lab.probe(deep, "tcp", remote.web, "443");
    assert.equal((r["reply"] as { listener: string }).listener, "catchall");
    const own = lab.cgroup("own");
    const res = await lab.client.enroll(
      { cgroup: own },
      { ...lab.defaultConfig(), catchallPort: ports.route },
    );
    t.after(() => lab.client.unenroll({ cgroup: own }).then(() => undefined));
    assert.equal(res.attached, false);
    const o = await lab.probe(own, "tcp", remote.web, "443");
    assert.equal((o["reply"] as { listener: string }).listener, "route");
  });

  test("events are rate-limited per cgroup and every decision is counted", async () => {
    const cg = lab.cgroup("flood");
    const id = Lab.cgroupId(cg);
    const r = await lab.probe(cg, "tcp-loop", remote.web, "443", "400");
    const total = r["total"] as number;
    const c = (await lab.client.dump()).counters.find((x) => x.cgroupId === id);
    assert.ok(c);
    assert.equal(c.redirected, total);
    assert.equal(c.events + c.eventsDropped, total);
    // 100 per second per cgroup: a 400 ms run spans at most two windows
    assert.ok(c.events <= 200, `events ${c.events}`);
    if (total > 200) assert.ok(c.eventsDropped > 0);
  });

  test("decisions stream as events and are counted per cgroup", async () => {
    const cg = lab.cgroup("events");
    const id = Lab.cgroupId(cg);
    const ac = new AbortController();
    const stream = await lab.client.events(ac.signal);
    const seen: DecisionEvent[] = [];
    const reader = (async () => {
      for await (const e of stream) {
        seen.push(e);
        if (e.cgroupId === id && e.verdict === "deny") return;
      }
    })();
    const denied = await lab.probe(cg, "udp-sendto", remote.web, "5000");
    assert.equal(denied.ok, false);
    await waitFor(() => seen.some((e) => e.cgroupId === id && e.verdict === "deny"), { what: "deny event" });
    ac.abort();
    await reader;
    const deny = seen.find((e) => e.cgroupId === id && e.verdict === "deny");
    assert.deepEqual(
      {
        hook: deny?.hook,
        protocol: deny?.protocol,
        address: deny?.address,
        port: deny?.port,
        family: deny?.family,
      },
      { hook: "sendmsg4", protocol: "udp", address: remote.web, port: 5000, family: 4 },
    );
    const dump = await lab.client.dump();
    const counters = dump.counters.find((c) => c.cgroupId === id);
    assert.equal(counters?.denied, 1);
    assert.equal(counters?.path, cg);
  });
});
