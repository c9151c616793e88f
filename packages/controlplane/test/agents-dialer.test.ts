// The Dialer and AgentSession against a TEST DOUBLE of clawkerd: a real grpc-js ClawkerdService
// server over real mTLS (TLS 1.3) on 127.0.0.1 that follows API.md §3 (Hello/HelloAck, pipelines
// of real child processes with Started/output/StageExit/Done, RegisterRequired -> a real
// AgentService.Register call with its agent leaf against a real identity gate -> RegisterDone).
// The double lets a test shape what the real clawkerd cannot be made to do (a leaf from another
// CA, a dropped stream, a failing plan); agents-clawkerd.test.ts runs the real clawkerd.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import http2 from "node:http2";
import { connect, createServer, type AddressInfo, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { after, before, describe, test } from "node:test";
import {
  Server,
  ServerCredentials,
  credentials,
  type ServerDuplexStream,
  type ServiceError,
} from "@grpc/grpc-js";
import { issueAgentLeaf, mintTrustSet, type CertifiedKey, type TrustSet } from "@clawker/adminclient";
import { Overseer, type AgentEvent, type CommandEvent } from "@clawker/overseer";
import { LABELS, agent, clawkerd } from "@clawker/proto";
import pino from "pino";
import { ContainerAddressIndex, type ContainerRecord } from "../src/agents/address-index.js";
import { agentService } from "../src/agents/agent-service.js";
import { Dialer, DialerError, SESSION_WINDOW_BYTES, type DialerOptions } from "../src/agents/dialer.js";
import { IdentityGate, thumbprintOf } from "../src/agents/identity-gate.js";
import type { AgentPlans } from "../src/agents/plans.js";
import { Registry } from "../src/agents/registry.js";
import { waitFor } from "../../../test/harness/wait-for.js";

tls.DEFAULT_MIN_VERSION = "TLSv1.3";

const log = pino({ level: process.env["LOG_LEVEL"] ?? "silent" });
const labelsOf = (agentName: string, project = "demo"): Record<string, string> => ({
  [LABELS.managed]: "true",
  [LABELS.purpose]: "agent",
  [LABELS.agent]: agentName,
  [LABELS.project]: project,
});
let idSeq = 0;
const newId = (): string => (++idSeq).toString(16).padStart(64, "c");

/** What the double saw and how it behaves. */
interface DoubleState {
  initialized: boolean;
  cmdRunning: boolean;
  readonly commands: clawkerd.Command[];
  defaultCmd: string | undefined;
  sessions: number;
}

/** TEST DOUBLE of clawkerd (API.md §3) on 127.0.0.1:0 with `leaf` as its server certificate. */
class ClawkerdDouble {
  readonly state: DoubleState = {
    initialized: false,
    cmdRunning: false,
    commands: [],
    defaultCmd: undefined,
    sessions: 0,
  };
  readonly #server = new Server();
  readonly #streams = new Set<ServerDuplexStream<clawkerd.Command, clawkerd.Response>>();
  port = 0;

  constructor(
    private readonly ca: string,
    private readonly leaf: CertifiedKey,
    private readonly register: () => Promise<ServiceError | null>,
  ) {
    this.#server.addService(clawkerd.ClawkerdServiceService, {
      session: (call: ServerDuplexStream<clawkerd.Command, clawkerd.Response>) => this.#session(call),
    });
  }

  async start(): Promise<number> {
    const creds = ServerCredentials.createSsl(
      Buffer.from(this.ca),
      [{ private_key: Buffer.from(this.leaf.keyPem), cert_chain: Buffer.from(this.leaf.certPem) }],
      true,
    );
    this.port = await new Promise<number>((resolve, reject) =>
      this.#server.bindAsync("127.0.0.1:0", creds, (err, p) => (err ? reject(err) : resolve(p))),
    );
    return this.port;
  }

  /** Ends every open Session from the agent's side (clawkerd restarting its stream). */
  dropSessions(): void {
    for (const s of this.#streams) s.end();
  }

  stop(): Promise<void> {
    this.#server.forceShutdown();
    return Promise.resolve();
  }

  #session(call: ServerDuplexStream<clawkerd.Command, clawkerd.Response>): void {
    this.state.sessions++;
    this.#streams.add(call);
    call.on("close", () => this.#streams.delete(call));
    call.on("error", () => this.#streams.delete(call));
    const send = (r: clawkerd.Response): void => void (call.writable && call.write(r));
    call.on("data", (cmd: clawkerd.Command) => {
      this.state.commands.push(cmd);
      const id = cmd.commandId;
      const p = cmd.payload;
      switch (p?.$case) {
        case "hello":
          send({
            commandId: id,
            payload: {
              $case: "helloAck",
              value: { initialized: this.state.initialized, cmdRunning: this.state.cmdRunning },
            },
          });
          break;
        case "registerRequired":
          void this.register().then((err) =>
            send({
              commandId: id,
              payload: { $case: "registerDone", value: { ok: err === null, error: err?.details ?? "" } },
            }),
          );
          break;
        case "agentInitialized":
          this.state.initialized = true;
          break;
        case "agentReady":
          this.state.cmdRunning = true;
          this.state.defaultCmd = p.value.defaultCmd;
          break;
        case "shell":
          this.#pipeline(id, p.value, send, () => call.end());
          break;
        default:
          break;
      }
    });
    call.on("end", () => call.end());
  }

  #pipeline(
    id: string,
    shell: clawkerd.ShellCommand,
    send: (r: clawkerd.Response) => void,
    exit: () => void,
  ): void {
    const procs = shell.stages.map((s) =>
      spawn(s.argv[0]!, s.argv.slice(1), {
        cwd: s.cwd || "/",
        env: { PATH: process.env["PATH"] ?? "", ...s.env },
        stdio: "pipe",
      }),
    );
    // A stage that exits without reading its input must not crash the double (EPIPE).
    for (const p of procs) p.stdin.on("error", () => undefined);
    for (let i = 0; i + 1 < procs.length; i++) procs[i]!.stdout.pipe(procs[i + 1]!.stdin);
    send({ commandId: id, payload: { $case: "started", value: {} } });
    const out = (data: Buffer): void =>
      send({ commandId: id, payload: { $case: "output", value: { data } } });
    for (const p of procs) p.stderr.on("data", out);
    procs.at(-1)!.stdout.on("data", out);
    procs[0]!.stdin.end(shell.initialStdin);
    let left = procs.length;
    let last = 0;
    procs.forEach((p, i) =>
      p.on("close", (code, sig) => {
        send({
          commandId: id,
          payload: {
            $case: "stageExit",
            value: { stageIndex: i, exitCode: code ?? -1, signo: sig === null ? 0 : 15 },
          },
        });
        if (i === procs.length - 1) last = code ?? -1;
        if (--left === 0) {
          send({ commandId: id, payload: { $case: "done", value: { finalExitCode: last } } });
          if (last !== 0 && shell.exitOnNonZero) exit();
        }
      }),
    );
  }
}

