// GrpcListener over real mutual TLS 1.3 on 127.0.0.1:0 with trust material minted by the CLI's own
// library: each listener serves only its role's certificate and gives every other peer no HTTP/2
// at all; the control plane's leaf may only probe the admin listener; unknown paths and undecodable
// requests get our answers; handshakes, silent connections and unfinished requests time out; caps
// hold; close() leaves nothing behind.
import assert from "node:assert/strict";
import http2 from "node:http2";
import { connect as netConnect, createServer as createNetServer, type Socket } from "node:net";
import { after, before, describe, test } from "node:test";
import tls from "node:tls";
import { Writable } from "node:stream";
import {
  credentials,
  Metadata,
  ServerInterceptingCall,
  status,
  type ServiceError,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { admin, errorDetailOf } from "@clawker/proto";
import { mintTrustSet, type CertifiedKey, type TrustSet } from "@clawker/adminclient";
import { pino } from "pino";
import { AuthInterceptor, HttpIntrospector, reasonMessage } from "../src/auth/index.js";
import { CALL_GUARD_MESSAGES } from "../src/server/call-guard.js";
import { GrpcListener, type GrpcListenerOptions } from "../src/server/grpc-listener.js";
import { ListenerCounters } from "../src/server/listener-counters.js";
import { RefusalLog } from "../src/server/refusal-log.js";
import { tlsHandshakeProbe } from "../src/supervisor/probes.js";
import { mintTestTrust, type TestTrust } from "../../../test/harness/trust.js";
import { waitFor } from "../../../test/harness/wait-for.js";

tls.DEFAULT_MIN_VERSION = "TLSv1.3";

const LIMITS = {
  handshakeTimeoutMs: 400,
  requestTimeoutMs: 600,
  idleTimeoutMs: 600,
  maxHandshakes: 8,
  maxConnections: 16,
  maxStreamsPerConnection: 5,
} as const;

let pki: TestTrust;
let stranger: TrustSet;
let agentLeaf: CertifiedKey;
let otherAgentLeaf: CertifiedKey;
const counters = new ListenerCounters();
const logLines: string[] = [];
const log = pino(
  { level: "debug" },
  new Writable({
    write(chunk: Buffer, _enc, cb) {
      logLines.push(chunk.toString("utf8"));
      cb();
    },
  }),
);
const refusals = new RefusalLog({ log, counters, linesPerWindow: 1_000 });
/** The CN each served getSystemTime saw through `call.getAuthContext()`. */
const seenCns: string[] = [];
/** The SANs each served getSystemTime saw, and whether the certificate it saw was frozen. */
const seenCerts: Array<{ readonly san: string | undefined; readonly frozen: boolean }> = [];
let adminListener: GrpcListener;
let agentListener: GrpcListener;
let introspector: HttpIntrospector;

function service(): UntypedServiceImplementation {
  const impl: Record<string, unknown> = {};
  for (const name of Object.keys(admin.AdminServiceService))
    impl[name] = (_c: unknown, cb: (e: unknown) => void) => cb({ code: status.UNIMPLEMENTED, details: "no" });
  impl["getSystemTime"] = (
    call: {
      getAuthContext(): { sslPeerCertificate?: { subject?: { CN?: string }; subjectaltname?: string } };
    },
    cb: (e: null, r: admin.GetSystemTimeResult) => void,
  ) => {
    const cert = call.getAuthContext().sslPeerCertificate;
    seenCns.push(cert?.subject?.CN ?? "(none)");
    seenCerts.push({
      san: cert?.subjectaltname,
      frozen: cert !== undefined && Object.isFrozen(cert) && Object.isFrozen(cert.subject),
    });
    cb(null, { unixNanos: 1n });
  };
  impl["listAgents"] = (_c: unknown, cb: (e: null, r: admin.ListAgentsResult) => void) =>
    cb(null, { agents: [] });
  return impl as UntypedServiceImplementation;
}

function listener(options: Partial<GrpcListenerOptions> & Pick<GrpcListenerOptions, "name">): GrpcListener {
  return new GrpcListener({
    host: "127.0.0.1",
    port: 0,
    tls: {
      ca: Buffer.from(pki.set.ca.certPem),
      cert: Buffer.from(pki.set.controlPlaneServer.certPem),
      key: Buffer.from(pki.set.controlPlaneServer.keyPem),
    },
    services: [{ definition: admin.AdminServiceService, implementation: service() }],
    log,
    refusals,
    limits: LIMITS,
    ...options,
  });
}

before(async () => {
  pki = await mintTestTrust();
  stranger = await mintTrustSet();
  agentLeaf = await pki.issueAgent("proj.dev", "a".repeat(64));
  otherAgentLeaf = await pki.issueAgent("proj.other", "b".repeat(64));
  // A real introspector whose endpoint is down: the refusals under test happen before it is asked.
  const dead = createNetServer();
  await new Promise<void>((r) => dead.listen(0, "127.0.0.1", r));
  const deadPort = (dead.address() as { port: number }).port;
  await new Promise<void>((r) => dead.close(() => r()));
  introspector = new HttpIntrospector({ adminUrl: `https://127.0.0.1:${deadPort}`, ca: pki.set.ca.certPem });
  adminListener = listener({
    name: "admin",
    peers: { serve: "cli", probe: "controlplane" },
    gates: [new AuthInterceptor({ introspector, log, refusals, listener: "admin" }).gate],
  });
  agentListener = listener({
    name: "agent",
    peers: { serve: "agent" },
    limits: { ...LIMITS, maxConnectionsPerPeer: 2 },
  });
  await adminListener.start();
  await agentListener.start();
});

after(async () => {
  await adminListener.close(0);
  await agentListener.close(0);
  await introspector.close();
  refusals.close();
  await pki.close();
});

type Who = CertifiedKey | undefined;

function tlsFor(who: Who, ca = pki.set.ca.certPem): tls.ConnectionOptions {
  return {
    host: "127.0.0.1",
    ca,
    servername: "localhost",
    ALPNProtocols: ["h2"],
    ...(who === undefined ? {} : { cert: who.certPem, key: who.keyPem }),
  };
}

/** The HTTP/2 client preface plus an empty SETTINGS frame (RFC 9113 §3.4). */
const PREFACE = Buffer.concat([
  Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1"),
  Buffer.from([0, 0, 0, 0x4, 0, 0, 0, 0, 0]),
]);

/**
 * Completes the TLS handshake as `who`, sends the HTTP/2 preface and reports whether the server's
 * SETTINGS frame came back, or the connection closed with no byte from the HTTP/2 layer.
 */
function greet(port: number, who: Who, ca?: string): Promise<"http2" | "closed"> {
  return new Promise((resolve) => {
    let seen = Buffer.alloc(0);
    const socket = tls.connect({ ...tlsFor(who, ca), port });
    socket.on("error", () => {});
    socket.on("secureConnect", () => socket.write(PREFACE));
    socket.on("data", (chunk: Buffer) => {
      seen = Buffer.concat([seen, chunk]);
      if (seen.length >= 9) {
        resolve(seen[3] === 0x4 ? "http2" : "closed");
        socket.destroy();
      }
    });
    socket.on("close", () => resolve("closed"));
  });
}

function grpcClient(port: number, who: CertifiedKey): admin.AdminServiceClient {
  return new admin.AdminServiceClient(
    `127.0.0.1:${port}`,
    credentials.createSsl(Buffer.from(pki.set.ca.certPem), Buffer.from(who.keyPem), Buffer.from(who.certPem)),
    { "grpc.ssl_target_name_override": "localhost", "grpc.use_local_subchannel_pool": 1 },
  );
}

function systemTime(client: admin.AdminServiceClient, deadlineMs = 5_000): Promise<number> {
  return new Promise((resolve) =>
    client.getSystemTime(
      {},
      new Metadata(),
      { deadline: Date.now() + deadlineMs },
      (err: ServiceError | null) => resolve(err === null ? status.OK : err.code),
    ),
  );
}

interface RawAnswer {
  readonly grpcStatus: number;
  readonly grpcMessage: string;
  readonly headerText: string;
}

/** One raw HTTP/2 gRPC request as the CLI; `body` undefined leaves the request open. */
function rawCall(
  port: number,
  path: string,
  body: Buffer | undefined,
  authorization?: string,
): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://127.0.0.1:${port}`, {
      ...tlsFor(pki.set.cli),
    } as http2.SecureClientSessionOptions);
    session.on("error", reject);
    const req = session.request({
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc",
      te: "trailers",
      ...(authorization === undefined ? {} : { authorization }),
    });
    const headers: Record<string, string | string[] | number | undefined> = {};
    const done = (): void => {
      req.close();
      session.close();
      resolve({
        grpcStatus: Number(headers["grpc-status"]),
        grpcMessage: decodeURIComponent(
          typeof headers["grpc-message"] === "string" ? headers["grpc-message"] : "",
        ),
        headerText: JSON.stringify(headers),
      });
    };
    // The status comes in a trailers-only response or in trailers; the request side may still be open.
    req.on("response", (h) => {
      Object.assign(headers, h);
      if (h["grpc-status"] !== undefined) done();
    });
    req.on("trailers", (h) => {
      Object.assign(headers, h);
      done();
    });
    req.on("error", reject);
    req.on("close", done);
    req.resume();
    if (body !== undefined) {
      const frame = Buffer.alloc(5 + body.length);
      frame.writeUInt32BE(body.length, 1);
      body.copy(frame, 5);
      req.end(frame);
    }
  });
}

