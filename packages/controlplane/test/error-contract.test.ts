// The error contract (API.md §5, §6) at both daemon listeners, built as the daemon builds them
// (GrpcListener with its call guard, recovery, the ready gate on admin, the AuthInterceptor, the
// real AdminService and AgentService handlers) over real mTLS (TLS 1.3) on 127.0.0.1: each boundary
// is driven into each of its error classes, and every status's `grpc-status-details-bin` is decoded
// with the generated google.rpc.Status / ErrorInfo (test/harness/wire-error.ts), asserting code,
// text, reason and domain. Tokens are checked by the FAKE introspection server (test/fakes); the
// ExecAgent cases that need a Session mid-start or closing use a DIALER DOUBLE behind ExecAgentDeps'
// narrow interface (the real Dialer with a real clawkerd is exec-agent.test.ts's).
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import tls from "node:tls";
import { after, before, describe, test } from "node:test";
import {
  Metadata,
  ServerInterceptingCall,
  credentials,
  makeGenericClientConstructor,
  status,
  type Client,
  type ServiceError,
} from "@grpc/grpc-js";
import type { CertifiedKey } from "@clawker/adminclient";
import {
  ADMIN_ERRORS,
  AGENT_ERRORS,
  LABELS,
  admin,
  agent,
  type AdminReason,
  type AgentReason,
} from "@clawker/proto";
import pino from "pino";
import { ContainerAddressIndex } from "../src/agents/address-index.js";
import { agentService } from "../src/agents/agent-service.js";
import { DialerError, type Dialer } from "../src/agents/dialer.js";
import { IDENTITY_DENIED_MESSAGE, IdentityGate } from "../src/agents/identity-gate.js";
import { Registry } from "../src/agents/registry.js";
import {
  AuthInterceptor,
  CachingIntrospector,
  HttpIntrospector,
  ReadyGate,
  STARTING_UP_MESSAGE,
  reasonMessage,
  withRecovery,
} from "../src/auth/index.js";
import { adminService } from "../src/server/admin-service.js";
import { CALL_GUARD_MESSAGES } from "../src/server/call-guard.js";
import { execAgentHandler } from "../src/server/exec-agent.js";
import { GrpcListener, type ServiceBinding } from "../src/server/grpc-listener.js";
import { RefusalLog } from "../src/server/refusal-log.js";
import { SosBoard } from "../src/server/sos-board.js";
import {
  startFakeIntrospectionServer,
  type FakeIntrospectionServer,
} from "../../../test/fakes/fake-introspection-server.js";
import { mintTestTrust, type TestTrust } from "../../../test/harness/trust.js";
import { wireError, type WireError } from "../../../test/harness/wire-error.js";

tls.DEFAULT_MIN_VERSION = "TLSv1.3";

const DOMAIN = "clawker.dev";
const REQUEST_TIMEOUT_MS = 400;
const ID = (n: number): string => `${n}`.padStart(4, "0").padStart(64, "c");
/** Registered agents: `live` (a Session, exec fails with the dialer closing), `booting` (Session still starting), `idle` (no Session), and two containers sharing a prefix. */
const LIVE = ID(1);
const BOOTING = ID(2);
const IDLE = ID(3);
const TWIN_A = `${"d".repeat(12)}${"a".repeat(52)}`;
const TWIN_B = `${"d".repeat(12)}${"b".repeat(52)}`;

let pki: TestTrust;
let fake: FakeIntrospectionServer;
let tmp: string;
let registry: Registry;
let adminListener: GrpcListener;
let agentListener: GrpcListener;
let notReadyListener: GrpcListener;
let http: HttpIntrospector;
let agentLeaf: CertifiedKey;
let index: ContainerAddressIndex;
const refusals: RefusalLog[] = [];
const logLines: Array<Record<string, unknown>> = [];
const log = pino(
  { level: "debug" },
  new Writable({
    write(chunk: Buffer, _enc, cb) {
      logLines.push(JSON.parse(chunk.toString("utf8")) as Record<string, unknown>);
      cb();
    },
  }),
);

