// firewallProbes through a real HealthServer on loopback: the firewall's layers pass while its
// stack is down, a layer that stops answering names itself in /healthz, one status look serves a
// round, and the eBPF manager's probe is there only when it runs. The firewall is a stand-in behind
// the two-method interface the probes use (the real stack needs HAProxy, Docker and the kernel:
// test/firewall-*.test.ts).
import assert from "node:assert/strict";
import { test } from "node:test";
import { pino } from "pino";
import { firewallProbes, type ProbedFirewall } from "./firewall-probes.js";
import { HealthServer } from "./healthz.js";

type State = Awaited<ReturnType<ProbedFirewall["status"]>>;

async function healthz(probes: ReturnType<typeof firewallProbes>, t: { after: (fn: () => unknown) => void }) {
  const server = new HealthServer({ logger: pino({ level: "silent" }), port: 0, cacheMs: 0 });
  for (const [name, probe] of probes) server.addProbe(name, probe);
  const ac = new AbortController();
  await server.start(ac.signal);
  server.setReady();
  t.after(() => server.close());
  const url = `http://127.0.0.1:${server.address.port}/healthz`;
  return async () => {
    const res = await fetch(url);
    return { code: res.status, body: await res.json() };
  };
}

void test("firewall probes: pass while the stack is down, name the layer that stops answering", async (t) => {
  let state: State = { running: false, proxyHealthy: false, dnsHealthy: false, dnsAddress: "" };
  let looks = 0;
  const firewall: ProbedFirewall = {
    status: () => {
      looks++;
      return Promise.resolve(state);
    },
  };
  const get = await healthz(firewallProbes(firewall), t);
  assert.deepEqual(await get(), { code: 200, body: { status: "healthy" } });
  assert.equal(looks, 1, "one status look serves both probes of a round");

  state = { running: true, proxyHealthy: true, dnsHealthy: true, dnsAddress: "10.0.0.1:53" };
  assert.deepEqual(await get(), { code: 200, body: { status: "healthy" } });
  state = { ...state, dnsHealthy: false };
  assert.deepEqual(await get(), { code: 503, body: { status: "unhealthy", failed_probe: "firewall-dns" } });
  state = { ...state, proxyHealthy: false };
  assert.deepEqual(await get(), { code: 503, body: { status: "unhealthy", failed_probe: "firewall-proxy" } });
  // A stack without a DNS gate has nothing to probe there.
  state = { running: true, proxyHealthy: true, dnsHealthy: false, dnsAddress: "" };
  assert.deepEqual(await get(), { code: 200, body: { status: "healthy" } });
});

void test("firewall probes: the eBPF manager's probe fails when its socket does not answer", async (t) => {
  const firewall: ProbedFirewall = {
    status: () => Promise.resolve({ running: false, proxyHealthy: false, dnsHealthy: false, dnsAddress: "" }),
  };
  let answering = true;
  const manager = {
    status: () => (answering ? Promise.resolve({}) : Promise.reject(new Error("connection refused"))),
  };
  const probes = firewallProbes(firewall, () => manager);
  assert.deepEqual(
    probes.map(([name]) => name),
    ["firewall-proxy", "firewall-dns", "ebpf-manager"],
  );
  assert.deepEqual(
    firewallProbes(firewall).map(([name]) => name),
    ["firewall-proxy", "firewall-dns"],
  );
  const get = await healthz(probes, t);
  assert.deepEqual(await get(), { code: 200, body: { status: "healthy" } });
  answering = false;
  assert.deepEqual(await get(), { code: 503, body: { status: "unhealthy", failed_probe: "ebpf-manager" } });
});
