// End to end: the real `clawker` CLI (a process) drives the real daemon's firewall (clawker-cp from
// source with the real HAProxy): up, add (enforced for an "agent" socket through the proxy), list
// in canonical order with scopes, remove (exit 1 when nothing matched), an invalid rule refused
// naming its field with nothing stored, prune --all, reload, status JSON, a bypass that ends by
// itself and one ended with Ctrl+C, and `controlplane status` with its firewall section.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Registry } from "../../packages/controlplane/src/agents/registry.js";
import { clawker, type CliResult } from "../harness/clawker-cli.js";
import { startControlPlane, type ControlPlane } from "../harness/controlplane.js";
import {
  firewallConfig,
  httpsThrough,
  startEgressWorld,
  tlsThrough,
  type EgressWorld,
} from "../harness/egress-world.js";
import { REPO_ROOT } from "../harness/images.js";
import { command, root, skipReason } from "../harness/preconditions.js";
import { waitFor } from "../harness/wait-for.js";

const AGENT_ID = "cd34".repeat(16);
// The proxy marks sessions and destroys revoked ones: CAP_NET_ADMIN, root here.
const skip = skipReason(command("haproxy"), command("ss"), root);

describe("clawker firewall against the real daemon", { skip }, () => {
  let world: EgressWorld;
  let cp: ControlPlane;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  const fw = (...args: string[]): Promise<CliResult> => clawker(["firewall", ...args], { env });
  const json = <T>(r: CliResult): T => {
    assert.equal(r.code, 0, `exit ${r.code}: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  };

  before(async () => {
    world = await startEgressWorld(["api.example.test", "b.example.test"]);
    dir = await mkdtemp(join(tmpdir(), "cli-fw-"));
    const dataDir = join(dir, "data");
    const registry = new Registry(join(dataDir, "registry.db"));
    registry.register(
      { containerId: AGENT_ID, agentName: "dev", project: "web", certThumbprint: "aa".repeat(32) },
      Math.floor(Date.now() / 1000),
    );
    registry.close();
    cp = await startControlPlane({ dataDir, config: { firewall: firewallConfig(world) } });
    env = {
      ...process.env,
      CLAWKER_CP_TRUST_DIR: cp.trustDir,
      CLAWKER_CP_DATA_DIR: cp.dataDir,
      CLAWKER_CP_ADMIN_ADDR: `127.0.0.1:${cp.ports.admin}`,
      CLAWKER_CP_HEALTH_ADDR: `127.0.0.1:${cp.ports.health}`,
      CLAWKER_TOKEN_ENDPOINT: cp.tokenEndpoint,
    };
  });
  after(async () => {
    await cp?.close();
    await world?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test("up, add: the rule admits the agent's next connection; list shows canonical order and scopes", async () => {
    const up = json<{ envoy_ip: string }>(await fw("up", "--format", "json"));
    assert.equal(up.envoy_ip, "127.0.0.1");
    const port = String(world.tlsPort);
    const ca = world.upstreamCa.certPem;
    assert.equal((await tlsThrough(world, "api.example.test", ca)).code, "ERR_SSL_TLSV1_UNRECOGNIZED_NAME");

    const added = await fw("add", "api.example.test", "--port", port);
    assert.equal(added.code, 0, added.stderr);
    assert.equal(added.stdout, `Added rule: api.example.test:https:${port}\n`);
    assert.equal((await httpsThrough(world, "api.example.test", "/via-cli", ca)).status, 200);
    const again = await fw("add", "API.example.test.", "--port", port);
    assert.match(again.stdout, /^Rule already exists: .* no change\n$/);

    for (const args of [
      ["b.example.test", "--project", "web", "--action", "deny"],
      [
        "a.example.test",
        "--agent",
        "dev",
        "--project",
        "web",
        "--path",
        "/v1/",
        "--action",
        "allow",
        "--methods",
        "GET",
      ],
      ["db.internal", "--proto", "tcp", "--port", "5432"],
    ]) {
      const r = await fw("add", ...args);
      assert.equal(r.code, 0, r.stderr);
    }
    const listed = json<{ rules: Array<Record<string, unknown>> }>(await fw("list", "--format", "json"));
    assert.deepEqual(
      listed.rules.map((r) => [r["scope"], r["dst"], r["proto"], r["port"], r["action"]]),
      [
        ["global", "api.example.test", "https", port, "allow"],
        ["global", "db.internal", "tcp", "5432", "allow"],
        ["project:web", "b.example.test", "https", "443", "deny"],
        ["agent:web.dev", "a.example.test", "https", "443", "allow"],
      ],
    );
    assert.deepEqual(listed.rules[3]!["path_rules"], [{ path: "/v1/", action: "allow", methods: ["GET"] }]);
    const table = await fw("list");
    assert.equal(table.code, 0);
    assert.match(table.stdout, /^SCOPE\s+DST\s+PROTO\s+PORT\s+ACTION\s+NOTES\n/);
    assert.match(
      table.stdout,
      /\nagent:web\.dev\s+a\.example\.test\s+https\s+443\s+allow\n\s+\/v1\/\s+allow\s+GET\n/,
    );
    const scoped = json<{ rules: Array<{ dst: string }> }>(
      await fw("list", "--project", "web", "--format", "json"),
    );
    assert.deepEqual(
      scoped.rules.map((r) => r.dst),
      ["b.example.test"],
    );
  });

  test("an invalid rule is refused naming its field (exit 2) and nothing is stored", async () => {
    const before = (await fw("list", "--format", "json")).stdout;
    const bad = await fw("add", "db2.internal", "--proto", "tcp");
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^clawker: error: invalid rule: rules\[0\]\.port: is required for tcp/);
    const range = await fw("add", "db2.internal", "--proto", "tcp", "--port", "1-65535");
    assert.equal(range.code, 2);
    assert.match(range.stderr, /rules\[0\]\.port: range 1-65535 spans 65535 ports; at most 1024/);
    const wildcard = await fw("add", ".example.test");
    assert.match(wildcard.stderr, /rules\[0\]\.dst: .*write a wildcard as/);
    assert.equal((await fw("list", "--format", "json")).stdout, before, "nothing written");
    const usage = await fw("add", "x.example", "--path", "/x");
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /--path needs --action/);
  });

  test("remove: the rule goes (any spelling finds it); nothing matched is exit 1 with what to check", async () => {
    const port = String(world.tlsPort);
    const gone = await fw("remove", "API.EXAMPLE.TEST", "--port", port);
    assert.equal(gone.code, 0, gone.stderr);
    assert.equal(gone.stdout, `Removed rule: API.EXAMPLE.TEST:https:${port}\n`);
    assert.equal(
      (await tlsThrough(world, "api.example.test", world.upstreamCa.certPem)).code,
      "ERR_SSL_TLSV1_UNRECOGNIZED_NAME",
    );
    const missing = await fw("remove", "api.example.test", "--port", port);
    assert.equal(missing.code, 1);
    assert.match(
      missing.stderr,
      /no rule api\.example\.test:https:\d+ to remove \(see clawker firewall list\)/,
    );
    const missingJson = await fw("remove", "nope.example", "--format", "json");
    assert.equal(missingJson.code, 1);
    assert.deepEqual(JSON.parse(missingJson.stdout), { status: "not_found", rule: "nope.example:https" });
    const path = await fw("remove", "a.example.test", "--agent", "dev", "--project", "web", "--path", "/v1/");
    assert.equal(path.code, 0, path.stderr);
    assert.match(path.stdout, /^Removed path rule: /);
  });

  test("prune --all removes one scope's rules (needs --yes); reload; status JSON", async () => {
    const unconfirmed = await fw("prune", "--all");
    assert.equal(unconfirmed.code, 2);
    assert.match(unconfirmed.stderr, /pass --yes to confirm/);
    const pruned = json<{ status: string; scope: string }>(
      await fw("prune", "--all", "--yes", "--format", "json"),
    );
    assert.deepEqual(pruned, { status: "removed", scope: "global" });
    const left = json<{ rules: Array<{ scope: string }> }>(await fw("list", "--format", "json"));
    assert.deepEqual(
      left.rules.map((r) => r.scope),
      ["project:web", "agent:web.dev"],
      "other scopes stay",
    );
    const again = await fw("prune", "--all", "--yes");
    assert.equal(again.stdout, "No global rules to remove\n");

    assert.equal((await fw("reload")).stdout, "Firewall rules reloaded\n");
    const { event_sources: sources, ...status } = json<Record<string, unknown>>(
      await fw("status", "--format", "json"),
    );
    // The decision stream's counters, one per source, each a count (issue 11's extension 1002).
    assert.deepEqual(
      (sources as Array<Record<string, unknown>>).map((e) => [
        e["source"],
        ...["published", "delivered", "dropped_rate_limited", "dropped_upstream"].map((k) => typeof e[k]),
      ]),
      ["dns", "bpf", "proxy", "other"].map((source) => [source, "number", "number", "number", "number"]),
    );
    assert.deepEqual(status, {
      running: true,
      envoy_health: true,
      coredns_health: true,
      rule_count: 2,
      envoy_ip: "127.0.0.1",
      coredns_ip: "127.0.0.1",
      network_id: "",
      cidr: "127.0.0.3/32",
      containers: [],
    });
  });

  test("bypass --non-interactive: visible in status with its time left, --stop ends it, a short one ends by itself", async () => {
    // Long enough to outlive every CLI run below however loaded the machine (each starts node and
    // tsx: a CI run at load 12 took over 20 s for three of them); --stop ends it.
    const started = await fw("bypass", "10m", "--agent", "dev", "--project", "web", "--non-interactive");
    assert.equal(started.code, 0, started.stderr);
    assert.equal(started.stdout, "Bypass active for web.dev (ends by itself in 10m0s)\n");
    assert.match(started.stderr, /Stop early: clawker firewall bypass --stop --agent dev --project web/);
    const during = json<{ containers: Array<Record<string, unknown>> }>(
      await fw("status", "--format", "json"),
    );
    assert.equal(during.containers.length, 1);
    assert.equal(during.containers[0]!["container_id"], AGENT_ID);
    assert.equal(during.containers[0]!["mode"], "bypass");
    assert.equal(during.containers[0]!["enforced"], false);
    const text = await fw("status");
    assert.match(text.stdout, /Container: cd34cd34cd34 bypass, \dm\d+s left \(recorded only/);
    const stopped = await fw("bypass", "--stop", "--agent", "dev", "--project", "web");
    assert.equal(stopped.code, 0, stopped.stderr);
    assert.equal(stopped.stdout, "Bypass stopped for web.dev\n");
    assert.deepEqual(json<{ containers: unknown[] }>(await fw("status", "--format", "json")).containers, []);

    // A short one ends by itself, with nobody stopping it.
    const short = await fw("bypass", "3s", "--agent", "dev", "--project", "web", "--non-interactive");
    assert.equal(short.code, 0, short.stderr);
    assert.equal(short.stdout, "Bypass active for web.dev (ends by itself in 3s)\n");
    await waitFor(
      async () =>
        json<{ containers: unknown[] }>(await fw("status", "--format", "json")).containers.length === 0,
      { timeoutMs: 40_000, intervalMs: 200, what: "the bypass to end by itself" },
    );
    const unknown = await fw("bypass", "5m", "--agent", "nobody", "--non-interactive");
    assert.equal(unknown.code, 1);
    assert.match(
      unknown.stderr,
      /no registered agent nobody \(see clawker controlplane agents; give --project/,
    );
    const tooLong = await fw("bypass", "2h", "--agent", "dev");
    assert.equal(tooLong.code, 2);
  });

  test("an interactive bypass waits with a countdown; Ctrl+C ends it and enforcement is back", async () => {
    const child = spawn(
      process.execPath,
      [
        "--import",
        import.meta.resolve("tsx"),
        "--conditions=source",
        join(REPO_ROOT, "packages/cli/src/main.ts"),
        "firewall",
        "bypass",
        "10m",
        "--agent",
        "dev",
        "--project",
        "web",
      ],
      { env, stdio: ["ignore", "pipe", "pipe"] },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
    await waitFor(() => stderr.includes("Bypass active for web.dev for 10m0s (Ctrl+C ends it)"), {
      timeoutMs: 20_000,
      what: "the countdown to start",
    });
    const during = json<{ containers: Array<{ mode: string }> }>(await fw("status", "--format", "json"));
    assert.deepEqual(
      during.containers.map((c) => c.mode),
      ["bypass"],
    );
    child.kill("SIGINT");
    assert.equal(await exited, 0, stderr);
    assert.equal(stdout, "Bypass stopped for web.dev; firewall enforced again\n");
    assert.deepEqual(json<{ containers: unknown[] }>(await fw("status", "--format", "json")).containers, []);
  });

  test("controlplane status includes the firewall; down takes it down", async () => {
    const cpStatus = await clawker(["controlplane", "status", "--format", "json"], { env });
    assert.equal(cpStatus.code, 0, cpStatus.stderr);
    const parsed = JSON.parse(cpStatus.stdout) as {
      mode: string;
      container: unknown;
      firewall: Record<string, unknown>;
    };
    // Beside the container mode's fields (no `up` here: the daemon is a harness child, no pid file).
    assert.equal(parsed.mode, "none");
    assert.ok("container" in parsed);
    assert.equal(parsed.firewall["running"], true);
    assert.equal(parsed.firewall["rule_count"], 2);
    const text = await clawker(["controlplane", "status"], { env });
    assert.match(text.stdout, /\n {2}Firewall: {2}running\n {2}Proxy: {5}healthy \(127\.0\.0\.1\)\n/);

    assert.equal((await fw("down")).stdout, "Firewall down\n");
    assert.equal(json<{ running: boolean }>(await fw("status", "--format", "json")).running, false);
    const refused = await tlsThrough(world, "b.example.test", world.upstreamCa.certPem);
    assert.equal(refused.code, "ECONNREFUSED");
    const notRunning = await fw("enable", "--agent", "dev", "--project", "web");
    assert.equal(notRunning.code, 1);
    assert.match(notRunning.stderr, /not running .*clawker firewall up/);
  });
});
