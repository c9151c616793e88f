// AdminService.ExecAgent end to end, everything real: the real clawkerd process (packages/clawkerd
// through tsx) with a registry row for its certificate, the real Dialer holding its Session over
// mTLS, an admin listener built from the daemon's parts (GrpcListener, recovery, AuthInterceptor
// with HTTPS introspection at the embedded auth server of a real clawker-cp from the harness, the
// scope map), the real AdminClient with a real token, and the real `clawker` CLI as a process.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import {
  AdminClient,
  AdminError,
  cliTls,
  dial,
  openAdminClient,
  type AdminErrorReason,
} from "@clawker/adminclient";
import { Overseer } from "@clawker/overseer";
import { LABELS, clawkerd, type admin } from "@clawker/proto";
import pino from "pino";
import { ContainerAddressIndex } from "../src/agents/address-index.js";
import type { Dialer } from "../src/agents/dialer.js";
import { localDialer } from "./fixtures/local-dialer.js";
import { thumbprintOf } from "../src/agents/identity-gate.js";
import { Registry } from "../src/agents/registry.js";
import {
  AuthInterceptor,
  CachingIntrospector,
  HttpIntrospector,
  recoveryInterceptor,
  withRecovery,
} from "../src/auth/index.js";
import { adminService } from "../src/server/admin-service.js";
import { execAgentHandler, type ExecAgentDeps } from "../src/server/exec-agent.js";
import { GrpcListener, type ServiceBinding } from "../src/server/grpc-listener.js";
import { SosBoard } from "../src/server/sos-board.js";
import { startControlPlane, type ControlPlane } from "../../../test/harness/controlplane.js";
import { isAlive } from "../../../test/harness/leftovers.js";
import { mintTestTrust, type TestTrust } from "../../../test/harness/trust.js";
import { waitFor } from "../../../test/harness/wait-for.js";
import { makeTestAgent, type TestAgent } from "../../clawkerd/test/fixtures/bootstrap.js";
import { spawnClawkerd, type ClawkerdProcess } from "../../clawkerd/test/fixtures/clawkerd-process.js";
import { processesWith, seqOutput, waitBlockedOnOutput } from "../../clawkerd/test/fixtures/processes.js";

tls.DEFAULT_MIN_VERSION = "TLSv1.3";
const log = pino({ level: process.env["LOG_LEVEL"] ?? "silent" });
const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));
const cliMain = join(repoRoot, "packages/cli/src/main.ts");

let trust: TestTrust;
let cp: ControlPlane;
let tmp: string;
let registry: Registry;
let introspector: HttpIntrospector;
let agent: TestAgent;
let proc: ClawkerdProcess;
let dialer: Dialer;
let listener: GrpcListener;
let bare: GrpcListener;
let client: AdminClient;
const overseer = new Overseer();
const index = new ContainerAddressIndex({ inspect: () => Promise.resolve(undefined), log });
const cleanups: Array<() => unknown> = [];
/** Responses the handler has pulled from the dialer, per command (to observe flow control). */
const pulled = { count: 0, sawTerminal: false };
/** A registered agent whose container has no Session (never dialed). */
const ghostId = "9".repeat(64);

const recovered = (b: ServiceBinding): ServiceBinding => ({
  definition: b.definition,
  implementation: withRecovery(b.definition, b.implementation, log),
});

