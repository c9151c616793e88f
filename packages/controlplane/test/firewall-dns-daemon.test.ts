// The DNS gate as the daemon runs it: clawker-cp (from source) inside a private dockerd's network
// namespace, the agents' Docker network's gateway as the gate's address, a real agent container
// (busybox, agent labels) whose own address asks, a real upstream DNS server process in the same
// namespace, and a Unix-socket peer in the eBPF manager's place. Rules change through the real
// `clawker` CLI (the admin listener is only reachable inside the namespace).
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { describe, test, type TestContext } from "node:test";
import { LABELS } from "@clawker/overseer";
import { clawker, type CliResult } from "../../../test/harness/clawker-cli.js";
import { helperPid, startControlPlane, type ControlPlane } from "../../../test/harness/controlplane.js";
import { startPrivateDocker } from "../../../test/harness/docker.js";
import { busyboxImage } from "../../../test/harness/images.js";
import { isAlive } from "../../../test/harness/leftovers.js";
import { NetnsProcess } from "../../../test/harness/netns.js";
import { command, root, skipReason } from "../../../test/harness/preconditions.js";
import { waitFor } from "../../../test/harness/wait-for.js";
import { blockedText } from "../src/firewall/dns/index.js";
import { ManagerPeer } from "./fixtures/manager-peer.js";

const NETWORK = "clawker-agents-dnsgate";
const SUBNET = "10.203.11.0/24";
const GATEWAY = "10.203.11.1";
const ALLOWED = "api.example.test";
const ALLOWED_ADDRESS = "10.203.99.7";
const LATER = "later.example.test";
const LATER_ADDRESS = "10.203.99.8";

const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
const TSX = ["--import", import.meta.resolve("tsx"), "--conditions=source"];

interface Answer {
  readonly rcode?: number;
  readonly addresses?: string[];
  readonly ede?: { code: number; text: string } | null;
  readonly error?: string;
}

/** A dns-asker process inside a container's network namespace: asks from the container's address. */
class Asker {
  readonly #child: ChildProcess;
  readonly #waiting = new Map<number, (a: Answer) => void>();
  #next = 1;
  readonly ready: Promise<void>;