/** The dialer double: ExecAgentDeps' narrow Pick<Dialer, ...>, with one state per container. */
const dialer: Pick<Dialer, "exec" | "session" | "status"> = {
  status: (containerId) => {
    const state = containerId === LIVE ? "ready" : containerId === BOOTING ? "open" : undefined;
    return state === undefined ? undefined : { containerId, state, attempts: 1 };
  },
  session: () => undefined,
  exec: () => {
    throw new DialerError("closed", "the dialer is closed");
  },
};

function recovered(binding: ServiceBinding): ServiceBinding {
  return {
    definition: binding.definition,
    implementation: withRecovery(binding.definition, binding.implementation, log),
  };
}

function listener(
  name: "admin" | "agent",
  gate: ReadyGate | undefined,
  services: ServiceBinding[],
): GrpcListener {
  const refusalLog = new RefusalLog({ log, linesPerWindow: 10_000 });
  refusals.push(refusalLog);
  const auth = new AuthInterceptor({
    introspector: new CachingIntrospector(http),
    requiredClientId: name === "admin" ? "clawker-cli" : "clawker-agent",
    log,
    refusals: refusalLog,
    listener: name,
  });
  return new GrpcListener({
    name,
    host: "127.0.0.1",
    port: 0,
    tls: {
      ca: Buffer.from(pki.set.ca.certPem),
      cert: Buffer.from(pki.set.controlPlaneServer.certPem),
      key: Buffer.from(pki.set.controlPlaneServer.keyPem),
    },
    services,
    // As the daemon builds them: recovery, the ready gate and auth are the call guard's own
    // (server/call-guard.ts), in this order.
    gates: [...(gate === undefined ? [] : [gate.gate]), auth.gate],
    log,
    peers: { serve: name === "admin" ? "cli" : "agent" },
    limits: { requestTimeoutMs: REQUEST_TIMEOUT_MS },
    refusals: refusalLog,
  });
}

before(async () => {
  pki = await mintTestTrust();
  agentLeaf = await pki.issueAgent("proj.dev", ID(9));
  fake = await startFakeIntrospectionServer({
    cert: pki.set.controlPlaneServer.certPem,
    key: pki.set.controlPlaneServer.keyPem,
  });
  const exp = Math.floor(Date.now() / 1000) + 3600;
  const token = { active: true, exp, token_use: "access_token" } as const;
  fake.tokens.set("admin-token", { ...token, scope: "admin", client_id: "clawker-cli" });
  fake.tokens.set("agent-token", { ...token, scope: "agent:self:register", client_id: "clawker-agent" });
  fake.tokens.set("wrong-client", { ...token, scope: "admin", client_id: "clawker-agent" });
  fake.tokens.set("inactive-token", { active: false });
  http = new HttpIntrospector({ adminUrl: fake.url, ca: pki.set.ca.certPem, timeoutMs: 2_000 });

  tmp = mkdtempSync(join(tmpdir(), "error-contract-"));
  registry = new Registry(join(tmp, "registry.db"));
  for (const [containerId, agentName] of [
    [LIVE, "live"],
    [BOOTING, "booting"],
    [IDLE, "idle"],
    [TWIN_A, "twin-a"],
    [TWIN_B, "twin-b"],
  ] as const) {
    registry.register(
      { containerId, agentName, project: "proj", certThumbprint: containerId },
      1_700_000_000,
    );
  }
  const ready = new ReadyGate();
  ready.setReady();
  const adminBinding = adminService({
    // listAgents reads this: a dependency failing unexpectedly is the handler error recovery answers.
    agents: {
      list: () => {
        throw new Error("secret detail /var/lib/clawker");
      },
    },
    sos: new SosBoard(),
    exec: execAgentHandler({ dialer, registry, log }),
  });
  adminListener = listener("admin", ready, [recovered(adminBinding)]);
  notReadyListener = listener("admin", new ReadyGate(), [recovered(adminBinding)]);
  index = new ContainerAddressIndex({ inspect: () => Promise.resolve(undefined), log });
  // 127.0.0.1 is no agent container: every Register by a well-formed request is an identity refusal.
  index.put({
    id: ID(9),
    labels: { [LABELS.managed]: "true", [LABELS.purpose]: "controlplane" },
    addresses: ["127.0.0.1"],
  });
  const gate = new IdentityGate({ index, registry, log });
  agentListener = listener("agent", undefined, [recovered(agentService({ gate, log }))]);
  await Promise.all([adminListener.start(), notReadyListener.start(), agentListener.start()]);
});

