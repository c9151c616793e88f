// AdminClient + dial against a real grpc-js mTLS server double (test/fixtures/admin-server-double.ts)
// and a real HTTPS token endpoint double: bearer tokens per call (none for GetSystemTime), typed
// errors from status codes, deadlines, aborts, WatchSOS as an async iterator, and the TLS checks.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { before, describe, test, type TestContext } from "node:test";
import { status, type ServerUnaryCall, type sendUnaryData, type ServerWritableStream } from "@grpc/grpc-js";
import { ADMIN_ERRORS, admin, type clawkerd } from "@clawker/proto";
import {
  ADMIN_CHANNEL_WINDOW_BYTES,
  AdminClient,
  cliTls,
  createCa,
  dial,
  dialSocket,
  issueLeaf,
  mintTrustSet,
  openAdminClient,
  TokenSource,
  type CertifiedKey,
  type TrustSet,
} from "../src/index.js";
import { waitFor } from "@clawker/test-support";
import { startAdminServerDouble, type AdminServerDouble } from "./fixtures/admin-server-double.js";
import { TokenEndpointDouble } from "./fixtures/token-endpoint-double.js";

let trust: TrustSet;
before(async () => {
  trust = await mintTrustSet();
});

const agent: admin.Agent = {
  agentName: "dev",
  containerId: "c".repeat(64),
  certThumbprint: "ab".repeat(32),
  registeredAtUnix: 1_700_000_000n,
  lastSeenUnix: 1_700_000_100n,
  project: "demo",
};

const handlers: Partial<admin.AdminServiceServer> = {
  getSystemTime: (_c: ServerUnaryCall<admin.GetSystemTimeRequest, admin.GetSystemTimeResult>, cb) =>
    cb(null, { unixNanos: BigInt(Date.now()) * 1_000_000n + 5_000_000_000n }),
  listAgents: (_c, cb: sendUnaryData<admin.ListAgentsResult>) => cb(null, { agents: [agent] }),
  // What our ready gate sends: the reason in ErrorInfo, whatever the text.
  firewallStatus: (_c, cb) => cb(ADMIN_ERRORS.status("starting_up", "control plane is starting up")),
  // A peer without ErrorInfo (an older Go control plane): the code decides, never the text.
  firewallRotateCa: (_c, cb) =>
    cb({ code: status.FAILED_PRECONDITION, details: "control plane is starting up" }),
  firewallListRules: (_c, cb) => cb({ code: status.UNAUTHENTICATED, details: "unauthenticated" }),
  firewallSyncRoutes: (_c, cb) => cb(ADMIN_ERRORS.status("token_inactive", "invalid or expired token")),
  firewallRemove: (_c, cb) => cb(ADMIN_ERRORS.status("unmapped_method", "method is not permitted")),
  firewallReload: (_c, cb) => cb({ code: status.PERMISSION_DENIED, details: "permission denied" }),
  // Never answers: for deadlines and aborts.
  firewallResolveHostname: () => undefined,
  watchSos: (call: ServerWritableStream<admin.WatchSOSRequest, admin.SOS>) => {
    call.write({ message: "bpffs is not delegated", kind: admin.SOSKind.SOS_KIND_BPFFS_DELEGATION });
    call.end();
  },
};

interface Rig {
  server: AdminServerDouble;
  endpoint: TokenEndpointDouble;
  client: AdminClient;
}

async function rig(
  t: TestContext,
  o: {
    serverLeaf?: CertifiedKey;
    clientLeaf?: CertifiedKey;
    serverName?: string;
    h?: Partial<admin.AdminServiceServer>;
    paceOutput?: (bytes: number) => void;
  } = {},
): Promise<Rig> {
  const leaf = o.serverLeaf ?? trust.controlPlaneServer;
  const server = await startAdminServerDouble(
    { caPem: trust.ca.certPem, certPem: leaf.certPem, keyPem: leaf.keyPem },
    o.h ?? handlers,
  );
  const endpoint = await TokenEndpointDouble.start({
    certPem: trust.controlPlaneServer.certPem,
    keyPem: trust.controlPlaneServer.keyPem,
    clientId: "clawker-cli",
    publicJwk: trust.signingKey.publicJwk,
  });
  const cli = o.clientLeaf ?? trust.cli;
  const tokens = new TokenSource({
    tokenEndpoint: endpoint.url,
    ca: trust.ca.certPem,
    signingKey: trust.signingKey.privateJwk,
  });
  const raw = dial({
    target: server.target,
    tls: { ca: trust.ca.certPem, cert: cli.certPem, key: cli.keyPem },
    ...(o.serverName === undefined ? {} : { serverName: o.serverName }),
  });
  const client = new AdminClient({
    client: raw,
    tokens,
    ...(o.paceOutput === undefined ? {} : { paceOutput: o.paceOutput }),
  });
  t.after(async () => {
    await client.close();
    await endpoint.close();
    await server.close();
  });
  return { server, endpoint, client };
}

