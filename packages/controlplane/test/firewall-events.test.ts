// The decision stream on the real daemon (clawker-cp from source, embedded auth server) with the
// real HAProxy and DNS gate, read through the real `clawker firewall events` CLI: a denied
// attempt of the "agent" (sockets bound to 127.0.0.3, test/harness/egress-world.ts) appears with
// its layer, destination and reason; filters and the since-backfill; FirewallStatus's counters.
// Attribution to a real agent container is in firewall-dns-daemon.test.ts (it needs Docker); a
// slow watcher's gap in egress-service.test.ts (it needs thousands of events).
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { clawker, spawnClawker, type CliResult, type RunningCli } from "../../../test/harness/clawker-cli.js";
import { startControlPlane, type ControlPlane } from "../../../test/harness/controlplane.js";
import {
  AGENT_ADDRESS,
  firewallConfig,
  startEgressWorld,
  tlsThrough,
  type EgressWorld,
} from "../../../test/harness/egress-world.js";
import { command, root, skipReason } from "../../../test/harness/preconditions.js";
import { waitFor } from "../../../test/harness/wait-for.js";
import { query } from "./fixtures/dns-client.js";

interface EventLine {
  readonly seq?: number;
  readonly gap_count?: number;
  readonly agent_name?: string;
  readonly project?: string;
  readonly dst_name?: string;
  readonly port?: number;
  readonly verdict?: string;
  readonly layer?: string;
  readonly reason?: string;
  readonly protocol?: string;
}

const parse = (lines: readonly string[]): EventLine[] => lines.map((l) => JSON.parse(l) as EventLine);

/** The first match of `re` in a file under `dir` (the proxy's rendered 0600 config). */
function findIn(dir: string, re: RegExp): RegExpExecArray | undefined {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const st = statSync(path);
    const m = st.isDirectory()
      ? findIn(path, re)
      : st.isFile() && st.size < 4 * 1024 * 1024
        ? (re.exec(readFileSync(path, "utf8")) ?? undefined)
        : undefined;
    if (m !== undefined) return m;
  }
  return undefined;
}

// The proxy marks sessions and destroys revoked ones: CAP_NET_ADMIN, root here.
const skip = skipReason(command("haproxy"), command("ss"), root);