let trust: TrustSet;
let otherTrust: TrustSet;
let tmp: string;
let registry: Registry;
let agentServer: Server;
let agentPort: number;
/** Each test's own index (its dialer follows only that); the gate reads the current one. */
let index = new ContainerAddressIndex({ inspect: () => Promise.resolve(undefined), log });
const overseer = new Overseer();
const events: AgentEvent[] = [];
const commandEvents: CommandEvent[] = [];
const cleanups: Array<() => Promise<void> | void> = [];

before(async () => {
  [trust, otherTrust] = await Promise.all([mintTrustSet(), mintTrustSet()]);
  tmp = mkdtempSync(join(tmpdir(), "agents-dialer-"));
  registry = new Registry(join(tmp, "registry.db"));
  overseer.agents.subscribe((e) => void events.push(e));
  overseer.commands.subscribe((e) => void commandEvents.push(e));
  // The real identity gate and AgentService on real mTLS: the double registers against it.
  const gate = new IdentityGate({
    index: { lookup: (a) => index.lookup(a), settled: () => index.settled() },
    registry,
    agents: overseer.agents,
    log,
  });
  agentServer = new Server();
  const binding = agentService({ gate, log });
  agentServer.addService(binding.definition, binding.implementation);
  agentPort = await new Promise<number>((resolve, reject) =>
    agentServer.bindAsync(
      "127.0.0.1:0",
      ServerCredentials.createSsl(
        Buffer.from(trust.ca.certPem),
        [
          {
            private_key: Buffer.from(trust.controlPlaneServer.keyPem),
            cert_chain: Buffer.from(trust.controlPlaneServer.certPem),
          },
        ],
        true,
      ),
      (err, p) => (err ? reject(err) : resolve(p)),
    ),
  );
});