after(async () => {
  await Promise.all([adminListener.close(0), notReadyListener.close(0), agentListener.close(0)]);
  for (const r of refusals) r.close();
  await http.close();
  registry.close();
  rmSync(tmp, { recursive: true, force: true });
  await fake.close();
  await pki.close();
});

const UNKNOWN_PATH = "/clawker.admin.v1.AdminService/NotAMethod";
const raw = makeGenericClientConstructor(
  {
    unknown: {
      path: UNKNOWN_PATH,
      requestStream: false,
      responseStream: false,
      requestSerialize: (b: Buffer) => b,
      requestDeserialize: (b: Buffer) => b,
      responseSerialize: (b: Buffer) => b,
      responseDeserialize: (b: Buffer) => b,
    },
  },
  "Raw",
);

function clientOf(port: number, who: CertifiedKey): Client {
  const creds = credentials.createSsl(
    Buffer.from(pki.set.ca.certPem),
    Buffer.from(who.keyPem),
    Buffer.from(who.certPem),
  );
  return new raw(`127.0.0.1:${port}`, creds, { "grpc.ssl_target_name_override": "localhost" });
}

function bearer(token: string | undefined): Metadata {
  const md = new Metadata();
  if (token !== undefined) md.set("authorization", `Bearer ${token}`);
  return md;
}

/** A unary call of `path` with these request bytes; the ServiceError it must end with. */
function unaryError(client: Client, path: string, body: Buffer, token?: string): Promise<ServiceError> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      body,
      bearer(token),
      { deadline: Date.now() + 10_000 },
      (err) => (err === null ? reject(new Error(`${path} succeeded`)) : resolve(err)),
    );
  });
}

/** A server-streaming call's end status (ExecAgent). */
function streamError(client: Client, path: string, body: Buffer, token?: string): Promise<ServiceError> {
  return new Promise((resolve, reject) => {
    const call = client.makeServerStreamRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      body,
      bearer(token),
      { deadline: Date.now() + 10_000 },
    );
    call.on("data", () => {});
    call.on("error", resolve);
    call.on("end", () => reject(new Error(`${path} ended without an error`)));
  });
}

/** A call to a unary method whose request never comes: a client stream that is never written. */
function silentError(client: Client, path: string, token: string): Promise<ServiceError> {
  return new Promise((resolve, reject) => {
    const call = client.makeClientStreamRequest(
      path,
      (b: Buffer) => b,
      (b: Buffer) => b,
      bearer(token),
      { deadline: Date.now() + 10_000 },
      (err) => (err === null ? reject(new Error("answered")) : resolve(err)),
    );
    void call;
  });
}

const exec = (request: Partial<admin.ExecAgentRequest>): Buffer =>
  Buffer.from(
    admin.ExecAgentRequest.encode(
      admin.ExecAgentRequest.fromPartial({ command: { stages: [{ argv: ["true"] }] }, ...request }),
    ).finish(),
  );

/** What one case must answer. */
type Expected<R extends string> = readonly [code: status, message: string, reason: R];

