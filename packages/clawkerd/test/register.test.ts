// RegisterRequired against the real embedded auth server (token exchange with the single-use
// assertion) and a recording test double of the control plane's AgentService: the token and
// the agent leaf reach Register, the outcome is remembered and replayed, and the assertion is
// never sent twice (counted in the auth server's own log), also across a clawkerd restart.
import assert from "node:assert/strict";
import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { createServer } from "node:https";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { issueLeaf } from "@clawker/adminclient";
import { mintTestTrust, type TestTrust } from "../../../test/harness/trust.js";
import { waitFor } from "../../../test/harness/wait-for.js";
import { agentAssertion, makeTestAgent } from "./fixtures/bootstrap.js";
import { startAuthServer, type AuthServerProcess } from "./fixtures/authserver.js";
import { spawnClawkerd } from "./fixtures/clawkerd-process.js";
import { startControlPlaneDouble, type ControlPlaneDouble } from "./fixtures/control-plane-double.js";
import { controlPlaneIdentity, SessionClient } from "./fixtures/session-client.js";

let trust: TestTrust;
let auth: AuthServerProcess;
let cp: ControlPlaneDouble;

before(async () => {
  trust = await mintTestTrust();
  auth = await startAuthServer(trust);
  cp = await startControlPlaneDouble(trust);
});

after(async () => {
  await cp?.close();
  await auth?.close();
  await trust?.close();
});

async function registerOnce(address: string, id: string): Promise<{ ok: boolean; error: string }> {
  const c = new SessionClient(address, controlPlaneIdentity(trust));
  try {
    await c.hello();
    c.send(id, { $case: "registerRequired", value: {} });
    const rs = await c.until(id, (r) => r.length > 0);
    const p = rs[0]!.payload;
    assert.equal(p?.$case, "registerDone");
    return p.value;
  } finally {
    c.close();
  }
}

test("RegisterRequired: token exchange, Register with the bearer token and the agent leaf, outcome replayed", async (t) => {
  const agent = await makeTestAgent({
    trust,
    config: { controlPlaneAddr: cp.address, tokenEndpoint: auth.tokenEndpoint, serverName: "localhost" },
  });
  t.after(() => agent.close());
  const proc = spawnClawkerd(agent);
  t.after(() => proc.kill());
  await proc.waitListening();

  const before = auth.agentTokenRequests();
  assert.deepEqual(await registerOnce(proc.address, "reg-1"), { ok: true, error: "" });
  assert.equal(cp.calls.length, 1);
  const call = cp.calls[0]!;
  assert.deepEqual(call.request, { agentName: "dev", project: "proj" });
  assert.equal(call.peerCn, "clawker-clawkerd");
  assert.ok(call.peerUris?.includes(`urn:clawker:container:${agent.containerId}`));
  assert.match(call.authorization ?? "", /^Bearer \S+$/);
  const token = call.authorization!.slice("Bearer ".length);
  const info = await auth.introspect(token);
  assert.equal(info["active"], true);
  assert.equal(info["client_id"], "clawker-agent");
  assert.ok(String(info["scope"]).split(" ").includes("agent:self:register"));
  // The one token is kept for `clawkerd request-egress` (0600 in the 0700 state dir): it also
  // carries agent:self:request, since the single-use assertion cannot buy another.
  assert.ok(String(info["scope"]).split(" ").includes("agent:self:request"));
  const kept = JSON.parse(await readFile(join(agent.stateDir, "agent-token.json"), "utf8")) as {
    accessToken: string;
    expiresAtUnixMs: number;
  };
  assert.equal(kept.accessToken, token);
  assert.ok(kept.expiresAtUnixMs > Date.now());
  assert.equal((await stat(join(agent.stateDir, "agent-token.json"))).mode & 0o777, 0o600);
  await waitFor(() => auth.agentTokenRequests() === before + 1, {
    what: "the token request in the auth log",
  });

  // Where the start and the registration went, in clawkerd's own log: each step's ms, in order.
  const lines = proc.stdout
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  const listening = lines.find((l) => l["event"] === "listening");
  const startedAt = listening?.["processStartUnixMs"];
  assert.ok(typeof startedAt === "number" && Math.abs(Date.now() - startedAt) < 120_000, "process start");
  const start = listening?.["timeline"] as Record<string, number>;
  const startSteps = ["modulesLoaded", "bootstrapLoaded", "trustInstalled", "jobsLoaded", "listening"];
  assert.deepEqual(Object.keys(start), startSteps);
  for (let i = 1; i < startSteps.length; i++) assert.ok(start[startSteps[i]!]! >= start[startSteps[i - 1]!]!);
  const registered = lines.find((l) => l["event"] === "registered");
  assert.equal(typeof registered?.["t0UnixMs"], "number");
  const reg = registered?.["timeline"] as Record<string, number>;
  assert.ok(reg["stateWritten"]! <= reg["tokenReceived"]!);
  assert.ok(reg["tokenReceived"]! <= reg["registerAnswered"]! && reg["tokenReceived"]! <= reg["tokenKept"]!);

  // Again on a new session: the same outcome, nothing sent anywhere.
  assert.deepEqual(await registerOnce(proc.address, "reg-2"), { ok: true, error: "" });
  // And after a restart of clawkerd on the same state dir.
  await proc.kill();
  const again = spawnClawkerd(agent);
  t.after(() => again.kill());
  await again.waitListening();
  assert.deepEqual(await registerOnce(again.address, "reg-3"), { ok: true, error: "" });
  assert.equal(cp.calls.length, 1, "Register was called once");
  assert.equal(auth.agentTokenRequests(), before + 1, "the assertion was POSTed once");

  // No secret reached clawkerd's logs or its state file.
  const state = await readFile(join(agent.stateDir, "clawkerd-state.json"), "utf8");
  for (const secret of [token, agent.assertion]) {
    for (const text of [proc.stdout, proc.stderr, again.stdout, state]) assert.ok(!text.includes(secret));
  }
});