after(async () => {
  for (const c of cleanups.reverse()) await c();
  await new Promise<void>((resolve) => agentServer.tryShutdown(() => resolve()));
  await overseer.close();
  registry.close();
  rmSync(tmp, { recursive: true, force: true });
});

/** A double for a new container (leaf from `ca`), its index record, and a dialer pointed at it. */
async function setup(
  opts: { ca?: TrustSet; plans?: AgentPlans; dialer?: Partial<DialerOptions>; agentName?: string } = {},
): Promise<{
  id: string;
  double: ClawkerdDouble;
  dialer: Dialer;
  leaf: CertifiedKey;
  record: ContainerRecord;
}> {
  index = new ContainerAddressIndex({ inspect: () => Promise.resolve(undefined), log });
  const id = newId();
  const name = opts.agentName ?? `a${idSeq}`;
  const leafCa = (opts.ca ?? trust).ca;
  const leaf = await issueAgentLeaf(leafCa, { agentName: `demo.${name}`, containerId: id });
  const registerWith = (): Promise<ServiceError | null> => {
    const client = new agent.AgentServiceClient(
      `127.0.0.1:${agentPort}`,
      credentials.createSsl(
        Buffer.from(trust.ca.certPem),
        Buffer.from(leaf.keyPem),
        Buffer.from(leaf.certPem),
      ),
    );
    return new Promise<ServiceError | null>((resolve) =>
      client.register({ agentName: name, project: "demo" }, (err) => {
        client.close();
        resolve(err);
      }),
    );
  };
  // The double trusts our CA for client certificates, like clawkerd's bootstrap ca.crt.
  const double = new ClawkerdDouble(trust.ca.certPem, leaf, registerWith);
  await double.start();
  cleanups.push(() => double.stop());
  const dialer = new Dialer({
    index,
    registry,
    agents: overseer.agents,
    commands: overseer.commands,
    tls: {
      ca: Buffer.from(trust.ca.certPem),
      cert: Buffer.from(trust.controlPlaneClient.certPem),
      key: Buffer.from(trust.controlPlaneClient.keyPem),
    },
    log,
    target: (r) => (r.id === id ? `127.0.0.1:${double.port}` : undefined),
    defaultCmd: () => "sleep infinity",
    ...(opts.plans === undefined ? {} : { plans: opts.plans }),
    ...opts.dialer,
  });
  cleanups.push(() => dialer.close());
  dialer.start();
  const record = { id, labels: labelsOf(name), addresses: ["127.0.0.1"] };
  return { id, double, dialer, leaf, record };
}

const eventsFor = (id: string): string[] => events.filter((e) => e.containerId === id).map((e) => e.type);

