import assert from "node:assert/strict";
import { createServer, type Server } from "node:net";
import { test } from "node:test";
import { freePorts, isAddrInUse, withFreePorts } from "./free-ports.js";

function listen(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(port, "127.0.0.1", () => resolve(s));
  });
}

void test("ports are distinct, below the kernel's ephemeral range, and never handed out twice", async () => {
  const a = await freePorts(20);
  const b = await freePorts(20, { protocols: ["tcp", "udp"] });
  const all = [...a, ...b];
  assert.equal(new Set(all).size, 40);
  for (const p of all) assert.ok(p >= 20_000 && p < 32_768, String(p));
});

void test("a port someone holds is skipped, and the ports handed out can be bound", async (t) => {
  const [probe] = await freePorts(1);
  // Hold the next few candidates, so the next call must skip them.
  const held = await Promise.all([1, 2, 3].map((i) => listen(probe! + i)));
  t.after(() => held.forEach((s) => s.close()));
  const ports = await freePorts(3);
  for (const s of held) assert.ok(!ports.includes((s.address() as { port: number }).port));
  const servers = await Promise.all(ports.map(listen));
  servers.forEach((s) => s.close());
});

void test("consecutive ports restart their run after a held port", async (t) => {
  const [probe] = await freePorts(1);
  const blocker = await listen(probe! + 2);
  t.after(() => blocker.close());
  const run = await freePorts(4, { consecutive: true });
  assert.deepEqual(
    run,
    run.map((_, i) => run[0]! + i),
  );
  assert.ok(!run.includes(probe! + 2));
});

void test("withFreePorts retries only on EADDRINUSE", async () => {
  let calls = 0;
  const got = await withFreePorts(1, (ports) => {
    calls++;
    if (calls < 3)
      throw new Error("helper failed", { cause: Object.assign(new Error("listen EADDRINUSE"), {}) });
    return Promise.resolve(ports);
  });
  assert.equal(calls, 3);
  assert.equal(got.length, 1);
  await assert.rejects(
    withFreePorts(1, () => Promise.reject(new Error("other"))),
    /other/,
  );
  assert.equal(isAddrInUse({ code: "EADDRINUSE" }), true);
  assert.equal(isAddrInUse(new Error("ECONNREFUSED")), false);
});

void test("a slice whose guard another process holds is skipped; the ports of a claimed slice are ours", async (t) => {
  const [probe] = await freePorts(1);
  const slice = Math.floor((probe! - 20_000) / 256);
  const slices = Math.floor((32_768 - 20_000) / 256);
  const guard = (n: number): number => 20_000 + (n % slices) * 256;
  // Another process's guard on the next slice: this process must go past it when it needs more.
  const other = await listen(guard(slice + 1));
  t.after(() => other.close());
  const ports = await freePorts(400);
  const sliceOf = (p: number): number => Math.floor((p - 20_000) / 256);
  assert.ok(!ports.some((p) => sliceOf(p) === sliceOf(guard(slice + 1))), "nothing from the held slice");
  assert.ok(!ports.some((p) => (p - 20_000) % 256 === 0), "a guard is never handed out");
  assert.ok(
    ports.some((p) => sliceOf(p) === sliceOf(guard(slice + 2))),
    "the slice after it is claimed",
  );
  // ...and its guard is bound by this process now, so no other process claims it.
  await assert.rejects(listen(guard(slice + 2)), /EADDRINUSE/);
});