void describe("roles are separated at the handshake", () => {
  test("admin serves only the CLI's leaf; agent serves only agent leaves; everyone else gets no HTTP/2", async () => {
    const cases: Array<[string, GrpcListener, Who, "http2" | "closed", string?]> = [
      ["CLI on admin", adminListener, pki.set.cli, "http2"],
      ["agent leaf on admin", adminListener, agentLeaf, "closed"],
      ["no certificate on admin", adminListener, undefined, "closed"],
      ["a stranger CA's CLI leaf on admin", adminListener, stranger.cli, "closed", stranger.ca.certPem],
      ["agent leaf on agent", agentListener, agentLeaf, "http2"],
      ["CLI on agent", agentListener, pki.set.cli, "closed"],
      ["control plane's leaf on agent", agentListener, pki.set.controlPlaneClient, "closed"],
    ];
    const before = counters.count("admin", "role_refused") + counters.count("agent", "role_refused");
    for (const [name, l, who, expected, ca] of cases) {
      assert.equal(await greet(l.port, who, ca), expected, name);
    }
    await waitFor(
      () => counters.count("admin", "role_refused") + counters.count("agent", "role_refused") - before === 3,
      { what: "three role refusals counted" },
    );
  });

  test("served calls read the peer certificate through getAuthContext; a refused role's call never runs", async () => {
    seenCns.length = 0;
    const cli = grpcClient(adminListener.port, pki.set.cli);
    const agentOnAgent = grpcClient(agentListener.port, agentLeaf);
    const cliOnAgent = grpcClient(agentListener.port, pki.set.cli);
    const agentOnAdmin = grpcClient(adminListener.port, agentLeaf);
    try {
      assert.equal(await systemTime(cli), status.OK);
      assert.equal(await systemTime(agentOnAgent), status.OK);
      assert.equal(await systemTime(cliOnAgent), status.UNAVAILABLE);
      assert.equal(await systemTime(agentOnAdmin), status.UNAVAILABLE);
    } finally {
      for (const c of [cli, agentOnAgent, cliOnAgent, agentOnAdmin]) c.close();
    }
    assert.deepEqual(seenCns, ["clawker-cli", "clawker-clawkerd"]);
  });

  test("served sessions keep their streams in our StreamTable: concurrent calls on one connection, nothing logged", async () => {
    const cli = grpcClient(adminListener.port, pki.set.cli);
    try {
      const codes = await Promise.all(Array.from({ length: 20 }, () => systemTime(cli)));
      assert.deepEqual(new Set(codes), new Set([status.OK]));
    } finally {
      cli.close();
    }
    // installStreamTable found no session to install on (a Node without the shape it expects).
    assert.deepEqual(
      logLines.filter((l) => l.includes("stream_table_unavailable")),
      [],
      "every served session got the table",
    );
  });

  test("the peer certificate is read once per connection, and each connection sees its own, frozen", async () => {
    seenCerts.length = 0;
    // Server-side reads on the agent listener only (the test's clients read the server's too).
    let reads = 0;
    const proto = tls.TLSSocket.prototype;
    const read = Reflect.get(proto, "getPeerCertificate") as (...args: unknown[]) => tls.PeerCertificate;
    proto.getPeerCertificate = function (this: tls.TLSSocket, ...args: unknown[]) {
      if (this.localPort === agentListener.port) reads++;
      return Reflect.apply(read, this, args);
    } as typeof proto.getPeerCertificate;
    const first = grpcClient(agentListener.port, agentLeaf);
    const second = grpcClient(agentListener.port, otherAgentLeaf);
    try {
      for (let i = 0; i < 3; i++) {
        assert.equal(await systemTime(first), status.OK);
        assert.equal(await systemTime(second), status.OK);
      }
    } finally {
      Reflect.set(proto, "getPeerCertificate", read);
      first.close();
      second.close();
    }
    // Per connection: the role check at the handshake, then the first call's; never again.
    assert.equal(reads, 4, "getPeerCertificate calls on the server side");
    assert.equal(seenCerts.length, 6);
    seenCerts.forEach(({ san, frozen }, i) => {
      const own = i % 2 === 0 ? "urn:clawker:agent:proj.dev" : "urn:clawker:agent:proj.other";
      assert.ok(san?.includes(own) === true, `call ${i} saw ${san}, not its own connection's ${own}`);
      assert.ok(frozen, `call ${i}: the certificate a handler sees is frozen`);
    });
  });

  test("the control plane's leaf may probe the admin listener (HTTP/2 SETTINGS) but open no stream", async () => {
    seenCns.length = 0;
    const cp = pki.set.controlPlaneClient;
    const probe = tlsHandshakeProbe("127.0.0.1", adminListener.port, {
      ca: pki.set.ca.certPem,
      cert: cp.certPem,
      key: cp.keyPem,
      servername: "localhost",
      expectHttp2: true,
    });
    await probe(AbortSignal.timeout(5_000));
    await assert.rejects(
      tlsHandshakeProbe("127.0.0.1", adminListener.port, {
        ca: pki.set.ca.certPem,
        cert: agentLeaf.certPem,
        key: agentLeaf.keyPem,
        servername: "localhost",
        expectHttp2: true,
      })(AbortSignal.timeout(5_000)),
      { reason: "handshake_failed" },
      "an agent's leaf fails the same probe",
    );
    // A client that ignores SETTINGS_MAX_CONCURRENT_STREAMS 0 and sends HEADERS anyway: raw frames.
    const frames = await new Promise<number[]>((resolve) => {
      const types: number[] = [];
      let buffered = Buffer.alloc(0);
      const socket = tls.connect({ ...tlsFor(cp), port: adminListener.port });
      socket.on("error", () => {});
      socket.on("secureConnect", () => {
        // HEADERS on stream 1, END_STREAM|END_HEADERS, HPACK static entries :method POST, :scheme https, :path /.
        const headersFrame = Buffer.from([0, 0, 3, 0x1, 0x5, 0, 0, 0, 1, 0x83, 0x87, 0x84]);
        socket.write(Buffer.concat([PREFACE, headersFrame]));
      });
      socket.on("data", (chunk: Buffer) => {
        buffered = Buffer.concat([buffered, chunk]);
        while (buffered.length >= 9) {
          const length = buffered.readUIntBE(0, 3);
          if (buffered.length < 9 + length) break;
          types.push(buffered[3]!);
          buffered = buffered.subarray(9 + length);
        }
      });
      socket.on("close", () => resolve(types));
    });
    assert.equal(frames[0], 0x4, "the probe sees the server's SETTINGS");
    assert.ok(
      frames.includes(0x3) || frames.includes(0x7),
      `the stream is reset or the session ended: ${frames.join(",")}`,
    );
    assert.ok(!frames.includes(0x1), "no HEADERS (no response) ever comes back");
    const client = grpcClient(adminListener.port, cp);
    try {
      assert.notEqual(await systemTime(client, 1_000), status.OK);
    } finally {
      client.close();
    }
    assert.deepEqual(seenCns, [], "no handler ran for the control plane's leaf");
  });
});