function assertWire(got: WireError, [code, message, reason]: Expected<string>, what: string): void {
  assert.deepEqual(
    { code: got.code, message: got.message, reason: got.reason, domain: got.domain },
    { code, message, reason, domain: DOMAIN },
    what,
  );
}

describe("the admin listener answers every reason of ADMIN_ERRORS with its ErrorInfo", () => {
  const seen = new Set<AdminReason>();
  const check = async (
    what: string,
    err: Promise<ServiceError>,
    expected: Expected<AdminReason>,
  ): Promise<void> => {
    assertWire(wireError(await err), expected, what);
    assert.equal(ADMIN_ERRORS.codes[expected[2]], expected[0], `${expected[2]}'s code is the table's`);
    seen.add(expected[2]);
  };
  const paths = admin.AdminServiceService;

  test("the call guard, auth, the ready gate and recovery", async () => {
    const c = clientOf(adminListener.port, pki.set.cli);
    const empty = Buffer.alloc(0);
    try {
      await check("unknown path", unaryError(c, UNKNOWN_PATH, empty, "admin-token"), [
        status.UNAUTHENTICATED,
        reasonMessage.unmapped_method,
        "unmapped_method",
      ]);
      await check("no token", unaryError(c, paths.listAgents.path, empty), [
        status.UNAUTHENTICATED,
        reasonMessage.missing_token,
        "missing_or_malformed_token",
      ]);
      await check("a malformed token", unaryError(c, paths.listAgents.path, empty, "not a token"), [
        status.UNAUTHENTICATED,
        reasonMessage.malformed_token,
        "missing_or_malformed_token",
      ]);
      await check("an inactive token", unaryError(c, paths.listAgents.path, empty, "inactive-token"), [
        status.UNAUTHENTICATED,
        reasonMessage.token_inactive,
        "token_inactive",
      ]);
      await check("another client's token", unaryError(c, paths.listAgents.path, empty, "wrong-client"), [
        status.PERMISSION_DENIED,
        reasonMessage.client_mismatch,
        "permission_denied",
      ]);
      fake.failWith = 500;
      try {
        await check("introspection fails", unaryError(c, paths.listAgents.path, empty, "fresh-token"), [
          status.UNAUTHENTICATED,
          reasonMessage.introspection_failed,
          "token_unverified",
        ]);
      } finally {
        fake.failWith = undefined;
      }
      await check(
        "undecodable request",
        unaryError(c, paths.getSystemTime.path, Buffer.from([0xff, 0xff, 0xff]), "admin-token"),
        [status.INVALID_ARGUMENT, CALL_GUARD_MESSAGES.undecodable, "undecodable_request"],
      );
      await check("request never sent", silentError(c, paths.getSystemTime.path, "admin-token"), [
        status.DEADLINE_EXCEEDED,
        CALL_GUARD_MESSAGES.requestTimeout,
        "request_timeout",
      ]);
      await check("a handler fails", unaryError(c, paths.listAgents.path, empty, "admin-token"), [
        status.INTERNAL,
        reasonMessage.internal,
        "internal",
      ]);
      await check(
        "a firewall RPC before the firewall",
        unaryError(c, paths.firewallStatus.path, empty, "admin-token"),
        [status.UNIMPLEMENTED, "the firewall is not available in this control plane", "unimplemented"],
      );
    } finally {
      c.close();
    }
    const early = clientOf(notReadyListener.port, pki.set.cli);
    try {
      await check("before ready", unaryError(early, paths.listAgents.path, Buffer.alloc(0), "admin-token"), [
        status.FAILED_PRECONDITION,
        STARTING_UP_MESSAGE,
        "starting_up",
      ]);
      // API.md §5: an unknown path is refused by the call guard itself, before the ready gate.
      await check("an unknown path before ready", unaryError(early, UNKNOWN_PATH, Buffer.alloc(0)), [
        status.UNAUTHENTICATED,
        reasonMessage.unmapped_method,
        "unmapped_method",
      ]);
    } finally {
      early.close();
    }
  });

  test("the ready gate, then auth, both inside the call guard: no grpc-js interceptor layer per call", async () => {
    // Before ready, a call without a token is answered by the ready gate: auth never looked.
    const early = clientOf(notReadyListener.port, pki.set.cli);
    try {
      await check("before ready, no token", unaryError(early, paths.listAgents.path, Buffer.alloc(0)), [
        status.FAILED_PRECONDITION,
        STARTING_UP_MESSAGE,
        "starting_up",
      ]);
    } finally {
      early.close();
    }
    // Each grpc-js interceptor layer (ServerInterceptingCall) starts once per call: the call guard
    // is one object of its own per call and the gates cost none (issue 15). Counted on a call that
    // passed both gates and failed in the handler (its INTERNAL, not a refusal).
    const start = Object.getOwnPropertyDescriptor(ServerInterceptingCall.prototype, "start")!;
    let layers = 0;
    Object.defineProperty(ServerInterceptingCall.prototype, "start", {
      ...start,
      value: function (this: ServerInterceptingCall, ...args: unknown[]): unknown {
        layers++;
        return (start.value as (...a: unknown[]) => unknown).apply(this, args);
      },
    });
    const c = clientOf(adminListener.port, pki.set.cli);
    try {
      await check("past both gates", unaryError(c, paths.listAgents.path, Buffer.alloc(0), "admin-token"), [
        status.INTERNAL,
        reasonMessage.internal,
        "internal",
      ]);
    } finally {
      Object.defineProperty(ServerInterceptingCall.prototype, "start", start);
      c.close();
    }
    assert.equal(layers, 0, "no grpc-js interceptor layer: the call guard is its own call object");
  });

  test("ExecAgent's refusals", async () => {
    const c = clientOf(adminListener.port, pki.set.cli);
    const path = admin.AdminServiceService.execAgent.path;
    const run = (r: Partial<admin.ExecAgentRequest>): Promise<ServiceError> =>
      streamError(c, path, exec(r), "admin-token");
    try {
      await check("both names", run({ containerId: LIVE, agentName: "live" }), [
        status.INVALID_ARGUMENT,
        "name the agent by container_id or by agent_name, not both",
        "invalid_argument",
      ]);
      await check("nobody", run({ agentName: "nobody", project: "proj" }), [
        status.NOT_FOUND,
        "no registered agent nobody (project proj)",
        "agent_not_found",
      ]);
      await check("a prefix of two", run({ containerId: "dddddddddddd" }), [
        status.FAILED_PRECONDITION,
        "container id prefix dddddddddddd matches several agents",
        "agent_ambiguous",
      ]);
      await check("an agent still starting", run({ containerId: BOOTING }), [
        status.FAILED_PRECONDITION,
        "the agent is still starting",
        "agent_starting",
      ]);
      await check("an agent without a Session", run({ containerId: IDLE }), [
        status.FAILED_PRECONDITION,
        "the agent has no open session",
        "no_session",
      ]);
      await check("the dialer closing", run({ containerId: LIVE }), [
        status.UNAVAILABLE,
        "the control plane is shutting down",
        "session_closed",
      ]);
    } finally {
      c.close();
    }
  });

  test("every admin reason was seen on the wire, none through the last-resort detail", () => {
    assert.deepEqual([...seen].sort(), [...ADMIN_ERRORS.reasons].sort());
    assert.deepEqual(
      logLines.filter((l) => l["event"] === "status_without_reason"),
      [],
    );
  });
});

