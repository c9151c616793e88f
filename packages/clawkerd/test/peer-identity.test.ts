// The control-plane pin checks a connection's peer once: every call on a connection gets the
// first call's verdict (grpc-js would otherwise rebuild and parse the peer certificate per call),
// a refused connection stays refused call after call, and each connection is judged on its own.
import assert from "node:assert/strict";
import tls from "node:tls";
import { after, before, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { jobs } from "@clawker/proto";
import { createLogger } from "../src/log.js";
import { peerIdentityInterceptor } from "../src/peer-identity.js";
import { makeTestAgent, type TestAgent } from "./fixtures/bootstrap.js";

let agent: TestAgent;
let server: grpc.Server;
let port: number;

before(async () => {
  agent = await makeTestAgent();
  tls.DEFAULT_MIN_VERSION = "TLSv1.3";
  server = new grpc.Server({ interceptors: [peerIdentityInterceptor(createLogger("silent"))] });
  const unimplemented = (_call: unknown, cb: grpc.sendUnaryData<never>): void =>
    cb({ code: grpc.status.UNIMPLEMENTED, details: "not in this test" });
  server.addService(jobs.JobServiceService, {
    startJob: unimplemented,
    stopJob: unimplemented,
    getJobStatus: unimplemented,
    listJobs: (_call: unknown, cb: grpc.sendUnaryData<jobs.ListJobsResponse>) => cb(null, { jobs: [] }),
    watchJobOutput: (call: grpc.ServerWritableStream<unknown, unknown>) => call.end(),
  });
  const creds = grpc.ServerCredentials.createSsl(
    Buffer.from(agent.trust.set.ca.certPem),
    [{ private_key: Buffer.from(agent.leaf.keyPem), cert_chain: Buffer.from(agent.leaf.certPem) }],
    true,
  );
  port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", creds, (err, p) => (err === null ? resolve(p) : reject(err))),
  );
});

after(async () => {
  server?.forceShutdown();
  await agent?.close();
});

function client(cert: { certPem: string; keyPem: string }): jobs.JobServiceClient {
  return new jobs.JobServiceClient(
    `127.0.0.1:${port}`,
    grpc.credentials.createSsl(
      Buffer.from(agent.trust.set.ca.certPem),
      Buffer.from(cert.keyPem),
      Buffer.from(cert.certPem),
      { checkServerIdentity: () => undefined },
    ),
    { "grpc.ssl_target_name_override": "localhost" },
  );
}

/** The status code of one ListJobs call. */
function listCode(c: jobs.JobServiceClient): Promise<grpc.status> {
  return new Promise((resolve) =>
    c.listJobs({ agentName: "", project: "", state: 0 }, (err) => resolve(err?.code ?? grpc.status.OK)),
  );
}

test("the peer is checked once per connection; a refused connection stays refused", async () => {
  let reads = 0;
  const proto = tls.TLSSocket.prototype;
  const read = Reflect.get(proto, "getPeerCertificate") as (...args: unknown[]) => tls.PeerCertificate;
  proto.getPeerCertificate = function (this: tls.TLSSocket, ...args: unknown[]) {
    // The server's side only (the clients read the server's certificate too).
    if (this.localPort === port) reads++;
    return Reflect.apply(read, this, args);
  } as typeof proto.getPeerCertificate;
  const controlPlane = client(agent.trust.set.controlPlaneClient);
  // Another agent's leaf from the same CA: it passes TLS, the pin refuses it.
  const otherAgent = client(agent.leaf);
  const codes: grpc.status[] = [];
  try {
    for (let i = 0; i < 4; i++) {
      codes.push(await listCode(controlPlane));
      codes.push(await listCode(otherAgent));
    }
  } finally {
    Reflect.set(proto, "getPeerCertificate", read);
    controlPlane.close();
    otherAgent.close();
  }
  assert.deepEqual(
    codes,
    Array.from({ length: 4 }, () => [grpc.status.OK, grpc.status.PERMISSION_DENIED]).flat(),
  );
  assert.equal(reads, 2, "server-side getPeerCertificate calls: one per connection");
});