void describe("what grpc-js used to answer by itself", () => {
  test("every unknown path is UNAUTHENTICATED with the fixed text, the path never echoed", async () => {
    const paths = [
      "/nope",
      "/clawker.admin.v1.AdminService/Nope",
      "/clawker.admin.v1.AdminService/listagents",
      "/../../etc/passwd",
      `/x/${"<script>".repeat(200)}`,
    ];
    for (const path of paths) {
      const answer = await rawCall(adminListener.port, path, Buffer.alloc(0));
      assert.deepEqual(
        [answer.grpcStatus, answer.grpcMessage],
        [status.UNAUTHENTICATED, reasonMessage.unmapped_method],
        path,
      );
      assert.ok(!answer.headerText.includes(path.slice(1, 20)), `${path} is not echoed`);
    }
    const known = await rawCall(
      adminListener.port,
      admin.AdminServiceService.listAgents.path,
      Buffer.alloc(0),
    );
    assert.deepEqual(
      [known.grpcStatus, known.grpcMessage],
      [status.UNAUTHENTICATED, reasonMessage.missing_token],
      "a known method without a token is UNAUTHENTICATED too",
    );
  });

  test("bytes that are not the request message are INVALID_ARGUMENT, not INTERNAL", async () => {
    const garbage = Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]);
    const answer = await rawCall(adminListener.port, admin.AdminServiceService.getSystemTime.path, garbage);
    assert.deepEqual(
      [answer.grpcStatus, answer.grpcMessage],
      [status.INVALID_ARGUMENT, CALL_GUARD_MESSAGES.undecodable],
    );
    assert.ok(counters.count("admin", "undecodable_request") >= 1);
    const good = await rawCall(
      adminListener.port,
      admin.AdminServiceService.getSystemTime.path,
      Buffer.alloc(0),
    );
    assert.equal(good.grpcStatus, status.OK, "an empty message is a valid GetSystemTimeRequest");
  });

  test("a call whose request never arrives ends DEADLINE_EXCEEDED after requestTimeoutMs", async () => {
    const started = Date.now();
    const answer = await rawCall(adminListener.port, admin.AdminServiceService.getSystemTime.path, undefined);
    const took = Date.now() - started;
    assert.deepEqual(
      [answer.grpcStatus, answer.grpcMessage],
      [status.DEADLINE_EXCEEDED, CALL_GUARD_MESSAGES.requestTimeout],
    );
    assert.ok(
      took >= LIMITS.requestTimeoutMs - 50 && took < LIMITS.requestTimeoutMs + 3_000,
      `took ${took} ms`,
    );
  });
});