before(async () => {
  trust = await mintTestTrust();
  cp = await startControlPlane({ trustDir: trust.trustDir });
  tmp = mkdtempSync(join(tmpdir(), "exec-agent-"));
  registry = new Registry(join(tmp, "registry.db"));

  agent = await makeTestAgent({ trust });
  proc = spawnClawkerd(agent);
  cleanups.push(async () => {
    // SIGTERM: clawkerd kills its commands' process groups and exits (SIGKILL would orphan them).
    proc.child.kill("SIGTERM");
    await Promise.race([proc.exited, new Promise((r) => setTimeout(r, 10_000))]);
    await proc.kill();
  });
  await proc.waitListening();
  // Registered already (as after a Register), so the Session goes straight to the plans and ready.
  const certThumbprint = thumbprintOf(new X509Certificate(agent.leaf.certPem).raw);
  registry.register({ containerId: agent.containerId, agentName: "dev", project: "proj", certThumbprint }, 1);
  registry.register(
    { containerId: ghostId, agentName: "ghost", project: "proj", certThumbprint: "e".repeat(64) },
    1,
  );

  dialer = localDialer({
    index,
    registry,
    agents: overseer.agents,
    commands: overseer.commands,
    trust,
    log,
    address: () => proc.address,
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

  // The handler sees the dialer through a counter of what it pulled (the only addition).
  const counting: ExecAgentDeps["dialer"] = {
    session: (id) => dialer.session(id),
    status: (id) => dialer.status(id),
    exec: (id, shell, options) => {
      const it = dialer.exec(id, shell, options);
      pulled.count = 0;
      pulled.sawTerminal = false;
      return {
        next: async () => {
          const r = await it.next();
          if (r.done !== true) {
            pulled.count++;
            if (r.value.payload?.$case === "done" || r.value.payload?.$case === "error")
              pulled.sawTerminal = true;
          }
          return r;
        },
        return: () => it.return!(),
        [Symbol.asyncIterator]() {
          return this;
        },
      };
    },
  };
  introspector = new HttpIntrospector({
    adminUrl: cp.authAdminUrl,
    ca: Buffer.from(trust.set.ca.certPem),
    timeoutMs: 2000,
  });
  const cached = new CachingIntrospector(introspector, { maxTtlMs: 60_000, maxEntries: 100 });
  const serverTls = {
    ca: Buffer.from(trust.set.ca.certPem),
    cert: Buffer.from(trust.set.controlPlaneServer.certPem),
    key: Buffer.from(trust.set.controlPlaneServer.keyPem),
  };
  listener = new GrpcListener({
    name: "admin",
    host: "127.0.0.1",
    port: 0,
    tls: serverTls,
    services: [
      recovered(
        adminService({
          agents: registry,
          sos: new SosBoard(),
          exec: execAgentHandler({ dialer: counting, registry, log }),
        }),
      ),
    ],
    interceptors: [recoveryInterceptor(log), new AuthInterceptor({ introspector: cached, log }).interceptor],
    log,
  });
  cleanups.push(() => listener.close(0));
  await listener.start();
  // An AdminService without the exec dependency (and without auth: only the slot is under test).
  bare = new GrpcListener({
    name: "bare",
    host: "127.0.0.1",
    port: 0,
    tls: serverTls,
    services: [recovered(adminService({ agents: registry, sos: new SosBoard() }))],
    log,
  });
  cleanups.push(() => bare.close(0));
  await bare.start();

  client = openAdminClient({
    trust: trust.set,
    target: `127.0.0.1:${listener.port}`,
    tokenEndpoint: cp.tokenEndpoint,
  });
  cleanups.push(() => client.close());
  await waitFor(() => dialer.status(agent.containerId)?.state === "ready", {
    timeoutMs: 30_000,
    what: `agent ready (got ${dialer.status(agent.containerId)?.state})`,
  });
});

after(async () => {
  for (const c of cleanups.reverse()) await c();
  await introspector?.close();
  registry?.close();
  if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
  await cp?.close();
  await trust?.close();
  await overseer.close();
});

const stage = (...argv: string[]): clawkerd.PipeStage => ({ argv, uid: 0, gid: 0, cwd: "", env: {} });
const command = (stages: clawkerd.PipeStage[], timeoutSeconds = 20): clawkerd.ShellCommand => ({
  stages,
  timeoutSeconds,
  initialStdin: Buffer.alloc(0),
  printOutput: false,
  exitOnNonZero: false,
});
const byName = (cmd: clawkerd.ShellCommand): admin.ExecAgentRequest => ({
  containerId: "",
  agentName: "dev",
  project: "proj",
  command: cmd,
});

/** Runs a request to its end: the kinds in order, the output, and the Done code or Error. */
async function collect(request: admin.ExecAgentRequest, c: AdminClient = client) {
  const kinds: string[] = [];
  let output = "";
  let exitCode: number | undefined;
  let error: clawkerd.Error | undefined;
  for await (const r of c.execAgent(request)) {
    const p = r.payload;
    kinds.push(p?.$case ?? "none");
    if (p?.$case === "output") output += p.value.data.toString();
    if (p?.$case === "done") exitCode = p.value.finalExitCode;
    if (p?.$case === "error") error = p.value;
  }
  return { kinds, output, exitCode, error };
}

async function reasonOf(request: admin.ExecAgentRequest, c: AdminClient = client): Promise<AdminErrorReason> {
  try {
    await collect(request, c);
  } catch (err) {
    assert.ok(err instanceof AdminError, String(err));
    return err.reason;
  }
  assert.fail("the call succeeded");
}

/** Runs the real `clawker` bin against the test's admin listener. */
function clawker(args: string[]): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        "--import",
        import.meta.resolve("tsx"),
        "--conditions=source",
        cliMain,
        "exec",
        "--trust-dir",
        trust.trustDir,
        "--admin",
        `127.0.0.1:${listener.port}`,
        "--token-endpoint",
        cp.tokenEndpoint,
        ...args,
      ],
      { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] },
    );
    const out: Buffer[] = [];
    let stderr = "";
    child.stdout.on("data", (b: Buffer) => out.push(b));
    child.stderr.on("data", (b: Buffer) => (stderr += b.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr });
    });
  });
}

