// The 13 firewall RPCs against the real daemon (clawker-cp from source, embedded auth server) over
// real mTLS with real tokens, driving the real HAProxy: rules added over gRPC are enforced on the
// next connection of an "agent" (a socket bound to 127.0.0.3) going through the proxy's listener,
// with a test DNS server as the upstream resolver and upstream servers on 127.0.0.2.
import assert from "node:assert/strict";
import { createSocket } from "node:dgram";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { status as grpcStatus } from "@grpc/grpc-js";
import Database from "better-sqlite3";
import { AdminError, CLI_CN, openAdminClient, type AdminClient } from "@clawker/adminclient";
import { admin } from "@clawker/proto";
import { Registry } from "../src/agents/registry.js";
import { DATABASE_FILE } from "../src/daemon.js";
import { helperPid, startControlPlane, type ControlPlane } from "../../../test/harness/controlplane.js";
import {
  AGENT_ADDRESS,
  firewallConfig,
  httpsThrough,
  startEgressWorld,
  tlsThrough,
  type EgressWorld,
} from "../../../test/harness/egress-world.js";
import { isAlive } from "../../../test/harness/leftovers.js";
import { startPrivateDocker } from "../../../test/harness/docker.js";
import { command, root, skipReason } from "../../../test/harness/preconditions.js";
import { mintTestTrust, type TestTrust } from "../../../test/harness/trust.js";
import { query } from "./fixtures/dns-client.js";
import { waitFor } from "../../../test/harness/wait-for.js";

const NAMES = ["api.example.test", "mitm.example.test", "other.example.test", "m.example.test"];
/** A registered agent (written into the registry before the daemon starts). */
const AGENT_ID = "ab12".repeat(16);

const {
  ADD_RULE_STATUS_ADDED: ADDED,
  ADD_RULE_STATUS_MODIFIED: MODIFIED,
  ADD_RULE_STATUS_UNCHANGED: UNCHANGED,
} = admin.AddRuleStatus;
const { REMOVE_RULE_STATUS_REMOVED: REMOVED, REMOVE_RULE_STATUS_NOT_FOUND: NOT_FOUND } =
  admin.RemoveRuleStatus;

/** A data dir whose registry already holds AGENT_ID (a real Registry file). */
async function dataDirWithAgent(): Promise<{ dir: string; dataDir: string }> {
  const dir = await mkdtemp(join(tmpdir(), "fw-rpc-"));
  const dataDir = join(dir, "data");
  const registry = new Registry(join(dataDir, DATABASE_FILE));
  registry.register(
    { containerId: AGENT_ID, agentName: "dev", project: "web", certThumbprint: "ee".repeat(32) },
    Math.floor(Date.now() / 1000),
  );
  registry.close();
  return { dir, dataDir };
}

function clientOf(cp: ControlPlane): AdminClient {
  return openAdminClient({
    trust: cp.trust!,
    target: `127.0.0.1:${cp.ports.admin}`,
    tokenEndpoint: cp.tokenEndpoint,
  });
}

/** Every record of the daemon's audit log (firewall/audit/README.md), oldest first. */
async function auditRecords(dataDir: string): Promise<Array<Record<string, unknown>>> {
  const dir = join(dataDir, "audit");
  const out: Array<Record<string, unknown>> = [];
  for (const name of (await readdir(dir)).sort()) {
    for (const line of (await readFile(join(dir, name), "utf8")).split("\n")) {
      if (line !== "") out.push(JSON.parse(line) as Record<string, unknown>);
    }
  }
  return out;
}

/** The AdminError a call rejects with. */
async function refusal(p: Promise<unknown>): Promise<AdminError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof AdminError, String(err));
    // Every firewall refusal carries its ErrorInfo in the firewall's own domain (API.md §6).
    assert.equal(err.domain, "firewall.clawker.dev", `${err.reason}: ${err.message}`);
    return err;
  }
  assert.fail("the call succeeded");
}

// The proxy marks sessions and destroys revoked ones: CAP_NET_ADMIN, root here.
const skip = skipReason(command("haproxy"), command("ss"), root);