/** Opens a connection and resolves when the server closes it, with how long that took. */
function heldUntilClosed(socket: Socket | tls.TLSSocket): Promise<number> {
  const started = Date.now();
  socket.on("error", () => {});
  socket.resume();
  return new Promise((resolve) => socket.on("close", () => resolve(Date.now() - started)));
}

void describe("timeouts and caps", () => {
  test("a TCP connection that never starts TLS is closed at the handshake timeout", async () => {
    const before = counters.count("admin", "handshake_timeout");
    const took = await heldUntilClosed(netConnect(adminListener.port, "127.0.0.1"));
    assert.ok(
      took >= LIMITS.handshakeTimeoutMs - 50 && took < LIMITS.handshakeTimeoutMs + 3_000,
      `took ${took}`,
    );
    await waitFor(() => counters.count("admin", "handshake_timeout") === before + 1, {
      what: "handshake_timeout counted",
    });
  });

  test("a TLS session (CLI leaf) that never sends the HTTP/2 preface is closed at the idle timeout", async () => {
    const socket = tls.connect({ ...tlsFor(pki.set.cli), port: adminListener.port });
    const took = await heldUntilClosed(socket);
    assert.ok(took >= LIMITS.idleTimeoutMs - 50 && took < LIMITS.idleTimeoutMs + 3_000, `took ${took}`);
  });

  test("over the handshake cap the oldest stranger is dropped, and the CLI still gets in", async () => {
    const before = counters.count("admin", "handshake_evicted");
    const held = Array.from({ length: 30 }, () => netConnect(adminListener.port, "127.0.0.1"));
    const closedAt = held.map((s) => heldUntilClosed(s));
    try {
      await waitFor(
        () => counters.count("admin", "handshake_evicted") - before >= 30 - LIMITS.maxHandshakes,
        {
          what: "evictions",
        },
      );
      assert.ok(adminListener.connections.handshakes <= LIMITS.maxHandshakes);
      const cli = grpcClient(adminListener.port, pki.set.cli);
      try {
        assert.equal(await systemTime(cli), status.OK, "the CLI is served while strangers hold sockets");
      } finally {
        cli.close();
      }
    } finally {
      for (const s of held) s.destroy();
      await Promise.all(closedAt);
    }
  });

  test("one agent certificate holds at most maxConnectionsPerPeer connections; another agent is unaffected", async () => {
    const before = counters.count("agent", "peer_cap");
    const sockets = [0, 1].map(() => tls.connect({ ...tlsFor(agentLeaf), port: agentListener.port }));
    try {
      await Promise.all(sockets.map((s) => new Promise((r) => s.once("secureConnect", r))));
      await waitFor(() => agentListener.connections.served >= 2, { what: "two served agent connections" });
      assert.equal(await greet(agentListener.port, agentLeaf), "closed", "a third from the same leaf");
      assert.equal(await greet(agentListener.port, otherAgentLeaf), "http2", "another agent's leaf");
      await waitFor(() => counters.count("agent", "peer_cap") === before + 1, { what: "peer_cap counted" });
    } finally {
      for (const s of sockets) s.destroy();
    }
  });

  test("served connections announce the stream cap in their SETTINGS", async () => {
    const session = http2.connect(`https://127.0.0.1:${adminListener.port}`, tlsFor(pki.set.cli));
    try {
      await new Promise<void>((resolve, reject) => {
        session.once("remoteSettings", () => resolve());
        session.once("error", reject);
      });
      assert.equal(session.remoteSettings.maxConcurrentStreams, LIMITS.maxStreamsPerConnection);
    } finally {
      session.destroy();
    }
  });
});