describe("the agent listener answers every reason of AGENT_ERRORS with its ErrorInfo", () => {
  const seen = new Set<AgentReason>();
  const check = async (
    what: string,
    err: Promise<ServiceError>,
    expected: Expected<AgentReason>,
  ): Promise<void> => {
    assertWire(wireError(await err), expected, what);
    assert.equal(AGENT_ERRORS.codes[expected[2]], expected[0], `${expected[2]}'s code is the table's`);
    seen.add(expected[2]);
  };

  test("the call guard, auth, recovery and the identity gate", async () => {
    const c = clientOf(agentListener.port, agentLeaf);
    const path = agent.AgentServiceService.register.path;
    const register = (agentName: string): Buffer =>
      Buffer.from(agent.RegisterRequest.encode({ agentName, project: "proj" }).finish());
    try {
      await check("unknown path", unaryError(c, UNKNOWN_PATH, Buffer.alloc(0), "agent-token"), [
        status.UNAUTHENTICATED,
        reasonMessage.unmapped_method,
        "unmapped_method",
      ]);
      await check("no token", unaryError(c, path, register("dev")), [
        status.UNAUTHENTICATED,
        reasonMessage.missing_token,
        "missing_or_malformed_token",
      ]);
      await check("an inactive token", unaryError(c, path, register("dev"), "inactive-token"), [
        status.UNAUTHENTICATED,
        reasonMessage.token_inactive,
        "token_inactive",
      ]);
      await check("the CLI's token", unaryError(c, path, register("dev"), "admin-token"), [
        status.PERMISSION_DENIED,
        reasonMessage.insufficient_scope,
        "permission_denied",
      ]);
      fake.failWith = 503;
      try {
        await check("introspection fails", unaryError(c, path, register("dev"), "another-fresh-token"), [
          status.UNAUTHENTICATED,
          reasonMessage.introspection_failed,
          "token_unverified",
        ]);
      } finally {
        fake.failWith = undefined;
      }
      await check(
        "undecodable request",
        unaryError(c, path, Buffer.from([0xff, 0xff, 0xff]), "agent-token"),
        [status.INVALID_ARGUMENT, CALL_GUARD_MESSAGES.undecodable, "undecodable_request"],
      );
      await check("request never sent", silentError(c, path, "agent-token"), [
        status.DEADLINE_EXCEEDED,
        CALL_GUARD_MESSAGES.requestTimeout,
        "request_timeout",
      ]);
      await check("a malformed name", unaryError(c, path, register(""), "agent-token"), [
        status.INVALID_ARGUMENT,
        "agent_name is empty",
        "invalid_argument",
      ]);
      // The address is no agent container's: the log says not_agent_container, the wire says no more.
      await check("an identity the gate refuses", unaryError(c, path, register("dev"), "agent-token"), [
        status.PERMISSION_DENIED,
        IDENTITY_DENIED_MESSAGE,
        "identity_denied",
      ]);
      assert.ok(
        logLines.some((l) => l["event"] === "register_denied" && l["reason"] === "not_agent_container"),
      );
    } finally {
      c.close();
    }
  });

  test("a failure past the identity checks is internal, its text not sent", async () => {
    // Now 127.0.0.1 is this agent's container, so Register reaches the registry, which is closed.
    index.put({
      id: ID(9),
      labels: {
        [LABELS.managed]: "true",
        [LABELS.purpose]: "agent",
        [LABELS.agent]: "dev",
        [LABELS.project]: "proj",
      },
      addresses: ["127.0.0.1"],
    });
    registry.close();
    const c = clientOf(agentListener.port, agentLeaf);
    try {
      const body = Buffer.from(agent.RegisterRequest.encode({ agentName: "dev", project: "proj" }).finish());
      await check(
        "the registry fails",
        unaryError(c, agent.AgentServiceService.register.path, body, "agent-token"),
        [status.INTERNAL, "internal error", "internal"],
      );
    } finally {
      c.close();
    }
  });

  test("every agent reason was seen on the wire, none through the last-resort detail", () => {
    assert.deepEqual([...seen].sort(), [...AGENT_ERRORS.reasons].sort());
    assert.deepEqual(
      logLines.filter((l) => l["event"] === "status_without_reason"),
      [],
    );
  });
});