describe("AdminClient", () => {
  test("GetSystemTime goes without a token; the skew is measured", async (t) => {
    const { server, endpoint, client } = await rig(t);
    const skew = await client.clockSkew();
    assert.ok(Math.abs(skew.skewMs - 5000) < 1000, `skew ${skew.skewMs}`);
    assert.ok(skew.rttMs >= 0);
    assert.equal(endpoint.requests.length, 0);
    assert.deepEqual(server.calls, [
      { method: "/clawker.admin.v1.AdminService/GetSystemTime", authorization: undefined },
    ]);
  });

  test("ListAgents carries the bearer token; the token is fetched once for many calls", async (t) => {
    const { server, endpoint, client } = await rig(t);
    assert.deepEqual(await client.listAgents(), [agent]);
    assert.deepEqual(await client.listAgents(), [agent]);
    assert.equal(endpoint.requests.length, 1);
    assert.deepEqual(
      server.calls.map((c) => c.authorization),
      ["Bearer token-1", "Bearer token-1"],
    );
  });

  test("status codes become typed AdminErrors with the server's message", async (t) => {
    const { client } = await rig(t);
    await assert.rejects(client.firewallStatus(), {
      name: "AdminError",
      reason: "starting_up",
      code: status.FAILED_PRECONDITION,
      message: "control plane is starting up",
      method: "/clawker.admin.v1.AdminService/FirewallStatus",
    });
    await assert.rejects(client.firewallReload(), {
      reason: "permission_denied",
      message: "permission denied",
    });
    await assert.rejects(client.firewallInit(), { reason: "unimplemented" });
    await assert.rejects(client.firewallRotateCa(), {
      reason: "failed_precondition",
      domain: undefined,
      message: "control plane is starting up",
    });
  });

  test("UNAUTHENTICATED drops the cached token so the next call fetches a new one", async (t) => {
    const { endpoint, client } = await rig(t);
    await assert.rejects(client.firewallListRules(), { reason: "unauthenticated" });
    await client.listAgents();
    assert.equal(endpoint.requests.length, 2);
    // Our control plane says why: a refused token is dropped, an unmapped method keeps it.
    await assert.rejects(client.firewallSyncRoutes([]), { reason: "token_inactive", domain: "clawker.dev" });
    await client.listAgents();
    assert.equal(endpoint.requests.length, 3);
    await assert.rejects(client.firewallRemove(), { reason: "unmapped_method" });
    await client.listAgents();
    assert.equal(endpoint.requests.length, 3);
  });

  test("a token failure surfaces as TokenError before any RPC is sent", async (t) => {
    const { server, endpoint, client } = await rig(t);
    endpoint.respond = () => ({ status: 401, body: { error: "invalid_client" } });
    await assert.rejects(client.listAgents(), {
      name: "TokenError",
      reason: "token_request_failed",
      status: 401,
    });
    assert.equal(server.calls.length, 0);
  });

  test("the default deadline applies per call", async (t) => {
    const { client } = await rig(t);
    await assert.rejects(client.firewallResolveHostname("example.com", { deadlineMs: 200 }), {
      reason: "deadline_exceeded",
    });
  });

  test("aborting cancels the call", async (t) => {
    const { server, client } = await rig(t);
    const ac = new AbortController();
    const pending = client.firewallResolveHostname("example.com", { signal: ac.signal });
    while (server.calls.length === 0) await new Promise((r) => setImmediate(r));
    ac.abort();
    await assert.rejects(pending, { reason: "cancelled" });
  });

  test("WatchSOS is an async iterator that ends cleanly", async (t) => {
    const { server, client } = await rig(t);
    const seen: admin.SOS[] = [];
    for await (const sos of client.watchSos()) seen.push(sos);
    assert.deepEqual(seen, [
      { message: "bpffs is not delegated", kind: admin.SOSKind.SOS_KIND_BPFFS_DELEGATION },
    ]);
    assert.equal(server.calls[0]?.authorization, "Bearer token-1");
  });

  test("WatchSOS errors are typed", async (t) => {
    const { client } = await rig(t, {
      h: { watchSos: (call) => call.emit("error", { code: status.PERMISSION_DENIED, details: "no" }) },
    });
    await assert.rejects(
      (async () => {
        for await (const _ of client.watchSos()) void _;
      })(),
      { name: "AdminError", reason: "permission_denied" },
    );
  });

  test("a server leaf that is not the control plane's (other CN) is refused", async (t) => {
    const impostor = await issueLeaf(trust.ca, {
      commonName: "someone-else",
      ipAddresses: ["127.0.0.1"],
      usage: "server",
    });
    const { server, client } = await rig(t, { serverLeaf: impostor });
    await assert.rejects(client.getSystemTime({ deadlineMs: 3000 }), { reason: "unavailable" });
    assert.equal(server.calls.length, 0);
  });

  test("a server leaf from another CA is refused", async (t) => {
    const ca = await createCa();
    const foreign = await issueLeaf(ca, {
      commonName: "clawker-controlplane",
      ipAddresses: ["127.0.0.1"],
      usage: "server",
    });
    const { client } = await rig(t, { serverLeaf: foreign });
    await assert.rejects(client.getSystemTime({ deadlineMs: 3000 }), { reason: "unavailable" });
  });

  test("a client leaf from another CA is refused by the server", async (t) => {
    const ca = await createCa();
    const foreign = await issueLeaf(ca, { commonName: "clawker-cli", usage: "client" });
    const { server, client } = await rig(t, { clientLeaf: foreign });
    await assert.rejects(client.getSystemTime({ deadlineMs: 3000 }), { reason: "unavailable" });
    assert.equal(server.calls.length, 0);
  });

  test("serverName checks the certificate against another SAN (localhost)", async (t) => {
    const { client } = await rig(t, { serverName: "localhost" });
    await client.getSystemTime();
    const { client: wrong } = await rig(t, { serverName: "not-in-the-sans.example" });
    await assert.rejects(wrong.getSystemTime({ deadlineMs: 3000 }), { reason: "unavailable" });
  });

  test("dial({ tokens }) call credentials attach the bearer token, except for GetSystemTime", async (t) => {
    const { server, endpoint } = await rig(t);
    const tokens = new TokenSource({
      tokenEndpoint: endpoint.url,
      ca: trust.ca.certPem,
      signingKey: trust.signingKey.privateJwk,
    });
    const raw = dial({
      target: server.target,
      tls: { ca: trust.ca.certPem, cert: trust.cli.certPem, key: trust.cli.keyPem },
      tokens,
    });
    t.after(async () => {
      raw.close();
      await tokens.close();
    });
    const unary = <T>(f: (cb: (err: Error | null, res?: T) => void) => void): Promise<T> =>
      new Promise((resolve, reject) => f((err, res) => (err === null ? resolve(res!) : reject(err))));
    await unary<admin.GetSystemTimeResult>((cb) => raw.getSystemTime({}, cb));
    const res = await unary<admin.ListAgentsResult>((cb) => raw.listAgents({}, cb));
    assert.deepEqual(res.agents, [agent]);
    assert.deepEqual(
      server.calls.map((c) => [c.method.split("/").pop(), c.authorization]),
      [
        ["GetSystemTime", undefined],
        ["ListAgents", "Bearer token-1"],
      ],
    );
    // A token failure inside call credentials fails the call (grpc-js reports it as UNKNOWN).
    tokens.invalidate();
    endpoint.respond = () => ({ status: 401, body: { error: "invalid_client" } });
    await assert.rejects(
      unary((cb) => raw.listAgents({}, cb)),
      /invalid_client/,
    );
    assert.equal(server.calls.length, 2, "no RPC reached the server without a token");
  });

  test("openAdminClient dials from a trust set; close() is idempotent", async (t) => {
    const server = await startAdminServerDouble(
      {
        caPem: trust.ca.certPem,
        certPem: trust.controlPlaneServer.certPem,
        keyPem: trust.controlPlaneServer.keyPem,
      },
      handlers,
    );
    t.after(() => server.close());
    const client = openAdminClient({ trust, target: server.target });
    await client.getSystemTime();
    await client.close();
    await client.close();
    await assert.rejects(client.getSystemTime(), { reason: "cancelled" });
  });

  test("ExecAgent yields every Response in order and tells paceOutput each output chunk's size", async (t) => {
    const chunks = [Buffer.alloc(32 << 10, 0x61), Buffer.from("tail\n")];
    const paced: number[] = [];
    const { server, endpoint, client } = await rig(t, {
      h: {
        ...handlers,
        execAgent: (call: ServerWritableStream<admin.ExecAgentRequest, clawkerd.Response>) => {
          const id = `exec-${call.request.agentName}`;
          call.write({ commandId: id, payload: { $case: "started", value: {} } });
          for (const data of chunks)
            call.write({ commandId: id, payload: { $case: "output", value: { data } } });
          call.write({ commandId: id, payload: { $case: "done", value: { finalExitCode: 0 } } });
          call.end();
        },
      },
      paceOutput: (bytes) => paced.push(bytes),
    });
    const seen: string[] = [];
    const data: Buffer[] = [];
    for await (const r of client.execAgent({
      containerId: "",
      agentName: "dev",
      project: "",
      command: undefined,
    })) {
      seen.push(`${r.commandId}:${r.payload?.$case}`);
      if (r.payload?.$case === "output") data.push(r.payload.value.data);
    }
    assert.deepEqual(seen, ["exec-dev:started", "exec-dev:output", "exec-dev:output", "exec-dev:done"]);
    assert.deepEqual(Buffer.concat(data), Buffer.concat(chunks));
    assert.deepEqual(paced, [32 << 10, 5]);
    assert.equal(endpoint.requests.length, 1);
    assert.equal(server.calls.at(-1)?.authorization, "Bearer token-1");
  });

  test("dial and dialSocket offer the control plane an ADMIN_CHANNEL_WINDOW_BYTES HTTP/2 window", async (t) => {
    // ExecAgent streams 32 KiB messages: grpc-js's 64 KiB default made the control plane wait for
    // a WINDOW_UPDATE every two of them. A bare HTTP/2 server reads what the channel advertises.
    const observe = (server: http2.Http2Server | http2.Http2SecureServer) => {
      const seen: { settings?: http2.Settings; session?: http2.Http2Session } = {};
      server.on("session", (s: http2.Http2Session) => {
        seen.session = s;
        s.once("remoteSettings", (settings) => (seen.settings = settings));
        t.after(() => s.destroy());
      });
      server.on("stream", () => undefined);
      return seen;
    };
    const check = async (
      seen: ReturnType<typeof observe>,
      client: { waitForReady(deadline: number, cb: (err?: Error) => void): void; close(): void },
    ): Promise<void> => {
      client.waitForReady(Date.now() + 10_000, () => undefined);
      await waitFor(() => seen.settings !== undefined, { what: "the channel's SETTINGS" });
      assert.equal(seen.settings?.initialWindowSize, ADMIN_CHANNEL_WINDOW_BYTES);
      await waitFor(() => (seen.session?.state.remoteWindowSize ?? 0) >= ADMIN_CHANNEL_WINDOW_BYTES, {
        what: "the connection's window",
      });
      client.close();
    };
    const tlsServer = http2.createSecureServer({
      ca: trust.ca.certPem,
      cert: trust.controlPlaneServer.certPem,
      key: trust.controlPlaneServer.keyPem,
      requestCert: true,
      minVersion: "TLSv1.3",
    });
    const overTls = observe(tlsServer);
    await new Promise<void>((r) => tlsServer.listen(0, "127.0.0.1", r));
    t.after(() => tlsServer.close());
    const port = (tlsServer.address() as AddressInfo).port;
    await check(overTls, dial({ tls: cliTls(trust), target: `127.0.0.1:${port}` }));

    const dir = mkdtempSync(join(tmpdir(), "admin-window-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const plain = http2.createServer();
    const overSocket = observe(plain);
    const path = join(dir, "admin.sock");
    await new Promise<void>((r) => plain.listen(path, r));
    t.after(() => plain.close());
    await check(overSocket, dialSocket(path));
  });
});
