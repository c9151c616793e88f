// ConnectionBudget on real loopback sockets: eviction of the oldest idle, refusal, per-key caps,
// release on close.
import assert from "node:assert/strict";
import { connect, createServer, type Socket } from "node:net";
import { test, type TestContext } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ConnectionBudget } from "./connection-budget.js";

/** `n` accepted server-side sockets on a fresh loopback server (closed after the test). */
async function sockets(t: TestContext, n: number): Promise<Socket[]> {
  const accepted: Socket[] = [];
  const server = createServer((s) => accepted.push(s));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  const clients = Array.from({ length: n }, () => connect(port, "127.0.0.1").on("error", () => {}));
  t.after(() => {
    for (const c of clients) c.destroy();
    for (const s of accepted) s.destroy();
    server.close();
  });
  while (accepted.length < n) await sleep(5);
  for (const s of accepted) s.on("error", () => {});
  return accepted;
}

/** Resolves on the socket's next 'close' (call it before that can have happened). */
function closed(s: Socket): Promise<unknown> {
  return new Promise((r) => s.once("close", r));
}

void test("evict_oldest: over the cap the oldest idle connection is destroyed, busy ones stay", async (t) => {
  const [a, b, c, d] = (await sockets(t, 4)) as [Socket, Socket, Socket, Socket];
  const busy = new Set<Socket>([a]);
  const budget = new ConnectionBudget({ limit: 2, overflow: "evict_oldest", isBusy: (s) => busy.has(s) });
  assert.deepEqual(budget.admit(a), { admitted: true, evicted: undefined });
  assert.deepEqual(budget.admit(b), { admitted: true, evicted: undefined });
  const third = budget.admit(c);
  assert.ok(third.admitted && third.evicted === b, "b is the oldest idle one (a is busy)");
  await closed(b);
  assert.equal(budget.size, 2);
  busy.add(c);
  assert.deepEqual(budget.admit(d), { admitted: false, why: "cap" }, "nothing idle to evict");
  assert.equal(budget.size, 2);
  const aClosed = closed(a);
  a.destroy();
  await aClosed;
  assert.equal(budget.size, 1, "a closed socket leaves the budget by itself");
  const cClosed = closed(c);
  budget.destroyAll();
  await cClosed;
  assert.equal(budget.size, 0);
});

void test("refuse_new: over the cap or the per-key cap a newcomer is refused and nobody is dropped", async (t) => {
  const [a, b, c, d] = (await sockets(t, 4)) as [Socket, Socket, Socket, Socket];
  const budget = new ConnectionBudget({ limit: 3, overflow: "refuse_new", perKeyLimit: 2 });
  assert.ok(budget.admit(a, "agent-1").admitted);
  assert.ok(budget.admit(b, "agent-1").admitted);
  assert.deepEqual(budget.admit(c, "agent-1"), { admitted: false, why: "peer_cap" });
  assert.ok(budget.admit(c, "agent-2").admitted);
  assert.deepEqual(budget.admit(d, "agent-3"), { admitted: false, why: "cap" });
  assert.ok(!a.destroyed && !b.destroyed && !c.destroyed);
  budget.release(a);
  assert.ok(budget.admit(d, "agent-1").admitted, "a released slot and key are free again");
  budget.release(a);
  assert.equal(budget.size, 3, "releasing twice is a no-op");
});
