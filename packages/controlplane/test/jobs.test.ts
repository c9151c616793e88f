// clawker.jobs.v1.JobService in the control plane (issue 13) against the real clawkerd process:
// calls are routed by agent name over the dialer's mTLS channel to that agent's clawkerd; a job
// outlives the client that started it and a control plane restart (a new Dialer) finds it again.
// The binding is served on a plain loopback server: the admin listener's auth in front of it is
// the interceptor's own tests' business (its scope is `admin` in METHOD_SCOPES).
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { after, before, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { Overseer } from "@clawker/overseer";
import { errorInfoOf, jobs, LABELS } from "@clawker/proto";
import pino from "pino";
import { ContainerAddressIndex } from "../src/agents/address-index.js";
import { Dialer } from "../src/agents/dialer.js";
import { thumbprintOf } from "../src/agents/identity-gate.js";
import { Registry } from "../src/agents/registry.js";
import { jobService } from "../src/jobs/job-service.js";
import { mintTestTrust, type TestTrust } from "../../../test/harness/trust.js";
import { waitFor } from "../../../test/harness/wait-for.js";
import { makeTestAgent, type TestAgent } from "../../clawkerd/test/fixtures/bootstrap.js";
import { spawnClawkerd, type ClawkerdProcess } from "../../clawkerd/test/fixtures/clawkerd-process.js";

tls.DEFAULT_MIN_VERSION = "TLSv1.3";
const log = pino({ level: process.env["LOG_LEVEL"] ?? "silent" });

let trust: TestTrust;
let tmp: string;
let registry: Registry;
let agent: TestAgent;
let proc: ClawkerdProcess;
let dialer: Dialer;
let server: grpc.Server;
let address = "";
const clients: jobs.JobServiceClient[] = [];
const dialers: Dialer[] = [];
const overseer = new Overseer();
const index = new ContainerAddressIndex({ inspect: () => Promise.resolve(undefined), log });

function newDialer(): Dialer {
  const d = new Dialer({
    index,
    registry,
    agents: overseer.agents,
    tls: {
      ca: Buffer.from(trust.set.ca.certPem),
      cert: Buffer.from(trust.set.controlPlaneClient.certPem),
      key: Buffer.from(trust.set.controlPlaneClient.keyPem),
    },
    log,
    target: () => proc.address,
    defaultCmd: () => "sleep 600",
    plans: { init: [], boot: [] },
  });
  dialers.push(d);
  return d;
}

async function serve(d: Dialer): Promise<void> {
  server?.forceShutdown();
  server = new grpc.Server();
  const binding = jobService({ dialer: d, registry, log });
  server.addService(binding.definition, binding.implementation);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) =>
      e ? reject(e) : resolve(p),
    ),
  );
  address = `127.0.0.1:${port}`;
}

function client(): jobs.JobServiceClient {
  const c = new jobs.JobServiceClient(address, grpc.credentials.createInsecure());
  clients.push(c);
  return c;
}

function unary<Res>(
  c: jobs.JobServiceClient,
  method: "startJob" | "stopJob" | "getJobStatus" | "listJobs",
  req: object,
): Promise<Res> {
  return new Promise((resolve, reject) =>
    (c[method].bind(c) as unknown as (r: object, cb: (e: grpc.ServiceError | null, v: Res) => void) => void)(
      req,
      (e, v) => (e === null ? resolve(v) : reject(e)),
    ),
  );
}

function watchAll(c: jobs.JobServiceClient, name: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    const s = c.watchJobOutput({ name });
    s.on("data", (m: jobs.WatchJobOutputResponse) => parts.push(m.data));
    s.on("error", reject);
    s.on("end", () => resolve(Buffer.concat(parts)));
  });
}

before(async () => {
  trust = await mintTestTrust();
  tmp = mkdtempSync(join(tmpdir(), "cp-jobs-"));
  registry = new Registry(join(tmp, "registry.db"));
  agent = await makeTestAgent({ trust });
  proc = spawnClawkerd(agent);
  await proc.waitListening();
  const certThumbprint = thumbprintOf(new X509Certificate(agent.leaf.certPem).raw);
  registry.register({ containerId: agent.containerId, agentName: "dev", project: "proj", certThumbprint }, 1);
  dialer = newDialer();
  dialer.start();
  index.put({
    id: agent.containerId,
    labels: { [LABELS.managed]: "true", [LABELS.agent]: "dev", [LABELS.project]: "proj" },
    addresses: ["127.0.0.1"],
  });
  await waitFor(() => dialer.status(agent.containerId)?.state === "ready", {
    timeoutMs: 30_000,
    what: "agent ready",
  });
  await serve(dialer);
});

after(async () => {
  for (const c of clients) c.close();
  server?.forceShutdown();
  for (const d of dialers) await d.close();
  await proc?.kill();
  registry?.close();
  if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
  await agent?.close();
  await trust?.close();
});

void test("a job survives its starter disconnecting and a control plane restart; a later watcher gets all of it", async () => {
  const starter = client();
  const started = await unary<jobs.StartJobResponse>(starter, "startJob", {
    agentName: "dev",
    project: "proj",
    argv: ["/bin/sh", "-c", "for i in $(seq 1 50); do echo line $i; sleep 0.02; done"],
    cwd: "",
    env: {},
  });
  const name = started.job!.name;
  assert.match(name, /^agents\/proj\.dev\/jobs\//);
  starter.close();
  // The control plane "restarts": its dialer goes, a new one dials the agent again.
  await dialer.close();
  dialer = newDialer();
  dialer.start();
  await waitFor(() => dialer.status(agent.containerId)?.state === "ready", {
    timeoutMs: 30_000,
    what: "re-dial",
  });
  await serve(dialer);
  const c = client();
  const out = (await watchAll(c, name)).toString();
  assert.deepEqual(
    out.trim().split("\n"),
    Array.from({ length: 50 }, (_, i) => `line ${i + 1}`),
  );
  const st = await unary<jobs.GetJobStatusResponse>(c, "getJobStatus", { name });
  assert.equal(st.job?.state, jobs.JobState.JOB_STATE_COMPLETED);
  const all = await unary<jobs.ListJobsResponse>(c, "listJobs", { agentName: "", project: "", state: 0 });
  assert.ok(
    all.jobs.some((j) => j.name === name),
    "ListJobs over every agent finds it",
  );
});

void test("bad names: an unknown agent is NOT_FOUND (agent_not_found), a malformed name INVALID_ARGUMENT, an unknown job NOT_FOUND from clawkerd", async () => {
  const c = client();
  const cases: Array<[string, grpc.status, string]> = [
    [
      "agents/proj.nobody/jobs/00000000-0000-4000-8000-000000000000",
      grpc.status.NOT_FOUND,
      "agent_not_found",
    ],
    ["jobs/123", grpc.status.INVALID_ARGUMENT, "invalid_argument"],
    ["agents/proj.dev/jobs/00000000-0000-4000-8000-000000000000", grpc.status.NOT_FOUND, "not_found"],
  ];
  for (const [name, code, reason] of cases) {
    const err = await unary(c, "getJobStatus", { name }).then(
      () => assert.fail(`${name} answered`),
      (e: grpc.ServiceError) => e,
    );
    assert.equal(err.code, code, name);
    assert.equal(errorInfoOf(err.metadata)?.reason, reason, name);
  }
});
