// The UDP relay on loopback with real sockets: an agent's datagram reaches the upstream echo by
// name and the reply comes back; sessions per source, the cap, idle expiry, forbidden
// destinations after resolution, non-agent sources, revocation by a removed route.
import assert from "node:assert/strict";
import { createSocket, type Socket } from "node:dgram";
import { after, before, describe, test } from "node:test";
import { waitFor } from "@clawker/test-support";
import { pino } from "pino";
import type { ProxyDecision } from "./proxy/index.js";
import { UdpRelay, type UdpRelayOptions, type UdpRelayRoute } from "./udp-relay.js";

const AGENT = "127.0.0.1";
const STRANGER = "127.0.0.2";
const FORBIDDEN = "127.0.0.3";

/** A UDP echo on 127.0.0.1: replies `echo:<payload>`. */
async function echoServer(): Promise<{ socket: Socket; port: number; seen: string[] }> {
  const socket = createSocket("udp4");
  const seen: string[] = [];
  socket.on("message", (msg, rinfo) => {
    seen.push(`${rinfo.address}:${msg.toString()}`);
    socket.send(Buffer.concat([Buffer.from("echo:"), msg]), rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  return { socket, port: socket.address().port, seen };
}

/** A free UDP port on 127.0.0.1 (bound and released). */
async function freePort(): Promise<number> {
  const s = createSocket("udp4");
  await new Promise<void>((resolve) => s.bind(0, "127.0.0.1", resolve));
  const port = s.address().port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** A client socket on `address`, collecting replies with their source. */
async function client(address: string): Promise<{ socket: Socket; replies: string[] }> {
  const socket = createSocket("udp4");
  const replies: string[] = [];
  socket.on("message", (msg, rinfo) => replies.push(`${rinfo.port}:${msg.toString()}`));
  await new Promise<void>((resolve) => socket.bind(0, address, resolve));
  return { socket, replies };
}

const global = { kind: "global" } as const;

describe("UdpRelay on loopback", () => {
  let echo: Awaited<ReturnType<typeof echoServer>>;
  const opened: { close(): unknown }[] = [];
  before(async () => {
    echo = await echoServer();
  });
  after(() => {
    echo.socket.close();
    for (const o of opened) o.close();
  });

  const relayWith = (over: Partial<UdpRelayOptions> = {}) => {
    const decisions: ProxyDecision[] = [];
    const resolved: string[] = [];
    const relay = new UdpRelay({
      address: "127.0.0.1",
      resolve: (name) => {
        resolved.push(name);
        if (name === "echo.test") return Promise.resolve([AGENT]);
        if (name === "inside.test") return Promise.resolve([FORBIDDEN]);
        return Promise.resolve([]);
      },
      log: pino({ level: "silent" }),
      onDecision: (d) => decisions.push(d),
      ...over,
    });
    opened.push(relay);
    return { relay, decisions, resolved };
  };
  const route = (listener: number, dst = "echo.test", action: "allow" | "deny" = "allow"): UdpRelayRoute => ({
    listener,
    dst,
    port: echo.port,
    entries: [{ ruleId: `global/${dst}:udp:${echo.port}`, scope: global, action }],
  });
  const sources = [{ address: AGENT, agent: "p.a1", project: "p" }];

  test("an agent's datagram reaches the echo by name and the reply comes back from the relay port", async () => {
    const { relay, decisions, resolved } = relayWith();
    const listener = await freePort();
    await relay.apply({ routes: [route(listener)], sources, forbidden: [FORBIDDEN] });
    const c = await client(AGENT);
    opened.push(c.socket);
    c.socket.send("one", listener, "127.0.0.1");
    await waitFor(() => c.replies.includes(`${listener}:echo:one`), { what: "the echo's reply" });
    c.socket.send("two", listener, "127.0.0.1");
    await waitFor(() => c.replies.includes(`${listener}:echo:two`), { what: "the second reply" });
    assert.deepEqual(resolved, ["echo.test"], "resolved once per session, by name");
    assert.equal(relay.stats().sessions, 1);
    assert.equal(decisions.length, 1);
    assert.equal(decisions[0]!.layer, "udp");
    assert.equal(decisions[0]!.verdict, "allow");
    assert.equal(decisions[0]!.agent, "p.a1");
    assert.equal(decisions[0]!.upstream, AGENT);
    await relay.close();
    await relay.close(); // idempotent
  });

  test("datagrams from a source that is no agent are dropped and counted, never relayed", async () => {
    const { relay, decisions } = relayWith();
    const listener = await freePort();
    await relay.apply({ routes: [route(listener)], sources, forbidden: [] });
    const stranger = await client(STRANGER);
    opened.push(stranger.socket);
    const before = echo.seen.length;
    for (let i = 0; i < 5; i++) stranger.socket.send(`x${i}`, listener, "127.0.0.1");
    await waitFor(() => relay.stats().dropped.not_agent === 5, { what: "five counted drops" });
    assert.equal(echo.seen.length, before);
    assert.equal(relay.stats().sessions, 0);
    assert.equal(decisions.length, 0, "a flood is counted, not a decision per datagram");
    await relay.close();
  });

  test("a name resolving to a forbidden address is refused after resolution", async () => {
    const { relay, decisions } = relayWith();
    const listener = await freePort();
    await relay.apply({ routes: [route(listener, "inside.test")], sources, forbidden: [`${FORBIDDEN}/32`] });
    const c = await client(AGENT);
    opened.push(c.socket);
    c.socket.send("hi", listener, "127.0.0.1");
    await waitFor(() => relay.stats().dropped.forbidden_destination === 1, { what: "the forbidden drop" });
    assert.equal(relay.stats().sessions, 0);
    assert.deepEqual(
      decisions.map((d) => [d.verdict, d.reason]),
      [["deny", "forbidden_destination"]],
    );
    await relay.close();
  });

  test("a rule that denies for the agent's scope wins over a global allow", async () => {
    const { relay } = relayWith();
    const listener = await freePort();
    const r = route(listener);
    await relay.apply({
      routes: [
        {
          ...r,
          entries: [
            ...r.entries,
            { ruleId: "project:p/echo.test:udp", scope: { kind: "project", project: "p" }, action: "deny" },
          ],
        },
      ],
      sources,
      forbidden: [],
    });
    const c = await client(AGENT);
    opened.push(c.socket);
    c.socket.send("hi", listener, "127.0.0.1");
    await waitFor(() => relay.stats().dropped.rule_denies === 1, { what: "the scoped deny" });
    assert.equal(relay.stats().sessions, 0);
    await relay.close();
  });

  test("the session cap drops new sources (counted), never growing past it", async () => {
    const { relay } = relayWith({ maxSessions: 2 });
    const listener = await freePort();
    await relay.apply({ routes: [route(listener)], sources, forbidden: [] });
    const clients = await Promise.all([client(AGENT), client(AGENT), client(AGENT)]);
    for (const c of clients) opened.push(c.socket);
    for (const [i, c] of clients.slice(0, 2).entries()) {
      c.socket.send(`s${i}`, listener, "127.0.0.1");
      await waitFor(() => c.replies.length === 1, { what: `session ${i}'s reply` });
    }
    for (let i = 0; i < 10; i++) clients[2].socket.send(`over${i}`, listener, "127.0.0.1");
    await waitFor(() => relay.stats().dropped.session_cap === 10, { what: "the capped drops" });
    assert.equal(relay.stats().sessions, 2);
    assert.deepEqual(clients[2].replies, []);
    await relay.close();
  });

  test("an idle session expires and its source starts a new one", async () => {
    const { relay, resolved } = relayWith({ idleMs: 200 });
    const listener = await freePort();
    await relay.apply({ routes: [route(listener)], sources, forbidden: [] });
    const c = await client(AGENT);
    opened.push(c.socket);
    c.socket.send("a", listener, "127.0.0.1");
    await waitFor(() => c.replies.length === 1, { what: "the first reply" });
    await waitFor(() => relay.stats().sessions === 0, { what: "idle expiry" });
    c.socket.send("b", listener, "127.0.0.1");
    await waitFor(() => c.replies.includes(`${listener}:echo:b`), { what: "the reply in a new session" });
    assert.equal(resolved.length, 2, "the new session resolved the name again");
    await relay.close();
  });

  test("a removed route closes its socket and sessions: the next datagram goes nowhere", async () => {
    const { relay } = relayWith();
    const listener = await freePort();
    await relay.apply({ routes: [route(listener)], sources, forbidden: [] });
    const c = await client(AGENT);
    opened.push(c.socket);
    c.socket.send("before", listener, "127.0.0.1");
    await waitFor(() => c.replies.length === 1, { what: "the reply before removal" });
    await relay.apply({ routes: [], sources, forbidden: [] });
    assert.deepEqual([relay.stats().sockets, relay.stats().sessions], [0, 0]);
    // The port is free again: a bind on it succeeds (nothing of the relay holds it).
    const probe = createSocket("udp4");
    await new Promise<void>((resolve, reject) => {
      probe.once("error", reject);
      probe.bind(listener, "127.0.0.1", resolve);
    });
    probe.close();
    await relay.close();
  });

  test("narrowing the rules ends a session the agent is no longer allowed", async () => {
    const { relay } = relayWith();
    const listener = await freePort();
    await relay.apply({ routes: [route(listener)], sources, forbidden: [] });
    const c = await client(AGENT);
    opened.push(c.socket);
    c.socket.send("a", listener, "127.0.0.1");
    await waitFor(() => c.replies.length === 1, { what: "the first reply" });
    const scoped: UdpRelayRoute = {
      ...route(listener),
      entries: [
        { ruleId: "project:q/echo.test:udp", scope: { kind: "project", project: "q" }, action: "allow" },
      ],
    };
    await relay.apply({ routes: [scoped], sources, forbidden: [] });
    assert.equal(relay.stats().sessions, 0);
    c.socket.send("b", listener, "127.0.0.1");
    await waitFor(() => relay.stats().dropped.no_rule === 1, { what: "the drop after narrowing" });
    await relay.close();
  });
});