/** A listener whose GetSystemTime handler is held until `release()`; `inHandler` once a call is in it. */
function heldCallListener(name: string): {
  l: GrpcListener;
  inHandler: Promise<void>;
  release: () => void;
} {
  let entered!: () => void;
  const inHandler = new Promise<void>((resolve) => (entered = resolve));
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const impl = service() as Record<string, unknown>;
  impl["getSystemTime"] = (_call: unknown, cb: (e: null, r: admin.GetSystemTimeResult) => void) => {
    entered();
    void released.then(() => cb(null, { unixNanos: 7n }));
  };
  const l = listener({
    name,
    services: [
      { definition: admin.AdminServiceService, implementation: impl as UntypedServiceImplementation },
    ],
  });
  return { l, inHandler, release };
}

void test("a connection is closed idleTimeoutMs after its last call ended, never while a call is open", async () => {
  const { l, inHandler, release } = heldCallListener("idle");
  const port = await l.start();
  const session = http2.connect(`https://127.0.0.1:${port}`, tlsFor(pki.set.cli));
  try {
    session.on("error", () => {});
    let goawayAt: number | undefined;
    session.on("goaway", () => (goawayAt ??= Date.now()));
    const closed = new Promise<number>((resolve) => session.on("close", () => resolve(Date.now())));
    // One unary call (an empty request message), held open by its handler.
    const call = session.request({
      ":method": "POST",
      ":path": admin.AdminServiceService.getSystemTime.path,
      "content-type": "application/grpc",
      te: "trailers",
    });
    call.on("error", () => {});
    call.resume();
    const trailers = new Promise<http2.IncomingHttpHeaders>((resolve) => call.on("trailers", resolve));
    call.end(Buffer.from([0, 0, 0, 0, 0]));
    await inHandler;
    // Busy for three idle timeouts: the connection stays, and is never told to go.
    await new Promise((r) => setTimeout(r, 3 * LIMITS.idleTimeoutMs));
    assert.equal(goawayAt, undefined, "no GOAWAY while a call is open");
    assert.equal(l.connections.served, 1, "the busy connection is still served");
    release();
    assert.equal((await trailers)["grpc-status"], "0");
    const endedAt = Date.now();
    const closedAt = await Promise.race([
      closed,
      new Promise<undefined>((r) => setTimeout(() => r(undefined), LIMITS.idleTimeoutMs + 5_000)),
    ]);
    assert.ok(closedAt !== undefined, "the idle connection is closed");
    assert.ok(goawayAt !== undefined, "the idle connection is closed with a GOAWAY");
    const idleFor = closedAt - endedAt;
    assert.ok(
      idleFor >= LIMITS.idleTimeoutMs - 50 && idleFor < LIMITS.idleTimeoutMs + 3_000,
      `closed ${idleFor} ms after its last call`,
    );
    await waitFor(() => l.connections.served === 0, { what: "the served connection released" });
  } finally {
    session.destroy();
    await l.close(0);
  }
});