test("a refused assertion gives RegisterDone{ok:false}; the refusal is replayed, never re-sent", async (t) => {
  // Signed by a key the auth server does not know.
  const stranger = await mintTestTrust();
  t.after(() => stranger.close());
  const agent = await makeTestAgent({
    trust,
    config: { controlPlaneAddr: cp.address, tokenEndpoint: auth.tokenEndpoint, serverName: "localhost" },
    assertion: await agentAssertion(stranger, auth.tokenEndpoint),
  });
  t.after(() => agent.close());
  const proc = spawnClawkerd(agent);
  t.after(() => proc.kill());
  await proc.waitListening();
  const calls = cp.calls.length;
  const before = auth.agentTokenRequests();
  const first = await registerOnce(proc.address, "r1");
  assert.equal(first.ok, false);
  assert.match(first.error, /HTTP 401 \(invalid_client\)/);
  await waitFor(() => auth.agentTokenRequests() === before + 1, { what: "the denied token request" });
  assert.deepEqual(await registerOnce(proc.address, "r2"), first);
  assert.equal(auth.agentTokenRequests(), before + 1);
  assert.equal(cp.calls.length, calls, "Register was not called");
});

test("a registration begun by an earlier run with no recorded outcome is not retried", async (t) => {
  const agent = await makeTestAgent({
    trust,
    config: { controlPlaneAddr: cp.address, tokenEndpoint: auth.tokenEndpoint, serverName: "localhost" },
  });
  t.after(() => agent.close());
  await mkdir(agent.stateDir, { recursive: true });
  await writeFile(
    join(agent.stateDir, "clawkerd-state.json"),
    JSON.stringify({
      version: 1,
      initialized: true,
      registration: { phase: "started", at: new Date().toISOString() },
    }),
  );
  const proc = spawnClawkerd(agent);
  t.after(() => proc.kill());
  await proc.waitListening();
  const before = auth.agentTokenRequests();
  const calls = cp.calls.length;
  const outcome = await registerOnce(proc.address, "r1");
  assert.equal(outcome.ok, false);
  assert.match(outcome.error, /already used/);
  assert.equal(auth.agentTokenRequests(), before);
  assert.equal(cp.calls.length, calls);
});

test("Register refused by the control plane: ok false with the status, remembered", async (t) => {
  const agent = await makeTestAgent({
    trust,
    config: { controlPlaneAddr: cp.address, tokenEndpoint: auth.tokenEndpoint, serverName: "localhost" },
  });
  t.after(() => agent.close());
  const proc = spawnClawkerd(agent);
  t.after(() => proc.kill());
  await proc.waitListening();
  cp.failWith = 7;
  t.after(() => (cp.failWith = undefined));
  const first = await registerOnce(proc.address, "r1");
  assert.equal(first.ok, false);
  assert.match(first.error, /Register refused: 7 refused by the test double/);
  cp.failWith = undefined;
  assert.deepEqual(await registerOnce(proc.address, "r2"), first);
});

test("a token endpoint with a leaf from the same CA that is not the control plane's never sees the assertion", async (t) => {
  const impostor = await issueLeaf(trust.set.ca, {
    commonName: "clawker-cli",
    usage: "server",
    dnsNames: ["localhost"],
  });
  let requests = 0;
  const server = createServer(
    { cert: impostor.certPem, key: impostor.keyPem, minVersion: "TLSv1.3" },
    (_req, res) => {
      requests++;
      res.writeHead(500).end();
    },
  );
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const port = (server.address() as { port: number }).port;
  const agent = await makeTestAgent({
    trust,
    config: {
      controlPlaneAddr: cp.address,
      tokenEndpoint: `https://127.0.0.1:${port}/oauth2/token`,
      serverName: "localhost",
    },
  });
  t.after(() => agent.close());
  const proc = spawnClawkerd(agent);
  t.after(() => proc.kill());
  await proc.waitListening();
  const outcome = await registerOnce(proc.address, "r1");
  assert.equal(outcome.ok, false);
  assert.match(outcome.error, /CN is not clawker-controlplane/);
  assert.equal(requests, 0, "no request reached the impostor");
});
