// /healthz over real HTTP on 127.0.0.1:0 with real (in-process) probes.
import assert from "node:assert/strict";
import { Agent, createServer as createHttpServer, request, type IncomingHttpHeaders } from "node:http";
import { connect, type Socket } from "node:net";
import { test, type TestContext } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { waitFor } from "@clawker/test-support";
import { httpProbe, type Probe } from "../supervisor/probes.js";
import { HealthServer, HealthzError, type HealthzOptions } from "./healthz.js";
import { ListenerCounters } from "./listener-counters.js";
import { RefusalLog } from "./refusal-log.js";

interface Reply {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

function get(port: number, path = "/healthz", method = "GET", agent: Agent | false = false): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, method, agent }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

async function serve(
  t: TestContext,
  options: Partial<HealthzOptions> = {},
): Promise<{ h: HealthServer; port: number }> {
  const h = new HealthServer({ logger: pino({ level: "silent" }), host: "127.0.0.1", port: 0, ...options });
  const ac = new AbortController();
  t.after(async () => {
    ac.abort();
    await h.close();
  });
  await h.start(ac.signal);
  return { h, port: h.address.port };
}

const ok: Probe = () => Promise.resolve();
const fails: Probe = () => Promise.reject(new Error("down"));

void test("not ready until setReady, then healthy; readiness is terminal", async (t) => {
  const { h, port } = await serve(t);
  h.addProbe("authserver", ok);
  const before = await get(port);
  assert.equal(before.status, 503);
  assert.deepEqual(JSON.parse(before.body), { status: "not_ready" });
  assert.equal(before.headers["content-type"], "application/json");
  assert.equal(before.headers["cache-control"], "no-store");

  h.setReady();
  h.setReady();
  const after = await get(port);
  assert.equal(after.status, 200);
  assert.deepEqual(JSON.parse(after.body), { status: "healthy" });
  assert.equal(h.isReady, true);
});

void test("a failing probe makes it unhealthy and names the first failing probe in registration order", async (t) => {
  const { h, port } = await serve(t, { cacheMs: 0 });
  h.addProbe("zeta", fails);
  h.addProbe("admin-grpc", ok);
  h.addProbe("alpha", fails);
  h.setReady();
  const reply = await get(port);
  assert.equal(reply.status, 503);
  assert.deepEqual(JSON.parse(reply.body), { status: "unhealthy", failed_probe: "zeta" });
  assert.throws(
    () => h.addProbe("zeta", ok),
    (e: HealthzError) => e.reason === "duplicate_probe",
  );
});

void test("HEAD answers the status without a body; other paths 404; other methods 405", async (t) => {
  const { h, port } = await serve(t);
  h.setReady();
  const head = await get(port, "/healthz", "HEAD");
  assert.equal(head.status, 200);
  assert.equal(head.body, "");
  assert.equal((await get(port, "/healthz?verbose=1")).status, 200);
  assert.equal((await get(port, "/")).status, 404);
  assert.equal((await get(port, "/healthz/x")).status, 404);
  const post = await get(port, "/healthz", "POST");
  assert.equal(post.status, 405);
  assert.equal(post.headers["allow"], "GET, HEAD");
});

void test("results are cached and concurrent requests share one probe round", async (t) => {
  const { h, port } = await serve(t, { cacheMs: 60_000 });
  let calls = 0;
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  h.addProbe("counted", async () => {
    calls++;
    await gate;
  });
  h.setReady();
  const replies = Promise.all(Array.from({ length: 5 }, () => get(port)));
  await waitFor(() => calls > 0, { what: "probe started" });
  release();
  for (const r of await replies) assert.equal(r.status, 200);
  await get(port);
  await get(port);
  assert.equal(calls, 1);
});

void test("without the cache every request probes again (the cache test can fail)", async (t) => {
  const { h, port } = await serve(t, { cacheMs: 0 });
  let calls = 0;
  h.addProbe("counted", () => {
    calls++;
    return Promise.resolve();
  });
  h.setReady();
  await get(port);
  await get(port);
  assert.equal(calls, 2);
});

void test("probes run in parallel", async (t) => {
  const { h, port } = await serve(t, { probeTimeoutMs: 5_000 });
  let active = 0;
  let maxActive = 0;
  // Each probe waits until the other has started: run one after the other, they would time out.
  const meet: Probe = async (signal) => {
    active++;
    maxActive = Math.max(maxActive, active);
    while (maxActive < 2 && !signal.aborted) await sleep(5);
    active--;
    if (maxActive < 2) throw new Error("ran alone");
  };
  h.addProbe("left", meet);
  h.addProbe("right", meet);
  h.setReady();
  const reply = await get(port);
  assert.deepEqual(JSON.parse(reply.body), { status: "healthy" });
  assert.equal(maxActive, 2);
});

void test("a probe slower than its timeout is unhealthy and its signal is aborted", async (t) => {
  const { h, port } = await serve(t, { probeTimeoutMs: 100, cacheMs: 0 });
  let sawAbort = false;
  h.addProbe("fast", ok);
  h.addProbe("stuck", (signal) => {
    signal.addEventListener("abort", () => (sawAbort = true));
    return new Promise<void>(() => undefined); // never settles, ignores the signal
  });
  h.setReady();
  const reply = await get(port);
  assert.equal(reply.status, 503);
  assert.deepEqual(JSON.parse(reply.body), { status: "unhealthy", failed_probe: "stuck" });
  assert.equal(sawAbort, true);
});