void test("close() drops every connection, frees the port and is idempotent", async () => {
  const l = listener({ name: "closing" });
  const port = await l.start();
  const idle = netConnect(port, "127.0.0.1");
  const served = tls.connect({ ...tlsFor(pki.set.cli), port });
  await new Promise((r) => served.once("secureConnect", r));
  await waitFor(() => l.connections.served === 1 && l.connections.handshakes === 1, { what: "both held" });
  const closed = Promise.all([heldUntilClosed(idle), heldUntilClosed(served)]);
  await Promise.all([l.close(200), l.close(200)]);
  await closed;
  assert.deepEqual(l.connections, { handshakes: 0, served: 0, probes: 0 });
  const again = createNetServer();
  await new Promise<void>((resolve, reject) => {
    again.once("error", reject);
    again.listen(port, "127.0.0.1", () => resolve());
  });
  await new Promise((r) => again.close(r));
});

void test("close() lets a call in flight deliver its answer, refuses new calls, and returns once the peer left", async () => {
  const { l, inHandler, release } = heldCallListener("graceful");
  const port = await l.start();
  const client = grpcClient(port, pki.set.cli);
  try {
    const answer = systemTime(client, 20_000);
    await inHandler;
    const began = Date.now();
    const closing = l.close(20_000);
    // The call is still running when the close began; its answer must still reach the client
    // (grpc-js's tryShutdown alone reported done at once and the socket was destroyed under it).
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(l.connections.served, 1, "the connection with a call in flight stays open");
    release();
    assert.equal(await answer, status.OK);
    await closing;
    assert.ok(Date.now() - began < 10_000, "the close returned once the client left, not at the grace");
    assert.deepEqual(l.connections, { handshakes: 0, served: 0, probes: 0 });
    assert.equal(await systemTime(client, 2_000), status.UNAVAILABLE, "nothing is served after close");
  } finally {
    client.close();
    release();
    await l.close(0);
  }
});

