// The DNS gate's process entry (main.ts) as the daemon will run it: a real child process with its
// control channel on fd 3, a real upstream on loopback, and a Unix socket peer in the eBPF
// manager's place (its protocol, answering dns-update).
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createSocket } from "node:dgram";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test, type TestContext } from "node:test";
import { isAlive } from "../../../test/harness/leftovers.js";
import { waitFor } from "../../../test/harness/wait-for.js";
import { dnsGateEntry } from "../src/firewall/dns/index.js";
import { query } from "./fixtures/dns-client.js";
import { startGateProcess, type GateProcess } from "./fixtures/dns-gate-process.js";
import { TestUpstream } from "./fixtures/dns-upstream.js";
import { ManagerPeer } from "./fixtures/manager-peer.js";

interface Rig {
  readonly gate: GateProcess;
  readonly port: number;
  readonly peer: ManagerPeer;
  readonly upstream: TestUpstream;
  readonly policy: Record<string, unknown>;
}

async function rig(t: TestContext): Promise<Rig> {
  const upstream = await TestUpstream.start({ "api.example.test": { addresses: ["10.1.0.1"], ttl: 120 } });
  const peer = await ManagerPeer.start();
  const gate = startGateProcess({
    config: { listen: { address: "127.0.0.1", port: 0 }, ebpfSocket: peer.path, logLevel: "warn" },
  });
  t.after(async () => {
    await gate.dispose();
    await peer.close();
    await upstream.close();
  });
  const port = await gate.ready();
  const policy = {
    rules: [
      { scope: { kind: "global", name: "" }, pattern: "*.example.test", action: "allow", identity: 10 },
    ],
    clients: [{ address: "127.0.0.2", project: "web", agent: "dev" }],
    upstreams: [{ address: upstream.address, port: upstream.port }],
  };
  return { gate, port, peer, upstream, policy };
}

function portIsFree(port: number): Promise<boolean> {
  const udp = createSocket("udp4");
  return new Promise((resolve) => {
    udp.once("error", () => resolve(false));
    udp.bind(port, "127.0.0.1", () => udp.close(() => resolve(true)));
  });
}