  constructor(containerPid: number, source: string) {
    this.#child = spawn(
      "nsenter",
      [`--net=/proc/${containerPid}/ns/net`, process.execPath, ...TSX, fixture("dns-asker.ts"), source],
      { stdio: ["pipe", "pipe", "inherit"] },
    );
    let markReady!: () => void;
    this.ready = new Promise((resolve) => (markReady = resolve));
    createInterface({ input: this.#child.stdout! }).on("line", (line) => {
      const msg = JSON.parse(line) as Answer & { id?: number; ready?: boolean };
      if (msg.ready === true) markReady();
      if (msg.id !== undefined) this.#waiting.get(msg.id)?.(msg);
    });
  }

  ask(name: string, type = "A"): Promise<Answer> {
    const id = this.#next++;
    return new Promise((resolve) => {
      this.#waiting.set(id, resolve);
      const server = { address: GATEWAY, port: 53 };
      this.#child.stdin!.write(`${JSON.stringify({ id, server, name, type })}\n`);
    });
  }

  async close(): Promise<void> {
    const gone = new Promise((resolve) => this.#child.once("exit", resolve));
    this.#child.stdin!.end();
    if (this.#child.exitCode === null) await gone;
  }
}

describe(
  "the daemon runs the DNS gate on the agents' network",
  { skip: skipReason(root, command("haproxy"), command("dockerd"), command("nsenter"), command("ip")) },
  () => {
    test("agents get allowed names (recorded first), NXDOMAIN + EDE 15 otherwise, new rules at once; a gate crash drains the daemon", async (t: TestContext) => {
      const docker = await startPrivateDocker(t);
      await docker.docker.createNetwork({
        Name: NETWORK,
        Driver: "bridge",
        Internal: true,
        IPAM: { Config: [{ Subnet: SUBNET, Gateway: GATEWAY }] },
      });
      const upstream = new NetnsProcess(docker, process.execPath, [
        ...TSX,
        fixture("dns-upstream.ts"),
        JSON.stringify({
          [ALLOWED]: { addresses: [ALLOWED_ADDRESS], ttl: 300 },
          [LATER]: { addresses: [LATER_ADDRESS], ttl: 300 },
          "denied.example.test": { addresses: ["10.203.99.9"], ttl: 300 },
        }),
      ]);
      await upstream.start();
      t.after(() => upstream.close());
      const upstreamPort = Number((await upstream.waitForOutput(/"ready":(\d+)/, 60_000))[1]);
      const peer = await ManagerPeer.start();
      t.after(() => peer.close());

      const cp: ControlPlane = await startControlPlane({
        netns: docker.netnsName,
        config: {
          docker: { host: docker.dockerHost },
          firewall: {
            network: NETWORK,
            resolvers: [{ address: "127.0.0.1", port: upstreamPort }],
            dns: { ebpfSocket: peer.path },
            proxy: { routePorts: { first: 16000, count: 2 } },
            // The agent asks the gate directly here (a stand-in records the answers): no eBPF
            // steering, which firewall-egress.test.ts covers with the real manager.
            allowUnenforced: true,
          },
        },
      });
      t.after(() => cp.close());
      const env = {
        ...process.env,
        CLAWKER_CP_TRUST_DIR: cp.trustDir,
        CLAWKER_CP_DATA_DIR: cp.dataDir,
        CLAWKER_CP_ADMIN_ADDR: `127.0.0.1:${cp.ports.admin}`,
        CLAWKER_TOKEN_ENDPOINT: cp.tokenEndpoint,
      };
      const fw = async (...args: string[]): Promise<CliResult> => {
        const r = await clawker(["firewall", ...args], { env, netns: docker.netnsName });
        assert.equal(r.code, 0, `clawker firewall ${args.join(" ")}: ${r.stderr}`);
        return r;
      };

      const up = JSON.parse((await fw("up", "--format", "json")).stdout) as Record<string, string>;
      assert.equal(up["envoy_ip"], GATEWAY);
      assert.equal(up["coredns_ip"], GATEWAY, "the gate answers on the agents' gateway");
      await fw("add", ALLOWED);
      await fw("add", "denied.example.test", "--action", "deny");

      // A registered agent: the daemon learns its address from Docker (labels, network).
      const container = await docker.docker.createContainer({
        Image: await busyboxImage(docker.docker),
        Cmd: ["sleep", "600"],
        Labels: {
          [LABELS.managed]: "true",
          [LABELS.purpose]: "agent",
          [LABELS.agent]: "dev",
          [LABELS.project]: "web",
        },
        HostConfig: { NetworkMode: NETWORK, CapDrop: ["NET_RAW"] },
      });
      await container.start();
      const inspected = await container.inspect();
      const agentAddress = inspected.NetworkSettings.Networks[NETWORK]!.IPAddress;
      const asker = new Asker(inspected.State.Pid, agentAddress);
      t.after(() => asker.close());
      await asker.ready;

      // Until the daemon has put the agent into the gate's policy the gate refuses it (REFUSED).
      const denied = await waitFor(
        async () => {
          const a = await asker.ask("denied.example.test");
          // REFUSED: not in the policy yet; no answer at all: asked again.
          return a.rcode === 5 || a.rcode === undefined ? undefined : a;
        },
        { timeoutMs: 30_000, intervalMs: 200, what: "the gate to know the agent's address" },
      );
      assert.equal(denied.rcode, 3, JSON.stringify(denied));
      assert.deepEqual(denied.ede, { code: 15, text: blockedText("denied.example.test") });
      const unknown = await asker.ask("nowhere.example.test");
      assert.equal(unknown.rcode, 3);
      assert.deepEqual(unknown.ede, { code: 15, text: blockedText("nowhere.example.test") });

      const allowed = await asker.ask(ALLOWED);
      assert.deepEqual([allowed.rcode, allowed.addresses], [0, [ALLOWED_ADDRESS]]);
      const recorded = peer.dnsEntries().find((e) => e.address === ALLOWED_ADDRESS);
      assert.ok(
        recorded !== undefined && recorded.identity > 0,
        "recorded in the dns_cache before the answer",
      );
      const aaaa = await asker.ask(ALLOWED, "AAAA");
      assert.deepEqual([aaaa.rcode, aaaa.addresses], [0, []], "AAAA answered empty (IPv4 only)");

      // A rule added over the admin API answers on the very next query.
      assert.equal((await asker.ask(LATER)).rcode, 3);
      await fw("add", LATER);
      const later = await asker.ask(LATER);
      assert.deepEqual([later.rcode, later.addresses], [0, [LATER_ADDRESS]]);

      const status = JSON.parse((await fw("status", "--format", "json")).stdout) as Record<string, unknown>;
      assert.deepEqual([status["coredns_health"], status["coredns_ip"]], [true, GATEWAY]);

      // Issue 11: the denial is in the decision stream, attributed to the agent by the daemon
      // (its address -> the running container -> the agent), with the rule that decided.
      const decisions = (
        await fw("events", "--since", "10m", "--denied", "--agent", "dev", "--format", "json")
      ).stdout
        .split("\n")
        .filter((l) => l !== "")
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      // (Queries asked before the gate knew the agent are there too, as unknown_source.)
      const blocked = decisions.find(
        (d) => d["dst_name"] === "denied.example.test" && d["reason"] !== "unknown_source",
      );
      assert.deepEqual(
        blocked && {
          agent: blocked["agent_name"],
          project: blocked["project"],
          container: blocked["container_id"],
          layer: blocked["layer"],
          reason: blocked["reason"],
          rule: blocked["rule"],
        },
        {
          agent: "dev",
          project: "web",
          container: inspected.Id,
          layer: "dns",
          reason: "rule_deny",
          rule: { key: "denied.example.test", project: "", agent_name: "", action: "deny" },
        },
        JSON.stringify(decisions),
      );
      assert.ok(decisions.some((d) => d["dst_name"] === "nowhere.example.test" && d["reason"] === "no_rule"));

      // The gate crashing is a helper crash, as HAProxy's: the daemon drains and exits 1.
      const gatePid = helperPid(cp, "dns-gate");
      const proxyPid = helperPid(cp, "egress-proxy");
      process.kill(gatePid, "SIGKILL");
      assert.equal(await cp.exited, 1);
      const crash = cp.logs.find((l) => l["event"] === "helper_crash");
      assert.equal(crash?.["helper"], "dns-gate");
      assert.equal(isAlive(proxyPid), false, "the proxy stopped in the drain");
    });
  },
);