void test("a connection over its refusal share gets its refusals only after the tarpit delay", async (t) => {
  const l = listener({
    name: "tarpit",
    limits: { ...LIMITS, maxStreamsPerConnection: 20, refusalsPerSecond: 2, tarpitMs: 700 },
  });
  const port = await l.start();
  t.after(() => l.close(0));
  const timed = async (): Promise<number> => {
    const started = Date.now();
    const answer = await rawCall(port, "/no/such/method", Buffer.alloc(0));
    assert.equal(answer.grpcStatus, status.UNAUTHENTICATED);
    return Date.now() - started;
  };
  // rawCall opens a connection per call: the budget is per connection, so all of these are quick.
  for (let i = 0; i < 6; i++) assert.ok((await timed()) < 600, "a new connection starts with its share");
  const session = http2.connect(`https://127.0.0.1:${port}`, tlsFor(pki.set.cli));
  t.after(() => session.destroy());
  const oneOnSession = (): Promise<number> =>
    new Promise((resolve, reject) => {
      const started = Date.now();
      const req = session.request({
        ":method": "POST",
        ":path": "/no/such/method",
        "content-type": "application/grpc",
      });
      req.on("response", () => resolve(Date.now() - started));
      req.on("error", reject);
      req.end(Buffer.alloc(5));
    });
  const delays = await Promise.all(Array.from({ length: 10 }, () => oneOnSession()));
  const quick = delays.filter((d) => d < 500).length;
  assert.ok(quick >= 4 && quick <= 5, `the saved-up share (4) answers at once: ${delays.join(",")}`);
  assert.ok(delays.filter((d) => d >= 650).length >= 5, `the rest waits the tarpit: ${delays.join(",")}`);
  assert.ok(counters.count("tarpit", "tarpit") >= 5);
});