describe("firewall RPCs on the real daemon with the real HAProxy", { skip }, () => {
  let world: EgressWorld;
  let cp: ControlPlane;
  let client: AdminClient;
  let dir: string;
  const rule = (dst: string, extra: Partial<admin.EgressRule> = {}): admin.EgressRule =>
    admin.EgressRule.fromPartial({ dst, port: String(world.tlsPort), ...extra });

  before(async () => {
    world = await startEgressWorld(NAMES);
    const made = await dataDirWithAgent();
    dir = made.dir;
    cp = await startControlPlane({ dataDir: made.dataDir, config: { firewall: firewallConfig(world) } });
    client = clientOf(cp);
  });
  after(async () => {
    await client?.close();
    await cp?.close();
    await world?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test("Init brings the proxy and the DNS gate up and answers their addresses; Status fills every field", async () => {
    const { eventSources, ...fresh } = await client.firewallStatus();
    // The decision stream's counters (our extension field): one entry per source, nothing yet.
    assert.deepEqual(
      eventSources.map((e) => [e.source, e.published]),
      [
        ["dns", 0n],
        ["bpf", 0n],
        ["proxy", 0n],
        ["other", 0n],
      ],
    );
    assert.deepEqual(fresh, {
      running: false,
      envoyHealth: false,
      corednsHealth: false,
      ruleCount: 0,
      envoyIp: "",
      corednsIp: "",
      networkId: "",
      cidr: "",
      containers: [],
      interceptionCaPem: "",
    });
    const init = await client.firewallInit();
    // Docker has no such network: an honest empty network_id.
    assert.deepEqual(init, { envoyIp: "127.0.0.1", corednsIp: "127.0.0.1", networkId: "" });
    assert.deepEqual(await client.firewallInit(), init, "Init is idempotent");
    const { eventSources: _sources, ...up } = await client.firewallStatus();
    assert.deepEqual(up, {
      running: true,
      envoyHealth: true,
      corednsHealth: true,
      ruleCount: 0,
      envoyIp: "127.0.0.1",
      corednsIp: "127.0.0.1",
      networkId: "",
      cidr: "127.0.0.3/32",
      containers: [],
      // The CA agents must trust (what `clawker run` copies in): the public part only.
      interceptionCaPem: await readFile(join(cp.dataDir, "firewall", "ca", "ca.crt"), "utf8"),
    });
    // The gate answers, and only agents it knows: 127.0.0.3 is no running agent container.
    const refused = await query({ address: "127.0.0.1", port: world.dnsGatePort }, "api.example.test", "A", {
      from: AGENT_ADDRESS,
    });
    assert.equal(refused.rcode, 5);
    assert.equal(refused.ede?.code, 18);
  });

  test("a rule added over gRPC admits the next connection; removed, it is refused and its open tunnel cut", async () => {
    const ca = world.upstreamCa.certPem;
    assert.equal((await tlsThrough(world, "api.example.test", ca)).code, "ERR_SSL_TLSV1_UNRECOGNIZED_NAME");
    const added = await client.firewallAddRules([rule("api.example.test"), rule("other.example.test")]);
    assert.deepEqual(added, { statuses: [ADDED, ADDED], stackRestarted: false });
    assert.equal((await httpsThrough(world, "api.example.test", "/first", ca)).status, 200);
    assert.ok(world.seen.includes("api.example.test GET /first"));

    const cut = await tlsThrough(world, "api.example.test", ca);
    const kept = await tlsThrough(world, "other.example.test", ca);
    assert.ok(cut.socket !== undefined && kept.socket !== undefined);
    let cutClosed = false;
    let keptClosed = false;
    cut.socket.on("close", () => (cutClosed = true)).on("error", () => undefined);
    kept.socket.on("close", () => (keptClosed = true)).on("error", () => undefined);

    const removed = await client.firewallRemoveRule(
      admin.FirewallRemoveRuleRequest.fromPartial({ dst: "API.example.test.", port: String(world.tlsPort) }),
    );
    assert.deepEqual(removed, { stackRestarted: false, status: REMOVED });
    await waitFor(() => cutClosed, { timeoutMs: 3_000, what: "the removed rule's tunnel to close" });
    assert.equal((await tlsThrough(world, "api.example.test", ca)).code, "ERR_SSL_TLSV1_UNRECOGNIZED_NAME");
    assert.equal(keptClosed, false, "a tunnel under another rule stays");
    kept.socket.destroy();

    // Not there: NOT_FOUND in the result, never as a gRPC status.
    assert.deepEqual(
      await client.firewallRemoveRule(
        admin.FirewallRemoveRuleRequest.fromPartial({ dst: "api.example.test", port: String(world.tlsPort) }),
      ),
      { stackRestarted: false, status: NOT_FOUND },
    );
  });

  test("statuses are index-aligned; one invalid rule fails the call, names index and field, writes nothing", async () => {
    await client.firewallAddRules([rule("m.example.test")]);
    const result = await client.firewallAddRules([
      rule("new.example.test"),
      rule("other.example.test"),
      rule("m.example.test", { action: "deny" }),
    ]);
    assert.deepEqual(result.statuses, [ADDED, UNCHANGED, MODIFIED]);

    const before = await client.firewallListRules();
    const bad = await refusal(
      client.firewallAddRules([
        rule("ok.example.test"),
        { ...rule("bad.example.test"), proto: "tcp", port: "" },
      ]),
    );
    assert.equal(bad.reason, "invalid_rule");
    assert.match(bad.message, /rules\[1\]\.port: is required for tcp/);
    assert.deepEqual(await client.firewallListRules(), before, "nothing written");

    const both = await refusal(
      client.firewallRemoveRule(
        admin.FirewallRemoveRuleRequest.fromPartial({ all: true, dst: "m.example.test" }),
      ),
    );
    assert.equal(both.reason, "invalid_selector");
    assert.match(both.message, /all .* takes no dst/);
    await client.firewallRemoveRule(
      admin.FirewallRemoveRuleRequest.fromPartial({ dst: "new.example.test", port: String(world.tlsPort) }),
    );
  });

  test("rule_changes rows carry the token's client id and the CLI certificate's CN", () => {
    const db = new Database(join(cp.dataDir, DATABASE_FILE), { readonly: true });
    try {
      const rows = db
        .prepare("SELECT client_id, cert_cn, op, dst FROM rule_changes ORDER BY seq")
        .all() as Array<{
        client_id: string;
        cert_cn: string;
        op: string;
        dst: string;
      }>;
      assert.ok(rows.length >= 6, `${rows.length} rows`);
      for (const row of rows) assert.deepEqual([row.client_id, row.cert_cn], ["clawker-cli", CLI_CN]);
      assert.deepEqual(
        rows.slice(0, 3).map((r) => [r.op, r.dst]),
        [
          ["add", "api.example.test"],
          ["add", "other.example.test"],
          ["remove", "api.example.test"],
        ],
      );
    } finally {
      db.close();
    }
  });

  test("path rules are enforced with a certificate of the firewall's CA; RotateCA re-issues it and leaves passthrough tunnels open", async () => {
    await client.firewallAddRules([
      rule("mitm.example.test", { pathRules: [{ path: "/allowed/", action: "allow", methods: ["GET"] }] }),
      rule("api.example.test"),
    ]);
    const caFile = join(cp.dataDir, "firewall", "ca", "ca.crt");
    const ca1 = await readFile(caFile, "utf8");
    assert.equal((await httpsThrough(world, "mitm.example.test", "/allowed/x", ca1)).status, 200);
    const denied = await httpsThrough(world, "mitm.example.test", "/secret", ca1);
    assert.equal(denied.status, 403);
    assert.match(denied.body, /"reason":"path_denied"/);

    const tunnel = await tlsThrough(world, "api.example.test", world.upstreamCa.certPem);
    assert.ok(tunnel.socket !== undefined);
    assert.deepEqual(await client.firewallRotateCa(), { stackRestarted: false });
    const ca2 = await readFile(caFile, "utf8");
    assert.notEqual(ca2, ca1);
    assert.equal((await client.firewallStatus()).interceptionCaPem, ca2, "Status hands out the new CA");
    assert.equal((await httpsThrough(world, "mitm.example.test", "/allowed/y", ca2)).status, 200);
    await assert.rejects(httpsThrough(world, "mitm.example.test", "/allowed/z", ca1), /certificate|verify/i);

    tunnel.socket.write("GET /after-rotate HTTP/1.1\r\nHost: api.example.test\r\nConnection: close\r\n\r\n");
    const reply = await new Promise<string>((resolve) => {
      let buf = "";
      tunnel.socket!.on("data", (d: Buffer) => (buf += d.toString()));
      tunnel.socket!.on("end", () => resolve(buf));
    });
    assert.match(reply, /^HTTP\/1\.1 200/, "the passthrough tunnel survived the rotation");
    tunnel.socket.destroy();
  });

  test("Reload; SyncRoutes ignores the request's routes; ResolveHostname asks the configured resolvers", async () => {
    assert.deepEqual(await client.firewallReload(), { stackRestarted: false });
    // No eBPF manager in this build: routes are compiled, none takes effect in a kernel.
    assert.deepEqual(await client.firewallSyncRoutes([{ identity: 4242, dstPort: 1, envoyPort: 2 }]), {
      applied: 0,
    });
    assert.deepEqual(await client.firewallResolveHostname("api.example.test"), ["127.0.0.2"]);
    assert.ok(world.dns.queries.includes("api.example.test/A"), "asked the test resolver, not the host's");
    assert.deepEqual(await client.firewallResolveHostname("nowhere.example.test"), []);
    const bad = await refusal(client.firewallResolveHostname("not a name"));
    assert.equal(bad.reason, "invalid_request");
  });

  test("Enable, Disable and Bypass by container id: recorded and visible in Status; a bypass ends by itself", async () => {
    await client.firewallBypass(AGENT_ID.slice(0, 12), 2);
    const during = (await client.firewallStatus()).containers;
    assert.equal(during.length, 1);
    assert.deepEqual(
      { ...during[0], bypassSecondsLeft: during[0]!.bypassSecondsLeft > 0 },
      { containerId: AGENT_ID, mode: "bypass", bypassSecondsLeft: true, enforced: false },
    );
    await waitFor(async () => (await client.firewallStatus()).containers.length === 0, {
      timeoutMs: 6_000,
      what: "the bypass to expire",
    });
    // The log line comes through the daemon's stdout pipe: it may arrive after Status answered.
    await waitFor(
      () => cp.logs.some((l) => l["event"] === "bypass_expired" && l["containerId"] === AGENT_ID),
      {
        what: "the bypass_expired log line",
      },
    );
    assert.ok(
      cp.logs.some((l) => l["event"] === "container_mode" && l["enforced"] === false),
      "the log says the mode is recorded, not enforced",
    );

    await client.firewallDisable(AGENT_ID);
    assert.deepEqual(
      (await client.firewallStatus()).containers.map((c) => c.mode),
      ["disabled"],
    );
    await client.firewallEnable(AGENT_ID);
    assert.deepEqual((await client.firewallStatus()).containers, []);

    for (const seconds of [0, 3601]) {
      const err = await refusal(client.firewallBypass(AGENT_ID, seconds));
      assert.equal(err.reason, "invalid_request");
      assert.match(err.message, /timeout_seconds must be 1-3600/);
    }
    assert.equal((await refusal(client.firewallEnable("f".repeat(64)))).reason, "unknown_container");
    assert.equal((await refusal(client.firewallEnable("not-hex"))).reason, "invalid_request");

    // The audit log has each of them with who asked (the expiry: the control plane itself), the
    // refused ones included (firewall/audit/README.md).
    const cli = { client_id: "clawker-cli", cn: CLI_CN };
    const expected = [
      [
        "bypass_start",
        cli,
        {
          request: { container_id: AGENT_ID.slice(0, 12), timeout_seconds: 2 },
          outcome: "ok",
          container_id: AGENT_ID,
          seconds: 2,
          enforced: false,
        },
      ],
      ["bypass_end", { client_id: "", cn: "" }, { container_id: AGENT_ID, cause: "expired" }],
      [
        "disable",
        cli,
        { request: { container_id: AGENT_ID }, outcome: "ok", container_id: AGENT_ID, enforced: false },
      ],
      [
        "enable",
        cli,
        { request: { container_id: AGENT_ID }, outcome: "ok", container_id: AGENT_ID, enforced: false },
      ],
      [
        "bypass_start",
        cli,
        {
          request: { container_id: AGENT_ID, timeout_seconds: 0 },
          outcome: "failed",
          reason: "invalid_request",
        },
      ],
      [
        "bypass_start",
        cli,
        {
          request: { container_id: AGENT_ID, timeout_seconds: 3601 },
          outcome: "failed",
          reason: "invalid_request",
        },
      ],
      [
        "enable",
        cli,
        { request: { container_id: "f".repeat(64) }, outcome: "failed", reason: "unknown_container" },
      ],
      ["enable", cli, { request: { container_id: "not-hex" }, outcome: "failed", reason: "invalid_request" }],
    ];
    const modeActions = new Set(["bypass_start", "bypass_end", "enable", "disable"]);
    const actions = await waitFor(
      async () => {
        const got = (await auditRecords(cp.dataDir)).filter(
          (r) => r["kind"] === "action" && modeActions.has(r["action"] as string),
        );
        return got.length >= expected.length ? got : undefined;
      },
      { what: "the audit records of the mode changes" },
    );
    assert.deepEqual(
      actions.map((r) => [r["action"], r["who"], r["detail"]]),
      expected,
    );
  });

  test("Remove takes the stack down (agents refused); rules added meanwhile are stored; Init brings both back", async () => {
    await client.firewallRemove();
    const status = await client.firewallStatus();
    assert.deepEqual(
      [status.running, status.envoyHealth, status.envoyIp, status.corednsHealth, status.corednsIp],
      [false, false, "", false, ""],
    );
    await assert.rejects(
      query({ address: "127.0.0.1", port: world.dnsGatePort }, "api.example.test", "A", {
        from: AGENT_ADDRESS,
        transport: "tcp",
      }),
      { code: "ECONNREFUSED" },
      "no DNS gate listens once the stack is down",
    );
    assert.ok(status.ruleCount > 0, "the rules stay");
    const refused = await tlsThrough(world, "api.example.test", world.upstreamCa.certPem);
    assert.equal(refused.code, "ECONNREFUSED");
    const down = await refusal(client.firewallDisable(AGENT_ID));
    assert.equal(down.reason, "not_running");
    assert.match(down.message, /not running .*clawker firewall up/);

    assert.deepEqual((await client.firewallAddRules([rule("late.example.test")])).statuses, [ADDED]);
    await client.firewallInit();
    assert.equal(
      (await httpsThrough(world, "api.example.test", "/back", world.upstreamCa.certPem)).status,
      200,
    );
  });
});

describe("firewall state across restarts and the drain", { skip }, () => {
  let world: EgressWorld;
  let trust: TestTrust;
  let dir: string;
  let dataDir: string;
  before(async () => {
    world = await startEgressWorld(NAMES);
    trust = await mintTestTrust();
    ({ dir, dataDir } = await dataDirWithAgent());
  });
  after(async () => {
    await world?.close();
    await trust?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const start = (ports?: ControlPlane["ports"]): Promise<ControlPlane> =>
    startControlPlane({
      dataDir,
      trustDir: trust.trustDir,
      trustSet: trust.set,
      ...(ports === undefined ? {} : { ports }),
      config: { firewall: firewallConfig(world) },
    });

  test("a stack left up comes back with its rules after a restart; a bypass does not; Remove persists too", async () => {
    const first = await start();
    const c1 = clientOf(first);
    await c1.firewallInit();
    await c1.firewallAddRules([
      admin.EgressRule.fromPartial({ dst: "api.example.test", port: String(world.tlsPort) }),
    ]);
    await c1.firewallBypass(AGENT_ID, 600);
    await c1.close();
    const proxyPid = helperPid(first, "egress-proxy");
    const gatePid = helperPid(first, "dns-gate");
    assert.equal(await first.close(), 0);
    assert.equal(isAlive(proxyPid), false, "HAProxy stops with the daemon");
    assert.equal(isAlive(gatePid), false, "the DNS gate stops with the daemon");

    const second = await start(first.ports);
    const c2 = clientOf(second);
    try {
      const status = await c2.firewallStatus();
      assert.deepEqual(
        [status.running, status.envoyHealth, status.ruleCount, status.containers],
        [true, true, 1, []],
      );
      assert.equal(
        (await httpsThrough(world, "api.example.test", "/restarted", world.upstreamCa.certPem)).status,
        200,
      );
      await c2.firewallRemove();
    } finally {
      await c2.close();
      await second.close();
    }
    const third = await start(first.ports);
    const c3 = clientOf(third);
    try {
      assert.equal((await c3.firewallStatus()).running, false);
    } finally {
      await c3.close();
      await third.close();
    }
  });

  test("the DNS gate's port taken: Init answers FAILED_PRECONDITION naming it, nothing stays up, the daemon serves on", async () => {
    const squatter = createSocket("udp4");
    await new Promise<void>((resolve) => squatter.bind(world.dnsGatePort, "127.0.0.1", resolve));
    let squatting = true;
    const release = (): Promise<void> =>
      squatting ? new Promise<void>((resolve) => squatter.close(() => resolve())) : Promise.resolve();
    const cp = await start();
    const client = clientOf(cp);
    try {
      const taken = await refusal(client.firewallInit());
      assert.deepEqual([taken.code, taken.reason], [grpcStatus.FAILED_PRECONDITION, "stack_failed"]);
      assert.equal(
        taken.message,
        `DNS gate did not start: the DNS gate cannot listen on 127.0.0.1:${world.dnsGatePort} (EADDRINUSE)`,
      );
      assert.equal((await client.firewallStatus()).running, false);
      assert.equal(isAlive(helperPid(cp, "egress-proxy")), false, "the proxy that came up went down again");
      await release();
      squatting = false;
      assert.equal((await client.firewallInit()).corednsIp, "127.0.0.1", "free again: Init brings it up");
      assert.equal(cp.proc.exitCode, null, "no helper crash drained the daemon");
    } finally {
      await release();
      await client.close();
      await cp.close();
    }
  });

  test("once the drain began, queued and new rule changes answer UNAVAILABLE and none of them is written", async () => {
    const cp = await start();
    const client = clientOf(cp);
    await client.firewallInit();
    const storedDsts = (): Set<string> => {
      const db = new Database(join(dataDir, DATABASE_FILE), { readonly: true });
      try {
        return new Set(
          (db.prepare("SELECT dst FROM egress_rules").all() as Array<{ dst: string }>).map((r) => r.dst),
        );
      } finally {
        db.close();
      }
    };
    const outcome = async (dst: string): Promise<string> => {
      try {
        await client.firewallAddRules([admin.EgressRule.fromPartial({ dst })]);
        return "ok";
      } catch (err) {
        return err instanceof AdminError ? `${err.reason}: ${err.message}` : String(err);
      }
    };
    // The DNS gate stopped: the next reconcile waits for its answer and holds the queue, so the
    // changes sent behind it are queued, not yet written, when the drain begins (deterministic,
    // where racing a flood of callers against SIGTERM was not under load).
    const gate = helperPid(cp, "dns-gate");
    process.kill(gate, "SIGSTOP");
    let held: Promise<string>;
    let refused: string[];
    try {
      held = outcome("held.example.test");
      await waitFor(() => storedDsts().has("held.example.test"), {
        timeoutMs: 5_000,
        what: "the held change written, its reconcile waiting on the stopped gate",
      });
      const queued = ["q1", "q2", "q3"].map((n) => outcome(`${n}.example.test`));
      cp.proc.kill("SIGTERM");
      // Sent after the signal: refused by the closed queue, as gRPC still serves until the queue is idle.
      const late = outcome("late.example.test");
      refused = await Promise.all([...queued, late]);
    } finally {
      process.kill(gate, "SIGCONT");
    }
    assert.deepEqual(refused, Array(4).fill("queue_closed: firewall is shutting down"));
    // The held change was written before the drain: applied, or saved for the next start.
    assert.match(await held, /^(ok|saved_not_applied: rules saved; they will apply on the next reload)$/);
    assert.equal(await cp.exited, 0);
    await client.close();
    const stored = storedDsts();
    assert.equal(stored.has("held.example.test"), true);
    for (const n of ["q1", "q2", "q3", "late"]) {
      assert.equal(stored.has(`${n}.example.test`), false, `${n} refused but stored`);
    }
    const steps = cp.logs.filter((l) => l["event"] === "drain_step").map((l) => [l["step"], l["outcome"]]);
    // Memory relief only stops its timer; the queue closes before anything stops serving.
    assert.deepEqual(steps.slice(0, 2), [
      ["memory_relief", "ok"],
      ["firewall_queue", "ok"],
    ]);
    assert.ok(steps.some(([s, o]) => s === "firewall_stack" && o === "ok"));
    // The proxy serves (denying what no rule allows) until the firewall's own step, after gRPC:
    // closing the queue aborted the signal its start was given, and that once stopped HAProxy.
    const at = (match: (l: Record<string, unknown>) => boolean): number => cp.logs.findIndex(match);
    const stopped = at((l) => l["event"] === "proxy_stopped");
    assert.ok(
      stopped > at((l) => l["event"] === "drain_step" && l["step"] === "grpc"),
      "HAProxy outlived gRPC",
    );
  });
});

describe(
  "FirewallInit and FirewallStatus with the agents' Docker network",
  {
    skip: skipReason(command("haproxy"), root, command("dockerd"), command("nsenter")),
  },
  () => {
    test("network_id and cidr come from the network the config names (a private dockerd)", async (t) => {
      const docker = await startPrivateDocker(t);
      const network = await docker.docker.createNetwork({
        Name: "clawker-fw-test",
        Driver: "bridge",
        Internal: true,
        IPAM: { Config: [{ Subnet: "10.203.7.0/24", Gateway: "10.203.7.1" }] },
      });
      const world = await startEgressWorld(["api.example.test"]);
      t.after(() => world.close());
      const cp = await startControlPlane({
        config: {
          docker: { host: docker.dockerHost },
          // The proxy still listens on loopback (the network's gateway lives in the private netns).
          firewall: firewallConfig(world, { network: "clawker-fw-test" }),
        },
      });
      t.after(() => cp.close());
      const client = clientOf(cp);
      t.after(() => client.close());
      assert.deepEqual(await client.firewallInit(), {
        envoyIp: "127.0.0.1",
        corednsIp: "127.0.0.1",
        networkId: network.id,
      });
      const status = await client.firewallStatus();
      assert.deepEqual([status.networkId, status.cidr], [network.id, "10.203.7.0/24"]);
    });
  },
);

describe("a firewall nothing would enforce is refused", { skip }, () => {
  test("without the eBPF enforcement, FirewallInit fails not_enforced and no proxy starts", async (t) => {
    const world = await startEgressWorld(["api.example.test"]);
    t.after(() => world.close());
    const cp = await startControlPlane({
      config: { firewall: firewallConfig(world, { allowUnenforced: false }) },
    });
    t.after(() => cp.close());
    const client = clientOf(cp);
    t.after(() => client.close());
    const err = await refusal(client.firewallInit());
    assert.equal(err.reason, "not_enforced");
    assert.match(err.message, /eBPF enforcement is off.*ebpf\.enabled: true/);
    assert.equal((await client.firewallStatus()).running, false);
    assert.ok(!cp.logs.some((l) => l["msg"] === "helper started" && l["helper"] === "egress-proxy"));
  });
});

describe("the rule limit", { skip }, () => {
  test("FirewallAddRules past firewall.proxy.maxRules answers INVALID_ARGUMENT naming the first new rule, and writes nothing", async (t) => {
    const world = await startEgressWorld(["api.example.test"]);
    t.after(() => world.close());
    const base = firewallConfig(world);
    const cp = await startControlPlane({
      config: { firewall: { ...base, proxy: { ...(base["proxy"] as object), maxRules: 2 } } },
    });
    t.after(() => cp.close());
    const client = clientOf(cp);
    t.after(() => client.close());
    const rule = (dst: string, extra: Partial<admin.EgressRule> = {}): admin.EgressRule =>
      admin.EgressRule.fromPartial({ dst, port: String(world.tlsPort), ...extra });
    await client.firewallAddRules([rule("a.example.test"), rule("b.example.test")]);
    const before = await client.firewallListRules();
    const err = await refusal(
      client.firewallAddRules([rule("a.example.test", { action: "deny" }), rule("c.example.test")]),
    );
    assert.equal(err.code, grpcStatus.INVALID_ARGUMENT);
    assert.equal(err.reason, "invalid_rule");
    assert.match(err.message, /rules\[1\]\.dst: the firewall holds at most 2 rules/);
    assert.deepEqual(await client.firewallListRules(), before, "nothing written");
    // At the limit a rule can still change.
    assert.deepEqual((await client.firewallAddRules([rule("a.example.test", { action: "deny" })])).statuses, [
      MODIFIED,
    ]);
  });
});