describe("Dialer against the clawkerd test double", () => {
  test("first start: Hello, RegisterRequired -> Register through the gate, init and boot plans, AgentReady", async () => {
    const plans: AgentPlans = {
      init: [{ name: "marker", stages: [{ argv: ["sh", "-c", "echo init-ran"] }] }],
      boot: [{ name: "hello", stages: [{ argv: ["sh", "-c", "echo boot-ran"] }] }],
    };
    const { id, double, dialer, leaf } = await setup({ plans, agentName: "first" });
    index.put({ id, labels: labelsOf("first"), addresses: ["127.0.0.1"] });
    await waitFor(() => dialer.status(id)?.state === "ready", { what: "ready" });
    // "ready" is set once AgentReady is written; the double reads it a moment later.
    await waitFor(() => double.state.defaultCmd !== undefined, { what: "AgentReady received" });
    assert.deepEqual(eventsFor(id), [
      "agent.session_opened",
      "agent.register_required",
      "agent.registered",
      "agent.ready",
    ]);
    const opened = events.find((e) => e.containerId === id && e.type === "agent.session_opened");
    assert.ok(opened?.type === "agent.session_opened");
    assert.equal(opened.isChainVerified, true);
    assert.equal(
      opened.peerThumbprint,
      thumbprintOf(new (await import("node:crypto")).X509Certificate(leaf.certPem).raw),
    );
    assert.equal(registry.get(id)?.certThumbprint, opened.peerThumbprint);
    // Commands in the order of the flow; plans ran as ShellCommands with exit_on_non_zero.
    assert.deepEqual(
      double.state.commands.map((c) => `${c.commandId}:${c.payload?.$case}`),
      [
        "hello:hello",
        "register:registerRequired",
        "init-marker:shell",
        "initialized:agentInitialized",
        "boot-hello:shell",
        "ready:agentReady",
      ],
    );
    for (const c of double.state.commands)
      if (c.payload?.$case === "shell") assert.equal(c.payload.value.exitOnNonZero, true);
    assert.equal(double.state.defaultCmd, "sleep infinity");
    const progress = commandEvents.filter((e) => e.containerId === id).map((e) => `${e.commandId}:${e.type}`);
    assert.ok(progress.includes("init-marker:command.started"));
    assert.ok(progress.includes("boot-hello:command.done"));

    // exec: a two-stage pipeline streams its output and ends with exactly one Done.
    const kinds: string[] = [];
    let output = "";
    for await (const r of dialer.exec(id, {
      stages: [
        { argv: ["printf", "hello pipeline"], uid: 0, gid: 0, cwd: "/", env: {} },
        { argv: ["tr", "a-z", "A-Z"], uid: 0, gid: 0, cwd: "/", env: {} },
      ],
      timeoutSeconds: 10,
      initialStdin: Buffer.alloc(0),
      printOutput: false,
      exitOnNonZero: false,
    })) {
      kinds.push(r.payload?.$case ?? "none");
      if (r.payload?.$case === "output") output += r.payload.value.data.toString();
    }
    assert.equal(output, "HELLO PIPELINE");
    assert.equal(kinds[0], "started");
    assert.equal(kinds.at(-1), "done");
    assert.equal(kinds.filter((k) => k === "done" || k === "error").length, 1);
    assert.equal(kinds.filter((k) => k === "stageExit").length, 2);

    // A dropped stream is re-dialed; the running agent is not booted again.
    const bootsBefore = double.state.commands.filter((c) => c.commandId === "boot-hello").length;
    double.dropSessions();
    await waitFor(() => double.state.sessions === 2 && dialer.status(id)?.state === "ready", {
      what: "re-dial",
    });
    assert.equal(double.state.commands.filter((c) => c.commandId === "boot-hello").length, bootsBefore);
    assert.ok(eventsFor(id).includes("agent.session_closed"));

    // Destroy: the link is cancelled and the session closes.
    index.remove(id, "destroyed");
    await waitFor(() => dialer.status(id) === undefined, { what: "link gone" });
    assert.throws(
      () =>
        dialer.exec(id, {
          stages: [],
          timeoutSeconds: 0,
          initialStdin: Buffer.alloc(0),
          printOutput: false,
          exitOnNonZero: false,
        }),
      DialerError,
    );
  });

  test("a registered agent with the same certificate matches: no RegisterRequired, last_seen touched", async () => {
    const { id, double, dialer, leaf, record } = await setup();
    const tp = thumbprintOf(new (await import("node:crypto")).X509Certificate(leaf.certPem).raw);
    assert.equal(
      registry.register({ containerId: id, agentName: "x", project: "demo", certThumbprint: tp }, 1000),
      "created",
    );
    index.put(record);
    await waitFor(() => dialer.status(id)?.state === "ready", { what: "ready" });
    assert.deepEqual(eventsFor(id), ["agent.session_opened", "agent.ready"]);
    assert.ok(registry.get(id)!.lastSeenUnix > 1000);
    assert.ok(!double.state.commands.some((c) => c.payload?.$case === "registerRequired"));
  });

  test("a registered agent presenting another certificate is untrusted and driven no further", async () => {
    const { id, double, dialer, record } = await setup();
    registry.register(
      { containerId: id, agentName: "x", project: "demo", certThumbprint: "f".repeat(64) },
      1000,
    );
    index.put(record);
    await waitFor(() => dialer.status(id)?.state === "untrusted", { what: "untrusted" });
    const untrusted = events.find((e) => e.containerId === id && e.type === "agent.untrusted");
    assert.ok(untrusted?.type === "agent.untrusted");
    assert.equal(untrusted.expectedThumbprint, "f".repeat(64));
    assert.equal(double.state.sessions, 1);
    assert.deepEqual(
      double.state.commands.map((c) => c.payload?.$case),
      ["hello"],
    );
    // The same start event again does not re-dial an untrusted agent.
    index.put(record);
    assert.equal(dialer.status(id)?.state, "untrusted");
  });

  test("a clawkerd whose certificate is from another CA is still reached, then classified untrusted", async () => {
    const { id, double, dialer, record } = await setup({ ca: otherTrust });
    index.put(record);
    await waitFor(() => dialer.status(id)?.state === "untrusted", { what: "untrusted" });
    const opened = events.find((e) => e.containerId === id && e.type === "agent.session_opened");
    assert.ok(opened?.type === "agent.session_opened", "the connection proceeded");
    assert.equal(opened.isChainVerified, false);
    assert.equal(registry.get(id), undefined, "never asked to register");
    assert.deepEqual(
      double.state.commands.map((c) => c.payload?.$case),
      ["hello"],
    );
  });

  test("a failing init step ends the link (plan_failed) without AgentReady", async () => {
    const plans: AgentPlans = {
      init: [{ name: "broken", stages: [{ argv: ["sh", "-c", "exit 3"] }] }],
      boot: [],
    };
    const { id, double, dialer, record } = await setup({ plans });
    index.put(record);
    await waitFor(() => dialer.status(id)?.state === "plan_failed", { what: "plan_failed" });
    assert.ok(!double.state.commands.some((c) => c.payload?.$case === "agentReady"));
    assert.ok(!eventsFor(id).includes("agent.ready"));
  });
});

