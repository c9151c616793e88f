// /metrics on the health listener, scraped from the real daemon after real calls over mTLS: the
// counters move with the calls, and a second local user, who reaches the loopback port and can
// enter the data dir, gets 401 and cannot read the token file.
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { Metadata, status } from "@grpc/grpc-js";
import { dial, openAdminClient, TokenSource } from "@clawker/adminclient";
import { AGENT_CLIENT } from "@clawker/proto";
import { startControlPlane, type ControlPlane } from "../../../test/harness/controlplane.js";
import { requires } from "../../../test/harness/preconditions.js";
import { runNodeAsSecondUser, secondUser } from "../../../test/harness/second-user.js";
import { METRICS_TOKEN_FILE } from "../src/metrics/metrics-token.js";

const LIST_AGENTS = "/clawker.admin.v1.AdminService/ListAgents";

/** The value of the one sample whose name and labels are exactly these; undefined when absent. */
function sample(page: string, name: string, labels: Record<string, string> = {}): number | undefined {
  const want = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .join(",");
  for (const line of page.split("\n")) {
    if (line.startsWith("#")) continue;
    const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const got = (m[2] ?? "")
      .split(",")
      .filter((p) => p !== "")
      .sort()
      .join(",");
    if (
      got ===
      want
        .split(",")
        .filter((p) => p !== "")
        .sort()
        .join(",")
    )
      return Number(m[3]);
  }
  return undefined;
}

async function scrape(cp: ControlPlane, token: string): Promise<string> {
  const res = await fetch(cp.healthUrl.replace("/healthz", "/metrics"), {
    headers: { authorization: `Bearer ${token}` },
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  return res.text();
}

/** ListAgents with an agent-scope token: refused on the admin listener. */
async function refusedListAgents(cp: ControlPlane): Promise<number> {
  const tokens = new TokenSource({
    ca: cp.trust!.ca.certPem,
    signingKey: cp.trust!.signingKey.privateJwk,
    tokenEndpoint: cp.tokenEndpoint,
    clientId: AGENT_CLIENT.clientId,
    scope: AGENT_CLIENT.scope,
  });
  const raw = dial({
    target: `127.0.0.1:${cp.ports.admin}`,
    tls: { ca: cp.trust!.ca.certPem, cert: cp.trust!.cli.certPem, key: cp.trust!.cli.keyPem },
  });
  const md = new Metadata();
  md.set("authorization", `Bearer ${await tokens.token()}`);
  return new Promise<number>((resolve) =>
    raw.listAgents({}, md, (err) => {
      raw.close();
      resolve(err === null ? status.OK : err.code);
    }),
  );
}

describe("/metrics", () => {
  test("counts RPCs by method and code, introspection cache hits and misses, agents, helpers, rules", async (t) => {
    const cp = await startControlPlane();
    t.after(() => cp.close());
    const tokenFile = join(cp.dataDir, METRICS_TOKEN_FILE);
    assert.equal(statSync(tokenFile).mode & 0o777, 0o600);
    const token = readFileSync(tokenFile, "utf8").trim();

    const client = openAdminClient({
      trust: cp.trust!,
      target: `127.0.0.1:${cp.ports.admin}`,
      tokenEndpoint: cp.tokenEndpoint,
    });
    t.after(() => client.close());
    for (let i = 0; i < 3; i++) assert.deepEqual(await client.listAgents(), []);
    assert.equal(await refusedListAgents(cp), status.PERMISSION_DENIED);

    const first = await scrape(cp, token);
    const ok = sample(first, "clawker_grpc_server_handled_total", {
      listener: "admin",
      method: LIST_AGENTS,
      code: "OK",
    });
    assert.ok(ok !== undefined && ok >= 3, `ListAgents OK counted (${ok})`);
    assert.equal(
      sample(first, "clawker_grpc_server_handled_total", {
        listener: "admin",
        method: LIST_AGENTS,
        code: "PERMISSION_DENIED",
      }),
      1,
    );
    const hits = sample(first, "clawker_introspection_cache_total", { result: "hit" })!;
    const misses = sample(first, "clawker_introspection_cache_total", { result: "miss" })!;
    assert.ok(misses >= 2, `a miss per token (${misses})`);
    assert.ok(hits >= 1, `the CLI's token was reused from the cache (${hits})`);
    assert.equal(sample(first, "clawker_agents"), 0);
    assert.equal(sample(first, "clawker_helper_starts_total", { helper: "authserver" }), 1);
    assert.equal(typeof sample(first, "clawker_firewall_rules"), "number");
    assert.equal(sample(first, "clawker_firewall_bypasses_active"), 0);
    assert.match(first, /# TYPE clawker_firewall_decisions_total counter/);
    assert.match(first, /# TYPE clawker_events_dropped_total counter/);

    for (let i = 0; i < 5; i++) await client.listAgents();
    const second = await scrape(cp, token);
    assert.equal(
      sample(second, "clawker_grpc_server_handled_total", {
        listener: "admin",
        method: LIST_AGENTS,
        code: "OK",
      }),
      ok + 5,
      "the counter moved by exactly the calls made",
    );
    assert.ok(sample(second, "clawker_introspection_cache_total", { result: "hit" })! >= hits + 5);
  });

  test("without the token: 401 and counted; a second local user can neither scrape nor read the token", async (t) => {
    // Every directory above the token is enterable by nobody, so what stops them is the file's mode.
    const top = mkdtempSync(join(tmpdir(), "clawker-metrics-"));
    t.after(() => rmSync(top, { recursive: true, force: true }));
    chmodSync(top, 0o711);
    const dataDir = join(top, "data");
    mkdirSync(dataDir, { mode: 0o711 });
    const cp = await startControlPlane({ dataDir });
    t.after(() => cp.close());
    const url = cp.healthUrl.replace("/healthz", "/metrics");

    for (const authorization of [
      undefined,
      "Bearer wrong-token-of-some-length-000000000",
      "Basic Zm9vOmJhcg==",
    ]) {
      const res = await fetch(url, authorization === undefined ? {} : { headers: { authorization } });
      assert.equal(res.status, 401, String(authorization));
      assert.equal(res.headers.get("www-authenticate"), 'Bearer realm="clawker-metrics"');
      assert.doesNotMatch(await res.text(), /clawker_/);
    }
    const token = readFileSync(join(dataDir, METRICS_TOKEN_FILE), "utf8").trim();
    const page = await scrape(cp, token);
    assert.equal(
      sample(page, "clawker_refusals_total", { listener: "healthz", reason: "metrics_unauthorized" }),
      3,
    );

    if (!requires(t, ...secondUser)) return;
    const out = await runNodeAsSecondUser(
      `import { readFileSync } from "node:fs";
       const [url, file] = process.argv.slice(1);
       const res = await fetch(url);
       let read = "read";
       try { readFileSync(file); } catch (err) { read = err.code; }
       process.stdout.write(JSON.stringify({ status: res.status, read }));`,
      [url, join(dataDir, METRICS_TOKEN_FILE)],
    );
    assert.deepEqual(JSON.parse(out), { status: 401, read: "EACCES" });
  });
});
