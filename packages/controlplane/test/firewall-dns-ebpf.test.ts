// The DNS gate with the real eBPF manager (packages/ebpf-manager, its test Lab: private cgroups,
// pin directory and network namespace). Needs root, cgroup2 and bpffs: skipped with the reason
// on a laptop, failed under CI.
//  1. The write happens before the reply: with the manager's answer slowed down, the map already
//     holds address -> identity when the gate's answer arrives.
//  2. The whole path: a process in an enrolled cgroup asks DNS (steered to the gate process in the
//     namespace), then connects to the answer at once, for 100 fresh names: every connect lands on
//     the route's listener, never on the catch-all, and the namespace's kernel counted no SYN
//     retransmission (TcpExtTCPSynRetrans) across them: no first connect waited for a retry.
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { describe, test, type TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import pino from "pino";
import type { DnsEntry } from "../src/ebpf/index.js";
import {
  DnsGate,
  EbpfDnsCacheWriter,
  type DnsCacheWriter,
  type DnsPolicy,
} from "../src/firewall/dns/index.js";
import { bpffs, cgroup2, command, requires, root } from "../../../test/harness/preconditions.js";
import { waitFor } from "../../../test/harness/wait-for.js";
import { defaultConfig, ensureBpffs, Lab, ports } from "../../ebpf-manager/test/fixture.js";
import { query } from "./fixtures/dns-client.js";
import { startGateProcess } from "./fixtures/dns-gate-process.js";
import { TestUpstream } from "./fixtures/dns-upstream.js";

const run = promisify(execFile);

/** The kernel's count of retransmitted SYNs in a network namespace (nstat, absolute, no history). */
async function synRetransmits(netns: string): Promise<number> {
  const { stdout } = await run("ip", ["netns", "exec", netns, "nstat", "-asz", "-j", "TcpExtTCPSynRetrans"]);
  const count = (JSON.parse(stdout) as { kernel: Record<string, number> }).kernel["TcpExtTCPSynRetrans"];
  assert.ok(typeof count === "number", `nstat said ${stdout}`);
  return count;
}

const fixtures = join(dirname(fileURLToPath(import.meta.url)), "fixtures");

async function newLab(t: TestContext): Promise<Lab | undefined> {
  ensureBpffs();
  if (!requires(t, root, cgroup2, bpffs, command("ip"))) return undefined;
  const lab = new Lab();
  t.after(() => lab.tearDown());
  await lab.setUp({ enroll: false });
  return lab;
}

/** Delegates to the real writer after a delay, so a reply sent before the write would be seen. */
class LateWriter implements DnsCacheWriter {
  private readonly inner: DnsCacheWriter;
  private readonly delayMs: number;

  constructor(inner: DnsCacheWriter, delayMs: number) {
    this.inner = inner;
    this.delayMs = delayMs;
  }

  async write(entries: readonly DnsEntry[]): Promise<void> {
    await new Promise((res) => setTimeout(res, this.delayMs));
    await this.inner.write(entries);
  }
}

const g = { kind: "global", name: "" } as const;

describe("DNS gate with the real eBPF manager", { timeout: 300_000 }, () => {
  test("after the answer arrives the dns_cache already holds address -> identity", async (t) => {
    const lab = await newLab(t);
    if (lab === undefined) return;
    const upstream = await TestUpstream.start({
      "api.example.test": { addresses: ["10.77.0.1", "10.77.0.2"], ttl: 120 },
      "late.example.test": { addresses: ["10.77.0.3"], ttl: 1 },
    });
    t.after(() => upstream.close());
    const gate = new DnsGate({
      address: "127.0.0.1",
      port: 0,
      writer: new LateWriter(new EbpfDnsCacheWriter(lab.client), 300),
      log: pino({ level: "silent" }),
    });
    t.after(() => gate.close());
    const server = await gate.start(AbortSignal.timeout(120_000));
    const policy: DnsPolicy = {
      rules: [{ scope: g, pattern: "*.example.test", action: "allow", identity: 7 }],
      clients: [{ address: "127.0.0.2", project: "web", agent: "dev" }],
      upstreams: [{ address: upstream.address, port: upstream.port }],
      ttl: { floor: 30, ceiling: 3_600 },
    };
    gate.applyPolicy(policy);

    for (const name of ["api.example.test", "late.example.test"]) {
      const reply = await query(server, name);
      // No await between the answer and the dump request other than the dump itself.
      const dump = await lab.client.dump();
      for (const address of reply.addresses) {
        const entry = dump.dns.find((d) => d.address === address);
        assert.ok(entry !== undefined, `${address} (${name}) not in dns_cache when the answer arrived`);
        const slot = entry.identities.find((i) => i.identity === 7);
        assert.ok(slot !== undefined, JSON.stringify(entry));
        // The map's lifetime matches the TTL the client was given (late: upstream 1 s, floor 30 s).
        const ttl = reply.ttls[0]!;
        assert.ok(
          slot.expiresInMs > (ttl - 2) * 1000 && slot.expiresInMs <= ttl * 1000,
          `${slot.expiresInMs} vs ${ttl}`,
        );
      }
    }
  });

  test("100 first connects right after their answers take the route, never the catch-all, and the kernel counts no SYN retransmission", async (t) => {
    const lab = await newLab(t);
    if (lab === undefined) return;
    const names = Array.from({ length: 100 }, (_, i) => `n${i + 1}.first.test`);
    const zone = Object.fromEntries(names.map((n, i) => [n, { addresses: [`10.99.0.${i + 1}`], ttl: 300 }]));

    // The upstream runs in the lab's namespace, on its loopback.
    const upstream = spawn(
      "ip",
      [
        "netns",
        "exec",
        lab.netns,
        process.execPath,
        "--import",
        import.meta.resolve("tsx"),
        join(fixtures, "dns-upstream.ts"),
        JSON.stringify(zone),
        "127.0.0.1",
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    t.after(() => upstream.kill("SIGKILL"));
    let upstreamOut = "";
    upstream.stdout.setEncoding("utf8").on("data", (d: string) => (upstreamOut += d));
    const upstreamPort = await waitFor(
      () => (upstreamOut.includes("\n") ? (JSON.parse(upstreamOut) as { ready: number }).ready : undefined),
      { timeoutMs: 60_000, what: "the upstream in the namespace" },
    );

    // The gate process, as the daemon will run it, in the namespace too.
    const gate = startGateProcess({
      netns: lab.netns,
      config: { listen: { address: "127.0.0.1", port: 0 }, ebpfSocket: lab.socketPath, logLevel: "warn" },
    });
    t.after(() => gate.dispose());
    const gatePort = await gate.ready();

    // Port 53 of agents in the parent goes to the gate; identity 7's port 443 to the route listener.
    await lab.client.enroll({ cgroup: lab.parent }, { ...defaultConfig, dnsPort: gatePort });
    await lab.client.syncRoutes([{ identity: 7, port: 443, protocol: "tcp", listener: ports.route }]);
    // Everything shares the namespace's loopback, so the gate sees queries from 127.0.0.1.
    const ack = await gate.request({
      op: "policy",
      policy: {
        rules: [{ scope: g, pattern: "*.first.test", action: "allow", identity: 7 }],
        clients: [{ address: "127.0.0.1", project: "lab", agent: "probe" }],
        upstreams: [{ address: "127.0.0.1", port: upstreamPort }],
      },
    });
    assert.equal(ack.ok, true, JSON.stringify(ack));

    const agent = lab.cgroup("agent");
    const retransmitsBefore = await synRetransmits(lab.netns);
    const { stdout } = await run(
      "sh",
      [
        "-c",
        // Enter the enrolled cgroup first (before `ip netns exec` remounts /sys), then the
        // namespace, then become the client: every socket it opens is enforced.
        `echo $$ > "$0/cgroup.procs" && exec "$@"`,
        agent,
        "ip",
        "netns",
        "exec",
        lab.netns,
        process.execPath,
        "--import",
        import.meta.resolve("tsx"),
        join(fixtures, "first-connect-client.ts"),
        "10.250.0.53",
        "53",
        ...names,
      ],
      { timeout: 120_000 },
    );
    const outcomes = JSON.parse(stdout) as {
      name: string;
      rcode: number;
      addresses: string[];
      connectMs?: number;
      listener?: string;
      origDst?: string;
      error?: string;
    }[];
    assert.equal(outcomes.length, names.length);
    outcomes.forEach((o, i) => {
      assert.equal(o.rcode, 0, JSON.stringify(o));
      assert.deepEqual(o.addresses, [`10.99.0.${i + 1}`]);
      assert.equal(o.error, undefined, JSON.stringify(o));
      assert.equal(o.listener, "route", `${o.name}: connect went to ${o.listener}, not the route`);
      assert.equal(o.origDst, `10.99.0.${i + 1}:443`);
    });
    // A SYN lost or refused would have been sent again (after TCP_TIMEOUT_INIT, 1 s): the kernel
    // counts that, whatever the machine's load did to the timings, so no timing is asserted.
    assert.equal(
      (await synRetransmits(lab.netns)) - retransmitsBefore,
      0,
      "SYN retransmissions in the namespace during the query-then-connect pairs",
    );
    const worst = Math.max(...outcomes.map((o) => o.connectMs ?? 0));
    t.diagnostic(`first connect after the answer: worst ${worst.toFixed(2)} ms over ${names.length} names`);
    // And each query was decided by the gate process (not answered by anything else).
    await waitFor(() => gate.decisions().filter((d) => d["verdict"] === "allowed").length === names.length, {
      what: "one allowed decision per name",
    });
  });
});