describe("Dialer backoff and cancellation", () => {
  async function deadPort(): Promise<number> {
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const { port } = srv.address() as AddressInfo;
    await new Promise<void>((r) => srv.close(() => r()));
    return port;
  }

  test("unreachable clawkerd: dial_failed with growing attempts, then the link gives up", async () => {
    const port = await deadPort();
    const { id, dialer, record } = await setup({
      dialer: {
        target: () => `127.0.0.1:${port}`,
        backoff: { initialMs: 20, maxMs: 80, giveUpMs: 400 },
        timeouts: { connectMs: 200 },
      },
    });
    index.put(record);
    await waitFor(() => dialer.status(id)?.state === "gave_up", { what: "gave up" });
    const failed = events.filter((e) => e.containerId === id && e.type === "agent.dial_failed");
    assert.ok(failed.length >= 3, `attempts: ${failed.length}`);
    assert.deepEqual(
      failed.map((e) => (e.type === "agent.dial_failed" ? e.attempt : 0)),
      failed.map((_, i) => i + 1),
    );
  });

  test("a clawkerd that listens after the dial began: bare connects until it listens, then the Session on the first attempt", async () => {
    const port = await deadPort();
    const { id, dialer, double, record } = await setup({
      agentName: "late",
      dialer: { target: () => `127.0.0.1:${port}`, timeouts: { connectMs: 10_000 } },
    });
    index.put(record);
    await waitFor(() => dialer.status(id)?.state === "dialing", { what: "dialing" });
    // clawkerd "starts listening": a forwarder on the dialed port to the double, counting each
    // connection's bytes from the dialer.
    const seen: { bytes: number }[] = [];
    const sockets = new Set<Socket>();
    const forwarder = createServer((c: Socket) => {
      const conn = { bytes: 0 };
      seen.push(conn);
      const up = connect(double.port, "127.0.0.1");
      sockets.add(c).add(up);
      c.on("data", (d: Buffer) => (conn.bytes += d.length));
      c.on("error", () => up.destroy());
      up.on("error", () => c.destroy());
      c.pipe(up).pipe(c);
    });
    await new Promise<void>((r) => forwarder.listen(port, "127.0.0.1", r));
    cleanups.push(() => {
      for (const socket of sockets) socket.destroy();
      forwarder.close();
    });
    await waitFor(() => dialer.status(id)?.state === "ready", { what: "ready" });
    assert.equal(dialer.status(id)?.attempts, 0, "no failed attempt");
    assert.deepEqual(eventsFor(id).slice(0, 1), ["agent.session_opened"]);
    // The first connection was the probe (nothing sent; it is not the Session's): grpc-js's own
    // reconnects would have opened with a TLS ClientHello.
    assert.ok(seen.length >= 2, `connections: ${seen.length}`);
    assert.equal(seen[0]!.bytes, 0);
    assert.ok(seen.some((c) => c.bytes > 0));
  });

  test("a destroyed container cancels its retries", async () => {
    const port = await deadPort();
    const { id, dialer, record } = await setup({
      dialer: {
        target: () => `127.0.0.1:${port}`,
        backoff: { initialMs: 30, maxMs: 30, giveUpMs: 60_000 },
        timeouts: { connectMs: 200 },
      },
    });
    index.put(record);
    await waitFor(
      () => events.filter((e) => e.containerId === id && e.type === "agent.dial_failed").length >= 2,
      { what: "retries" },
    );
    index.remove(id, "destroyed");
    // The link leaves the map only once its retry loop has returned: no attempt can follow.
    await waitFor(() => dialer.status(id) === undefined, { what: "cancelled" });
    await dialer.close();
  });
});

