// The Dialer against the REAL clawkerd process (packages/clawkerd, through tsx) over real mTLS on
// 127.0.0.1, with the real registration path: clawkerd exchanges its single-use assertion at the
// embedded auth server of a real clawker-cp (the harness), then calls AgentService.Register on an
// agent listener built here from the real parts (recovery, AuthInterceptor pinned to
// clawker-agent with HTTPS introspection, identity gate, sqlite registry).
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { after, before, test } from "node:test";
import { Server, ServerCredentials } from "@grpc/grpc-js";
import { Overseer, type AgentEvent } from "@clawker/overseer";
import { AGENT_CLIENT, LABELS } from "@clawker/proto";
import pino from "pino";
import { ContainerAddressIndex } from "../src/agents/address-index.js";
import { agentService } from "../src/agents/agent-service.js";
import { localDialer } from "./fixtures/local-dialer.js";
import { IdentityGate, thumbprintOf } from "../src/agents/identity-gate.js";
import { Registry } from "../src/agents/registry.js";
import {
  AuthInterceptor,
  CachingIntrospector,
  HttpIntrospector,
  recoveryInterceptor,
} from "../src/auth/index.js";
import { startControlPlane, type ControlPlane } from "../../../test/harness/controlplane.js";
import { mintTestTrust, type TestTrust } from "../../../test/harness/trust.js";
import { waitFor } from "../../../test/harness/wait-for.js";
import { makeTestAgent, type TestAgent } from "../../clawkerd/test/fixtures/bootstrap.js";
import { spawnClawkerd, type ClawkerdProcess } from "../../clawkerd/test/fixtures/clawkerd-process.js";

tls.DEFAULT_MIN_VERSION = "TLSv1.3";
const log = pino({ level: process.env["LOG_LEVEL"] ?? "silent" });

let trust: TestTrust;
let cp: ControlPlane;
let tmp: string;
let registry: Registry;
let listener: Server;
let introspector: HttpIntrospector;
const overseer = new Overseer();
const events: AgentEvent[] = [];
const index = new ContainerAddressIndex({ inspect: () => Promise.resolve(undefined), log });
const cleanups: Array<() => unknown> = [];

before(async () => {
  trust = await mintTestTrust();
  cp = await startControlPlane({ trustDir: trust.trustDir });
  tmp = mkdtempSync(join(tmpdir(), "agents-clawkerd-"));
  registry = new Registry(join(tmp, "registry.db"));
  overseer.agents.subscribe((e) => void events.push(e));
  introspector = new HttpIntrospector({
    adminUrl: cp.authAdminUrl,
    ca: Buffer.from(trust.set.ca.certPem),
    timeoutMs: 2000,
  });
  const cached = new CachingIntrospector(introspector, { maxTtlMs: 60_000, maxEntries: 100 });
  listener = new Server({
    interceptors: [
      recoveryInterceptor(log),
      new AuthInterceptor({ introspector: cached, requiredClientId: AGENT_CLIENT.clientId, log }).interceptor,
    ],
  });
  const binding = agentService({
    gate: new IdentityGate({ index, registry, agents: overseer.agents, log }),
    log,
  });
  listener.addService(binding.definition, binding.implementation);
  const s = trust.set.controlPlaneServer;
  const port = await new Promise<number>((resolve, reject) =>
    listener.bindAsync(
      "127.0.0.1:0",
      ServerCredentials.createSsl(
        Buffer.from(trust.set.ca.certPem),
        [{ private_key: Buffer.from(s.keyPem), cert_chain: Buffer.from(s.certPem) }],
        true,
      ),
      (err, p) => (err ? reject(err) : resolve(p)),
    ),
  );
  cleanups.push(() => new Promise<void>((r) => listener.tryShutdown(() => r())));
  agentPort = port;
});

let agentPort = 0;

after(async () => {
  for (const c of cleanups.reverse()) await c();
  await introspector?.close();
  registry?.close();
  if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
  await cp?.close();
  await trust?.close();
  await overseer.close();
});

test("real clawkerd: registers through token exchange + Register, becomes ready, runs a pipeline; replay is refused", async () => {
  const agent: TestAgent = await makeTestAgent({
    trust,
    config: {
      agentName: "dev",
      project: "proj",
      controlPlaneAddr: `127.0.0.1:${agentPort}`,
      tokenEndpoint: cp.tokenEndpoint,
      serverName: "localhost",
    },
  });
  cleanups.push(() => agent.close());
  const proc: ClawkerdProcess = spawnClawkerd(agent, { env: { CLAWKERD_LOG_LEVEL: "info" } });
  cleanups.push(async () => {
    // SIGTERM: clawkerd forwards it to the main command and exits with it (SIGKILL would orphan it).
    proc.child.kill("SIGTERM");
    await Promise.race([proc.exited, new Promise((r) => setTimeout(r, 10_000))]);
    await proc.kill();
  });
  await proc.waitListening();

  const dialer = localDialer({
    index,
    registry,
    agents: overseer.agents,
    commands: overseer.commands,
    trust,
    log,
    address: () => proc.address,
    plans: { init: [{ name: "init-marker", stages: [{ argv: ["true"] }] }], boot: [] },
  });
  cleanups.push(() => dialer.close());
  dialer.start();
  index.put({
    id: agent.containerId,
    labels: {
      [LABELS.managed]: "true",
      [LABELS.purpose]: "agent",
      [LABELS.agent]: "dev",
      [LABELS.project]: "proj",
    },
    addresses: ["127.0.0.1"],
  });

  await waitFor(() => dialer.status(agent.containerId)?.state === "ready", {
    timeoutMs: 30_000,
    what: `ready (got ${dialer.status(agent.containerId)?.state})`,
  });
  const thumbprint = thumbprintOf(new X509Certificate(agent.leaf.certPem).raw);
  assert.equal(registry.get(agent.containerId)?.certThumbprint, thumbprint);
  assert.deepEqual(
    events.filter((e) => e.containerId === agent.containerId).map((e) => e.type),
    ["agent.session_opened", "agent.register_required", "agent.registered", "agent.ready"],
  );

  let output = "";
  const kinds: string[] = [];
  for await (const r of dialer.exec(agent.containerId, {
    stages: [
      { argv: ["printf", "b\\na\\n"], uid: 0, gid: 0, cwd: "/", env: {} },
      { argv: ["sort"], uid: 0, gid: 0, cwd: "/", env: {} },
    ],
    timeoutSeconds: 10,
    initialStdin: Buffer.alloc(0),
    printOutput: false,
    exitOnNonZero: false,
  })) {
    kinds.push(r.payload?.$case ?? "none");
    if (r.payload?.$case === "output") output += r.payload.value.data.toString();
  }
  assert.equal(output, "a\nb\n");
  assert.equal(kinds.filter((k) => k === "done" || k === "error").length, 1);
  assert.equal(kinds.at(-1), "done");

  // The CP forgets the row (as if it were lost) and re-dials: clawkerd's consumed assertion cannot
  // register again, so the agent ends up refused rather than re-registered with a replayed token.
  registry.remove(agent.containerId);
  dialer.session(agent.containerId)?.close("test re-dial");
  await waitFor(
    () => {
      const s = dialer.status(agent.containerId)?.state;
      return s === "register_failed" || s === "untrusted" ? s : undefined;
    },
    { timeoutMs: 30_000, what: "second registration refused" },
  );
  assert.equal(registry.get(agent.containerId), undefined);
});