void test("recovery is the call guard's: a throw behind it and an UNKNOWN status are INTERNAL, a bare error gets its reason", async (t) => {
  const impl = service() as Record<string, unknown>;
  impl["getSystemTime"] = (_c: unknown, cb: (e: unknown) => void) =>
    cb({ code: status.UNKNOWN, details: "oops" });
  impl["listAgents"] = (_c: unknown, cb: (e: unknown) => void) =>
    cb({ code: status.NOT_FOUND, details: "none" });
  // An interceptor behind the guard that throws while the call's metadata passes.
  const throwing: GrpcListenerOptions["interceptors"] = [
    (_method, next) =>
      new ServerInterceptingCall(next, {
        start: (startNext) =>
          startNext({
            onReceiveMetadata: (md, mdNext) => {
              if (md.get("x-throw").length > 0) throw new Error("interceptor bug");
              mdNext(md);
            },
          }),
      }),
  ];
  const l = listener({
    name: "recovering",
    services: [
      { definition: admin.AdminServiceService, implementation: impl as UntypedServiceImplementation },
    ],
    interceptors: throwing,
  });
  const port = await l.start();
  t.after(() => l.close(0));
  const client = grpcClient(port, pki.set.cli);
  t.after(() => client.close());
  const call = (method: "getSystemTime" | "listAgents", md = new Metadata()) =>
    new Promise<ServiceError>((resolve, reject) => {
      const done = (err: ServiceError | null): void => {
        if (err === null) reject(new Error("answered OK"));
        else resolve(err);
      };
      if (method === "getSystemTime") client.getSystemTime({}, md, done);
      else client.listAgents({}, md, done);
    });
  const seen = async (err: Promise<ServiceError>) => {
    const e = await err;
    return [e.code, e.details, errorDetailOf(e)?.reason];
  };
  assert.deepEqual(await seen(call("getSystemTime")), [status.INTERNAL, reasonMessage.internal, "internal"]);
  assert.deepEqual(await seen(call("listAgents")), [status.NOT_FOUND, "none", "not_found"]);
  const md = new Metadata();
  md.set("x-throw", "1");
  assert.deepEqual(await seen(call("listAgents", md)), [status.INTERNAL, reasonMessage.internal, "internal"]);
  assert.ok(logLines.some((l) => l.includes('"event":"call_failed"') && l.includes("interceptor bug")));
  assert.ok(logLines.some((l) => l.includes('"event":"handler_failed"')));
  assert.ok(logLines.some((l) => l.includes('"event":"status_without_reason"')));
});