describe("Dialer's channel", () => {
  test("the Session's connection offers clawkerd a SESSION_WINDOW_BYTES HTTP/2 window, stream and connection", async () => {
    // A bare HTTP/2 server with a clawkerd leaf stands in for clawkerd: it only reads what the
    // Dialer's grpc-js channel advertises (SETTINGS, then the connection's WINDOW_UPDATE).
    const { leaf, dialer, record } = await setup({ dialer: { target: () => `127.0.0.1:${port}` } });
    const server = http2.createSecureServer({
      ca: trust.ca.certPem,
      cert: leaf.certPem,
      key: leaf.keyPem,
      requestCert: true,
      minVersion: "TLSv1.3",
    });
    let peer: http2.ServerHttp2Session | undefined;
    let initialWindowSize: number | undefined;
    server.on("session", (s: http2.ServerHttp2Session) => {
      peer = s;
      s.once(
        "remoteSettings",
        (settings: http2.Settings) => (initialWindowSize = settings.initialWindowSize),
      );
    });
    server.on("stream", () => undefined);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as AddressInfo).port;
    cleanups.push(async () => {
      peer?.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    });
    index.put(record);
    await waitFor(() => initialWindowSize !== undefined, { what: "the Dialer's SETTINGS" });
    assert.equal(initialWindowSize, SESSION_WINDOW_BYTES, "a stream's window");
    await waitFor(() => (peer?.state.remoteWindowSize ?? 0) >= SESSION_WINDOW_BYTES, {
      what: "the connection's window",
    });
    await dialer.close();
  });
});