describe("ExecAgent against the real clawkerd", () => {
  test("a pipeline by name + project: Started, output, one StageExit per stage, exactly one Done, then the end", async () => {
    const r = await collect(
      byName(command([stage("printf", "b\\na\\nc\\n"), stage("sort"), stage("tr", "a-z", "A-Z")])),
    );
    assert.equal(r.output, "A\nB\nC\n");
    assert.equal(r.exitCode, 0);
    assert.equal(r.kinds[0], "started");
    assert.equal(r.kinds.at(-1), "done", "the stream ends right after Done");
    assert.equal(r.kinds.filter((k) => k === "done" || k === "error").length, 1);
    assert.equal(r.kinds.filter((k) => k === "stageExit").length, 3);
  });

  test("by container id (full and prefix); the exit code and an Error come through unchanged", async () => {
    const full = await collect({
      ...byName(command([stage("sh", "-c", "echo out; echo err >&2; exit 7")])),
      agentName: "",
      project: "",
      containerId: agent.containerId,
    });
    assert.equal(full.exitCode, 7);
    assert.equal([...full.output].sort().join(""), [..."out\nerr\n"].sort().join(""));
    const prefix = await collect({
      ...byName(command([stage("true")])),
      agentName: "",
      project: "",
      containerId: agent.containerId.slice(0, 12),
    });
    assert.equal(prefix.exitCode, 0);
    const missing = await collect(byName(command([stage("/no/such/program")])));
    assert.equal(missing.kinds.filter((k) => k === "done" || k === "error").length, 1);
    assert.ok(
      missing.error !== undefined || (missing.exitCode !== undefined && missing.exitCode !== 0),
      "a missing program fails",
    );
    const timedOut = await collect(byName(command([stage("sleep", "30")], 1)));
    assert.equal(timedOut.error?.code, clawkerd.ErrorCode.ERROR_CODE_TIMEOUT);
    assert.equal(timedOut.kinds.at(-1), "error");
  });

  test("refusals: INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION; UNIMPLEMENTED without the dependency", async () => {
    assert.equal(
      await reasonOf({ ...byName(command([stage("true")])), containerId: agent.containerId }),
      "invalid_argument",
    );
    assert.equal(await reasonOf({ ...byName(command([stage("true")])), agentName: "" }), "invalid_argument");
    assert.equal(await reasonOf(byName(command([]))), "invalid_argument");
    assert.equal(await reasonOf(byName(command([stage()]))), "invalid_argument");
    assert.equal(
      await reasonOf({ ...byName(command([stage("true")])), agentName: "nobody" }),
      "agent_not_found",
    );
    assert.equal(
      await reasonOf({ ...byName(command([stage("true")])), project: "other" }),
      "agent_not_found",
    );
    // Registered, but its container has no Session.
    const ghost = await reasonOf({ ...byName(command([stage("true")])), agentName: "ghost" });
    assert.equal(ghost, "no_session");
    const unwired = new AdminClient({
      client: dial({ tls: cliTls(trust.set), target: `127.0.0.1:${bare.port}` }),
    });
    try {
      assert.equal(await reasonOf(byName(command([stage("true")])), unwired), "unimplemented");
    } finally {
      await unwired.close();
    }
  });

  test("without a token the call is refused before the handler runs", async () => {
    const anonymous = new AdminClient({
      client: dial({ tls: cliTls(trust.set), target: `127.0.0.1:${listener.port}` }),
    });
    try {
      const before = pulled.count;
      assert.equal(await reasonOf(byName(command([stage("true")])), anonymous), "missing_or_malformed_token");
      assert.equal(pulled.count, before);
    } finally {
      await anonymous.close();
    }
  });

  test("cancelling the call kills the command; the Session stays usable", async () => {
    const ac = new AbortController();
    let pid = 0;
    await assert.rejects(
      async () => {
        for await (const r of client.execAgent(
          byName(command([stage("sh", "-c", "echo $$; exec sleep 300")], 0)),
          { signal: ac.signal },
        )) {
          if (r.payload?.$case === "output") {
            pid = Number(r.payload.value.data.toString().trim());
            ac.abort();
          }
        }
      },
      (e: unknown) => e instanceof AdminError && e.reason === "cancelled",
    );
    assert.ok(pid > 1, "the command printed its pid");
    await waitFor(() => !isAlive(pid), { timeoutMs: 10_000, what: `pid ${pid} killed` });
    const again = await collect(byName(command([stage("echo", "still here")])));
    assert.equal(again.output, "still here\n");
  });

  test("flow control: a reader that stops holds the command back; nothing is lost when it resumes", async () => {
    const total = 64 * 1024 * 1024;
    const it = client.execAgent(byName(command([stage("head", "-c", String(total), "/dev/zero")], 0)));
    let bytes = 0;
    let last: clawkerd.Response | undefined;
    // Read until output flows, then stop reading.
    while (bytes === 0) {
      const n = await it.next();
      assert.ok(n.done !== true);
      if (n.value.payload?.$case === "output") bytes += n.value.payload.value.data.length;
    }
    // The handler pulls until the client's window and grpc-js's buffers are full, then waits for
    // 'drain'; the pull count stops growing well short of the command's end.
    let seen = -1;
    let stableSince = Date.now();
    await waitFor(
      () => {
        if (pulled.count !== seen) {
          seen = pulled.count;
          stableSince = Date.now();
          return false;
        }
        return Date.now() - stableSince >= 1_000;
      },
      { timeoutMs: 30_000, what: "the handler stops pulling" },
    );
    assert.equal(pulled.sawTerminal, false, "the command ran to its end although nobody read");
    assert.ok(pulled.count * 32 * 1024 < total / 4, `pulled ${pulled.count} chunks while paused`);
    for (;;) {
      const n = await it.next();
      if (n.done === true) break;
      last = n.value;
      if (n.value.payload?.$case === "output") bytes += n.value.payload.value.data.length;
    }
    assert.equal(bytes, total);
    assert.equal(last?.payload?.$case, "done");
  });

  test("two callers on one agent: one that stops reading holds back only its own command", async () => {
    const lines = 1_000_004;
    const slow = client.execAgent(byName(command([stage("seq", "1", String(lines))], 0)));
    const first = await slow.next();
    assert.equal(first.value?.payload?.$case, "started");
    // This caller reads nothing more: its command fills its windows and seq blocks on write.
    await waitBlockedOnOutput(`seq 1 ${lines}`);
    const size = 16 << 20;
    const fast = await collect(byName(command([stage("head", "-c", String(size), "/dev/zero")], 0)));
    assert.equal(fast.exitCode, 0);
    assert.equal(fast.output.length, size, "the other caller got all of its output meanwhile");
    assert.equal(processesWith(`seq 1 ${lines}`).length, 1, "the stopped caller's command is still held");
    let output = "";
    let last: clawkerd.Response | undefined;
    for (;;) {
      const n = await slow.next();
      if (n.done === true) break;
      last = n.value;
      if (n.value.payload?.$case === "output") output += n.value.payload.value.data.toString();
    }
    assert.equal(last?.payload?.$case, "done");
    assert.ok(output === seqOutput(lines), "every line, in order, once the caller read again");
  });

  test("the clawker CLI: output bytes on stdout, the command's exit code, Error -> 1, --format json", async () => {
    const ok = await clawker([
      "--agent",
      "dev",
      "--project",
      "proj",
      "--sh",
      "printf 'caf\\303\\251\\000|'; printf x | tr x y; exit 3",
    ]);
    assert.equal(ok.code, 3, ok.stderr);
    assert.deepEqual(ok.stdout, Buffer.concat([Buffer.from("café"), Buffer.from([0]), Buffer.from("|y")]));

    const timeout = await clawker([
      "--container",
      agent.containerId.slice(0, 12),
      "--timeout",
      "1s",
      "--",
      "sleep",
      "30",
    ]);
    assert.equal(timeout.code, 1);
    assert.match(timeout.stderr, /ERROR_CODE_TIMEOUT/);

    const nobody = await clawker(["--agent", "nobody", "--", "true"]);
    assert.equal(nobody.code, 1);
    assert.match(nobody.stderr, /ExecAgent: agent_not_found: no registered agent nobody/);

    const json = await clawker([
      "--agent",
      "dev",
      "--project",
      "proj",
      "--format",
      "json",
      "--",
      "echo",
      "hi",
    ]);
    assert.equal(json.code, 0, json.stderr);
    const lines = json.stdout
      .toString()
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.ok("started" in lines[0]!);
    assert.deepEqual(lines.at(-1)!["done"], {});
    const out = lines
      .filter((l) => "output" in l)
      .map((l) => Buffer.from((l["output"] as { data: string }).data, "base64").toString());
    assert.equal(out.join(""), "hi\n");
  });
});