describe("DNS gate process", () => {
  test("policy over the control channel, acked after the swap; answers recorded first; decisions on the channel", async (t) => {
    const r = await rig(t);
    const server = { address: "127.0.0.1", port: r.port };
    // Until the daemon sends a policy nobody is known: refused.
    assert.equal((await query(server, "api.example.test")).rcode, 5);

    const ack = await r.gate.request({ op: "policy", policy: r.policy });
    assert.deepEqual(ack.result, { generation: 1, rules: 1, clients: 1 });
    assert.equal(ack.ok, true);
    // Acked means live: the very next query is answered under it.
    r.peer.delayMs = 200;
    const sentAt = performance.now();
    const reply = await query(server, "api.example.test");
    const answeredAt = performance.now();
    assert.deepEqual(reply.addresses, ["10.1.0.1"]);
    // The manager got the address first, and the answer waited for its (late) reply.
    assert.deepEqual(r.peer.dnsEntries(), [{ address: "10.1.0.1", identity: 10, ttl: 120 }]);
    assert.ok(answeredAt - sentAt >= 200, `answered after ${answeredAt - sentAt} ms`);

    await waitFor(() => r.gate.decisions().length === 2, { what: "two decision events" });
    const [refused, allowed] = r.gate.decisions();
    assert.equal(refused?.["reason"], "unknown_source");
    assert.equal(allowed?.["verdict"], "allowed");
    assert.deepEqual(allowed?.["addresses"], ["10.1.0.1"]);

    const stats = await r.gate.request({ op: "stats" });
    assert.equal(stats.result?.["answers"], 1);
    assert.equal(stats.result?.["blocked"], 1);
  });

  test("a bad policy is refused with every problem and the one in force stays; bad requests get bad_request", async (t) => {
    const r = await rig(t);
    await r.gate.request({ op: "policy", policy: r.policy });
    const bad = await r.gate.request({
      op: "policy",
      policy: {
        ...r.policy,
        rules: [{ scope: { kind: "global", name: "" }, pattern: "*.com", action: "allow" }],
      },
    });
    assert.equal(bad.ok, false);
    assert.equal(bad.error?.reason, "invalid_policy");
    assert.deepEqual(
      bad.error?.problems?.map((p) => p.path),
      ["rules[0].pattern", "rules[0].identity"],
    );
    const stats = await r.gate.request({ op: "stats" });
    assert.equal(stats.result?.["policyGeneration"], 1);
    assert.deepEqual((await query({ address: "127.0.0.1", port: r.port }, "api.example.test")).addresses, [
      "10.1.0.1",
    ]);

    const unknownOp = await r.gate.request({ op: "reload" });
    assert.equal(unknownOp.error?.reason, "bad_request");
    const extra = await r.gate.request({ op: "policy", policy: r.policy, force: true });
    assert.equal(extra.error?.reason, "bad_request");
    r.gate.control.write("not json\n");
    await waitFor(() => r.gate.lines.find((l) => l["id"] === null && l["ok"] === false), {
      what: "a reply to junk",
    });
  });

  test("exits 0 promptly when the daemon's end of the channel closes, and frees its port", async (t) => {
    const r = await rig(t);
    const closedAt = performance.now();
    r.gate.control.end();
    const exit = await r.gate.exited;
    assert.deepEqual(exit, { code: 0, signal: null });
    assert.ok(performance.now() - closedAt < 5_000);
    assert.ok(await portIsFree(r.port));
  });

  test("exits when its parent is killed (SIGKILL: no goodbye, only EOF on fd 3)", async (t) => {
    const peer = await ManagerPeer.start();
    t.after(() => peer.close());
    const dir = mkdtempSync(join(tmpdir(), "dns-gate-parent-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, "dns-gate.json");
    writeFileSync(file, JSON.stringify({ listen: { address: "127.0.0.1", port: 0 }, ebpfSocket: peer.path }));
    const entry = dnsGateEntry();
    // A stand-in daemon: spawns the gate with fd 3 and reports when the gate is ready.
    const daemon = spawn(
      process.execPath,
      [
        "-e",
        `const { spawn } = require("node:child_process");
         const [file, ...args] = JSON.parse(process.argv[1]);
         const gate = spawn(file, args, { stdio: ["ignore", "ignore", "inherit", "pipe"] });
         gate.stdio[3].on("data", (d) => { if (String(d).includes('"ready"')) console.log(gate.pid); });
         setInterval(() => {}, 1000);`,
        JSON.stringify([entry.file, ...entry.args, "--config", file]),
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    t.after(() => daemon.kill("SIGKILL"));
    let out = "";
    daemon.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    const gatePid = await waitFor(() => (/^\d+\n/.test(out) ? Number(out.trim()) : undefined), {
      timeoutMs: 60_000,
      what: "the gate's ready event, relayed",
    });
    t.after(() => {
      if (isAlive(gatePid)) process.kill(gatePid, "SIGKILL");
    });
    daemon.kill("SIGKILL");
    await waitFor(() => !isAlive(gatePid), { timeoutMs: 5_000, what: "the gate to exit" });
  });

  test("exits 0 promptly on SIGTERM", async (t) => {
    const r = await rig(t);
    r.gate.child.kill("SIGTERM");
    assert.deepEqual(await r.gate.exited, { code: 0, signal: null });
    assert.ok(await portIsFree(r.port));
  });

  test("a bad config exits 2 listing every problem, before binding", async (t) => {
    const gate = startGateProcess({
      config: { listen: { address: "0.0.0.0", port: 53 }, ebpfSocket: "", surprise: 1 },
    });
    t.after(() => gate.dispose());
    assert.equal((await gate.exited).code, 2);
    for (const what of ["listen.address", "ebpfSocket", "surprise"])
      assert.match(gate.stderr(), new RegExp(what));
  });

  test("without a control channel on fd 3 it refuses to run (exit 2)", async (t) => {
    const peer = await ManagerPeer.start();
    t.after(() => peer.close());
    const gate = startGateProcess({
      config: { listen: { address: "127.0.0.1", port: 0 }, ebpfSocket: peer.path },
      withoutControl: true,
    });
    t.after(() => gate.dispose());
    assert.equal((await gate.exited).code, 2);
    assert.match(gate.stderr(), /no control channel on fd 3/);
  });

  test("with no manager socket configured it answers, recording nothing, and says so once", async (t) => {
    const upstream = await TestUpstream.start({ "api.example.test": { addresses: ["10.1.0.1"], ttl: 120 } });
    t.after(() => upstream.close());
    const gate = startGateProcess({ config: { listen: { address: "127.0.0.1", port: 0 } } });
    t.after(() => gate.dispose());
    const port = await gate.ready();
    const ack = await gate.request({
      op: "policy",
      policy: {
        rules: [
          { scope: { kind: "global", name: "" }, pattern: "*.example.test", action: "allow", identity: 10 },
        ],
        clients: [{ address: "127.0.0.2", project: "web", agent: "dev" }],
        upstreams: [{ address: upstream.address, port: upstream.port }],
      },
    });
    assert.equal(ack.ok, true);
    const server = { address: "127.0.0.1", port };
    for (let i = 0; i < 2; i++) {
      assert.deepEqual((await query(server, "api.example.test")).addresses, ["10.1.0.1"]);
    }
    const said = gate
      .stdout()
      .split("\n")
      .filter((l) => l.includes('"event":"dns_cache_not_recorded"'));
    assert.equal(said.length, 1, gate.stdout());
  });

  test("without the eBPF manager it does not serve (exit 1): no answer could be recorded", async (t) => {
    const gate = startGateProcess({
      config: { listen: { address: "127.0.0.1", port: 0 }, ebpfSocket: "/nonexistent/ebpf.sock" },
    });
    t.after(() => gate.dispose());
    assert.equal((await gate.exited).code, 1);
    assert.equal(
      gate.lines.find((l) => l["event"] === "ready"),
      undefined,
    );
    assert.match(gate.stdout(), /start_failed/);
  });
});
