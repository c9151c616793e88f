// The eBPF manager client's transport and validation, against a real Unix socket peer. The real
// manager drives the same client in packages/ebpf-manager/test (sockets, lifecycle).
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test, type TestContext } from "node:test";
import { EbpfClient, EbpfError, type ContainerConfig } from "../src/ebpf/index.js";
import { waitFor } from "../../../test/harness/wait-for.js";

interface Peer {
  readonly path: string;
  readonly received: string[];
  readonly sockets: Set<Socket>;
}

/** A Unix socket peer that records every line; `reply` decides what (if anything) to answer. */
async function peer(t: TestContext, reply?: (req: Record<string, unknown>) => unknown): Promise<Peer> {
  const dir = mkdtempSync(join(tmpdir(), "ebpf-client-"));
  const path = join(dir, "s.sock");
  const received: string[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((sock) => {
    sockets.add(sock);
    sock.on("close", () => sockets.delete(sock));
    let buf = "";
    sock.setEncoding("utf8").on("data", (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        received.push(line);
        const answer = reply?.(JSON.parse(line) as Record<string, unknown>);
        if (answer !== undefined) sock.write(JSON.stringify(answer) + "\n");
      }
    });
  });
  await new Promise<void>((res) => server.listen(path, res));
  t.after(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((res) => server.close(res));
    rmSync(dir, { recursive: true, force: true });
  });
  return { path, received, sockets };
}

const config: ContainerConfig = { proxy: "127.0.0.1", dns: "127.0.0.1", catchallPort: 15001 };

function reason(expected: string) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof EbpfError, String(err));
    assert.equal(err.reason, expected, err.message);
    return true;
  };
}

describe("EbpfClient", () => {
  test("rejects malformed input before anything is sent", async (t) => {
    const p = await peer(t, (req) => ({ id: req["id"], ok: true, result: {} }));
    const client = new EbpfClient({ socketPath: p.path });
    await client.start(AbortSignal.timeout(10_000));
    t.after(() => client.close());
    const bad: (() => Promise<unknown>)[] = [
      () => client.enroll({ cgroup: "x" }, { ...config, proxy: "1.2.3" }),
      () => client.enroll({ cgroup: "x" }, { ...config, proxy: "01.2.3.4" }),
      () => client.enroll({ cgroup: "x" }, { ...config, catchallPort: 0 }),
      () => client.enroll({ cgroup: "x" }, { ...config, subnet: "10.0.0.1/8" }),
      () => client.enroll({ cgroup: "x" }, { ...config, subnet: "10.0.0.0/0" }),
      () => client.enroll({ cgroup: "x" }, { ...config, extra: 1 } as ContainerConfig),
      () => client.enroll({ cgroup: "../etc" }, config),
      () => client.bypass({ cgroupId: 0 }),
      () => client.bypass({ cgroupId: "12x" }),
      () => client.bypass({ cgroupId: 5 }, 0),
      () => client.bypass({ cgroupId: 5 }, 86_401),
      () => client.bypass({ cgroupId: 5 }, 1.5),
      () => client.syncRoutes([{ identity: 0, port: 1, protocol: "tcp", listener: 1 }]),
      () =>
        client.syncRoutes([
          { identity: 1, port: 1, protocol: "tcp", listener: 1 },
          { identity: 1, port: 1, protocol: "tcp", listener: 2 },
        ]),
      () => client.syncRoutes([{ identity: 1, port: 1, protocol: "sctp" as "tcp", listener: 1 }]),
      () => client.syncRoutes([{ identity: 1, port: 1.5, protocol: "tcp", listener: 1 }]),
      () => client.syncRoutes([{ identity: 1, port: 1, protocol: "tcp", listener: 1, extra: 1 } as never]),
      () => client.dnsUpdate([{ address: "10.0.0.256", identity: 1, ttl: 1 }]),
      () => client.dnsUpdate([{ address: "127.0.0.1", identity: 1, ttl: 1 }]),
      () => client.dnsUpdate([{ address: "10.0.0.1", identity: 1, ttl: 604_801 }]),
      () => client.gatewayPorts([{ address: "127.0.0.1", port: 7444, protocol: "tcp" }]),
      () => client.gatewayPorts([{ address: "172.20.0.1", port: 0, protocol: "tcp" }]),
      () => client.gatewayPorts([{ address: "172.20.0.1", port: 7444, protocol: "icmp" as "tcp" }]),
      () =>
        client.gatewayPorts([
          { address: "172.20.0.1", port: 7444, protocol: "tcp" },
          { address: "172.20.0.1", port: 7444, protocol: "tcp" },
        ]),
      () =>
        client.gatewayPorts(
          Array.from({ length: 65 }, (_, i) => ({
            address: "172.20.0.1",
            port: i + 1,
            protocol: "tcp" as const,
          })),
        ),
    ];
    for (const call of bad) await assert.rejects(call(), reason("invalid_argument"));
    assert.deepEqual(p.received, []);
    // and well-formed input does go out, with the manager's field names
    await client.enroll({ cgroup: "x" }, { ...config, subnet: "10.0.0.0/8" });
    assert.deepEqual(JSON.parse(p.received[0]!), {
      id: 1,
      op: "enroll",
      cgroup: "x",
      config: { ...config, subnet: "10.0.0.0/8" },
    });
  });

  test("maps the manager's error reasons and times out a silent manager", async (t) => {
    const p = await peer(t, (req) =>
      req["op"] === "status"
        ? undefined
        : { id: req["id"], ok: false, error: { reason: "not_found", message: "gone" } },
    );
    const client = new EbpfClient({ socketPath: p.path, timeoutMs: 200 });
    await client.start(AbortSignal.timeout(10_000));
    t.after(() => client.close());
    await assert.rejects(client.bypass({ cgroupId: 5 }), reason("not_found"));
    await assert.rejects(client.status(), reason("timeout"));
  });

  test("is unavailable without a manager, reconnects after one restarts, and close() is idempotent", async (t) => {
    const missing = new EbpfClient({ socketPath: "/nonexistent/ebpf.sock" });
    await assert.rejects(missing.start(AbortSignal.timeout(10_000)), reason("unavailable"));
    await missing.close();

    const p = await peer(t, (req) => ({ id: req["id"], ok: true, result: { version: "x" } }));
    const client = new EbpfClient({ socketPath: p.path });
    const ac = new AbortController();
    await client.start(ac.signal);
    assert.equal((await client.status()).version, "x");
    for (const s of p.sockets) s.destroy();
    await waitFor(() => p.sockets.size === 0);
    assert.equal((await client.status()).version, "x", "reconnected");

    const pending = new EbpfClient({ socketPath: p.path, timeoutMs: 60_000 });
    const silent = await peer(t);
    const stuck = new EbpfClient({ socketPath: silent.path, timeoutMs: 60_000 });
    await stuck.start(AbortSignal.timeout(10_000));
    const call = stuck.gc();
    await waitFor(() => silent.received.length === 1);
    await stuck.close();
    await stuck.close();
    await assert.rejects(call, reason("closed"));
    await waitFor(() => silent.sockets.size === 0, { what: "socket closed" });
    await pending.close();

    ac.abort();
    await waitFor(() => p.sockets.size === 0, { what: "abort closes the client" });
    await assert.rejects(client.status(), reason("closed"));
  });
});