describe("firewall events on the real daemon, through the CLI", { skip }, () => {
  let world: EgressWorld;
  let cp: ControlPlane;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  const running: RunningCli[] = [];
  const events = (...args: string[]): Promise<CliResult> => clawker(["firewall", "events", ...args], { env });
  const follow = (...args: string[]): RunningCli => {
    const cli = spawnClawker(["firewall", "events", "--follow", "--format", "json", ...args], { env });
    running.push(cli);
    return cli;
  };
  const deny = async (name: string): Promise<void> => {
    const r = await tlsThrough(world, name, world.upstreamCa.certPem);
    assert.equal(r.code, "ERR_SSL_TLSV1_UNRECOGNIZED_NAME", `${name} is refused by the proxy`);
  };

  before(async () => {
    world = await startEgressWorld(["api.example.test"]);
    dir = await mkdtemp(join(tmpdir(), "fw-events-"));
    cp = await startControlPlane({
      dataDir: join(dir, "data"),
      config: { firewall: firewallConfig(world) },
    });
    env = {
      ...process.env,
      CLAWKER_CP_TRUST_DIR: cp.trustDir,
      CLAWKER_CP_DATA_DIR: cp.dataDir,
      CLAWKER_CP_ADMIN_ADDR: `127.0.0.1:${cp.ports.admin}`,
      CLAWKER_TOKEN_ENDPOINT: cp.tokenEndpoint,
    };
    const up = await clawker(["firewall", "up"], { env });
    assert.equal(up.code, 0, up.stderr);
  });
  after(async () => {
    await Promise.all(running.map((c) => c.stop()));
    await cp?.close();
    await world?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test("a denied attempt appears in `events --follow` with layer, destination, port and reason", async () => {
    const watcher = follow("--denied");
    // Denials until the watcher shows one: it may not be subscribed yet for the first.
    await waitFor(
      async () => {
        await deny("denied.example.test");
        return parse(watcher.lines).some((e) => e.dst_name === "denied.example.test");
      },
      { timeoutMs: 30_000, what: "the denial in the followed stream" },
    );
    const seen = parse(watcher.lines).find((e) => e.dst_name === "denied.example.test")!;
    assert.deepEqual(
      {
        verdict: seen.verdict,
        layer: seen.layer,
        port: seen.port,
        protocol: seen.protocol,
        reason: seen.reason,
        agent_name: seen.agent_name,
        project: seen.project,
      },
      {
        verdict: "denied",
        layer: "proxy",
        port: world.tlsPort,
        protocol: "https",
        reason: "no_rule",
        // 127.0.0.3 is no agent container the daemon knows: left empty, never guessed.
        agent_name: "",
        project: "",
      },
    );
    // The text form: columns with the same facts.
    const text = await events("--since", "1m", "--denied");
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^TIME +VERDICT +LAYER +AGENT +DESTINATION +PROTO +REASON$/m);
    assert.match(
      text.stdout,
      new RegExp(`denied +proxy +- +denied\\.example\\.test:${world.tlsPort} +https +no_rule`),
    );
  });

  test("filters by verdict, layer, agent and project; since backfills, a later since leaves it out", async () => {
    await deny("filtered.example.test");
    // A DNS decision too: the gate refuses 127.0.0.3 (no running agent container).
    const refused = await query({ address: "127.0.0.1", port: world.dnsGatePort }, "api.example.test", "A", {
      from: AGENT_ADDRESS,
    });
    assert.equal(refused.rcode, 5);
    await waitFor(
      async () =>
        parse(
          (await events("--since", "5m", "--format", "json", "--layer", "dns")).stdout
            .split("\n")
            .filter(Boolean),
        ).length > 0,
      { timeoutMs: 10_000, what: "the DNS gate's decision" },
    );
    const all = async (...args: string[]): Promise<EventLine[]> => {
      const r = await events("--since", "5m", "--format", "json", ...args);
      assert.equal(r.code, 0, r.stderr);
      return parse(r.stdout.split("\n").filter((l) => l !== ""));
    };
    // Both layers first: the single-layer listings taken after it hold everything it had.
    const both = await all("--layer", "proxy", "--layer", "dns");
    const dns = await all("--layer", "dns");
    assert.ok(dns.every((e) => e.layer === "dns"));
    assert.ok(dns.some((e) => e.dst_name === "api.example.test" && e.reason === "unknown_source"));
    const proxy = await all("--layer", "proxy", "--denied");
    assert.ok(proxy.some((e) => e.dst_name === "filtered.example.test"));
    assert.ok(proxy.every((e) => e.layer === "proxy" && e.verdict === "denied"));
    const proxyAll = await all("--layer", "proxy");
    assert.ok(
      both.every((e) => e.layer === "dns" || e.layer === "proxy"),
      "only the layers asked for",
    );
    const last = Math.max(...both.map((e) => e.seq!));
    const seqs = (es: EventLine[]): number[] =>
      es
        .map((e) => e.seq!)
        .filter((n) => n <= last)
        .sort((a, b) => a - b);
    assert.deepEqual(seqs(both), seqs([...dns, ...proxyAll]), "two layers = the union of each");
    assert.deepEqual(await all("--agent", "dev"), [], "no decision is attributed to an agent here");
    assert.deepEqual(await all("--project", "web"), []);
    const later = new Date(Date.now() + 60_000).toISOString();
    assert.deepEqual(await all("--since", later), [], "a since after every event backfills nothing");
    const bad = await events("--since", "yesterday");
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--since must be a duration/);
    const badLayer = await events("--layer", "kernel");
    assert.equal(badLayer.code, 2);
  });

  test("FirewallStatus lists the stream's counters: published = delivered + dropped", async () => {
    const r = await clawker(["firewall", "status", "--format", "json"], { env });
    assert.equal(r.code, 0, r.stderr);
    const sources = (JSON.parse(r.stdout) as { event_sources: Record<string, number | string>[] })
      .event_sources;
    assert.deepEqual(
      sources.map((s) => s["source"]),
      ["dns", "bpf", "proxy", "other"],
    );
    const proxy = sources.find((s) => s["source"] === "proxy")!;
    assert.ok(Number(proxy["published"]) >= 2, "the denials above");
    for (const s of sources)
      assert.equal(
        Number(s["published"]),
        Number(s["delivered"]) + Number(s["dropped_rate_limited"]) + Number(s["dropped_upstream"]),
      );
  });

  test("the decision stream: token lines are delivered and HAProxy's drop notices are counted as the proxy's upstream drops", async () => {
    const m = findIn(cp.dataDir, /server daemon unix@(\S+)[\s\S]*?\{"k":"([0-9a-f]{32})"/);
    assert.ok(m !== undefined, "the decision socket and token in the proxy's config");
    const proxyCounts = async (): Promise<Record<string, number>> => {
      const r = await clawker(["firewall", "status", "--format", "json"], { env });
      assert.equal(r.code, 0, r.stderr);
      const s = (
        JSON.parse(r.stdout) as { event_sources: Record<string, number | string>[] }
      ).event_sources.find((e) => e["source"] === "proxy")!;
      return Object.fromEntries(
        ["published", "delivered", "dropped_rate_limited", "dropped_upstream"].map((k) => [k, Number(s[k])]),
      );
    };
    const before = await proxyCounts();
    const line =
      `{"k":"${m[2]}","layer":"tls","ts":1800000000,"src":"127.0.0.3","sport":40000,"agent":"-","project":"-",` +
      `"name":"flood.example.test","port":443,"verdict":"deny","reason":"no_rule","rule":"-","upstream":"-",` +
      `"duration_ms":1,"bytes_in":517,"bytes_out":7,"termination":"SD"}\n`;
    const SENT = 20_000;
    const DROPPED = 1234;
    // As HAProxy's ring forwarder writes: many lines per write, its drop notice in between, and
    // a line without the token that must count nowhere.
    const conn = createConnection(m[1]!);
    await new Promise<void>((resolve, reject) => conn.once("connect", resolve).once("error", reject));
    const batch = line.repeat(100);
    for (let i = 0; i < SENT / 100; i++) {
      if (i === 50) conn.write(`${DROPPED} events dropped\nServer be_pass/s1 is UP\n`);
      if (!conn.write(batch)) await new Promise((resolve) => conn.once("drain", resolve));
    }
    await new Promise<void>((resolve) => conn.end(resolve));
    let after = before;
    await waitFor(
      async () => {
        after = await proxyCounts();
        return after["published"]! - before["published"]! >= SENT + DROPPED;
      },
      { timeoutMs: 30_000, what: "every line delivered and the drops counted" },
    );
    const d = (k: string): number => after[k]! - before[k]!;
    assert.equal(d("published"), SENT + DROPPED);
    assert.equal(d("dropped_upstream"), DROPPED);
    assert.equal(d("delivered") + d("dropped_rate_limited"), SENT);
  });
});