void test("httpProbe expects 200 from a real server", async (t) => {
  let answer = 200;
  const upstream = createHttpServer((_req, res) => res.writeHead(answer).end());
  await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
  t.after(() => new Promise<void>((resolve) => upstream.close(() => resolve())));
  const { port: upstreamPort } = upstream.address() as { port: number };
  const { h, port } = await serve(t, { cacheMs: 0 });
  h.addProbe("authserver", httpProbe(`http://127.0.0.1:${upstreamPort}/health/ready`));
  h.setReady();
  assert.equal((await get(port)).status, 200);
  answer = 500;
  assert.deepEqual(JSON.parse((await get(port)).body), { status: "unhealthy", failed_probe: "authserver" });
});

void test("close drops keep-alive connections, frees the port and is idempotent", async (t) => {
  const { h, port } = await serve(t);
  h.setReady();
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  t.after(() => agent.destroy());
  assert.equal((await get(port, "/healthz", "GET", agent)).status, 200);
  const [socket] = Object.values(agent.freeSockets).flat();
  assert.ok(socket !== undefined, "a kept-alive socket exists");
  let socketClosed = false;
  socket.once("close", () => (socketClosed = true));

  const closing = h.close();
  assert.equal(h.close(), closing);
  await closing;
  await waitFor(() => socketClosed, { what: "client socket closed by the server" });
  await assert.rejects(
    new Promise((resolve, reject) => {
      const c = connect(port, "127.0.0.1", () => resolve(c.end()));
      c.on("error", reject);
    }),
    (e: NodeJS.ErrnoException) => e.code === "ECONNREFUSED",
  );
});

void test("a taken port is a bind_failed error; aborting start's signal closes", async (t) => {
  const { port } = await serve(t);
  const second = new HealthServer({ logger: pino({ level: "silent" }), host: "127.0.0.1", port });
  await assert.rejects(
    second.start(AbortSignal.timeout(60_000)),
    (e: unknown) =>
      e instanceof HealthzError &&
      e.reason === "bind_failed" &&
      (e.cause as NodeJS.ErrnoException).code === "EADDRINUSE",
  );
  await second.close();

  const third = new HealthServer({ logger: pino({ level: "silent" }), host: "127.0.0.1", port: 0 });
  const ac = new AbortController();
  t.after(() => third.close());
  await third.start(ac.signal);
  const thirdPort = third.address.port;
  ac.abort();
  await third.close();
  await assert.rejects(get(thirdPort), (e: NodeJS.ErrnoException) => e.code === "ECONNREFUSED");
  await assert.rejects(third.start(new AbortController().signal), (e: HealthzError) => e.reason === "closed");
});

/** A raw client socket that reads everything; resolves with ms until the server closed it. */
function heldUntilClosed(port: number, send?: string): { socket: Socket; closed: Promise<number> } {
  const started = Date.now();
  const socket = connect(port, "127.0.0.1", () => {
    if (send !== undefined) socket.write(send);
  });
  socket.on("error", () => {});
  socket.resume();
  return {
    socket,
    closed: new Promise((resolve) => socket.on("close", () => resolve(Date.now() - started))),
  };
}

void test("a silent connection is closed at the idle timeout; a trickled request at the headers timeout", async (t) => {
  const { port } = await serve(t, { idleTimeoutMs: 300, headersTimeoutMs: 600, requestTimeoutMs: 900 });
  const silent = heldUntilClosed(port);
  const trickle = heldUntilClosed(port, "GET /healthz HTTP/1.1\r\nHost: x\r\n");
  // One header byte every 100 ms keeps the socket active, so only the headers timeout stops it.
  const timer = setInterval(() => trickle.socket.write("X"), 100);
  t.after(() => clearInterval(timer));
  const silentMs = await silent.closed;
  const trickleMs = await trickle.closed;
  assert.ok(silentMs >= 250 && silentMs < 3_000, `silent connection closed after ${silentMs} ms`);
  assert.ok(trickleMs >= 550 && trickleMs < 4_000, `trickled request closed after ${trickleMs} ms`);
});

void test("over maxConnections the oldest idle connection is closed, and requests are still answered", async (t) => {
  const counters = new ListenerCounters();
  const refusals = new RefusalLog({ log: pino({ level: "silent" }), counters });
  t.after(() => refusals.close());
  const { h, port } = await serve(t, { maxConnections: 4, idleTimeoutMs: 60_000, refusals });
  h.setReady();
  const held = Array.from({ length: 20 }, () => heldUntilClosed(port));
  t.after(() => held.forEach((c) => c.socket.destroy()));
  await waitFor(() => counters.count("healthz", "connection_evicted") >= 16, { what: "evictions" });
  for (let i = 0; i < 3; i++)
    assert.equal((await get(port)).status, 200, "answered while strangers hold sockets");
  const closed = await Promise.all(held.slice(0, 16).map((c) => c.closed));
  assert.equal(closed.length, 16, "the oldest were closed by the server");
});
