// Who may open a Session: only a client leaf that chains to the bootstrap CA, has CN
// clawker-controlplane and the client-auth usage, over TLS 1.3. Everything else is refused
// before a handler runs.
import assert from "node:assert/strict";
import tls from "node:tls";
import { after, before, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { mintTrustSet } from "@clawker/adminclient";
import { trust } from "@clawker/proto";
import { waitFor } from "../../../test/harness/wait-for.js";
import { wireError } from "../../../test/harness/wire-error.js";
import { makeTestAgent, type TestAgent } from "./fixtures/bootstrap.js";
import { spawnClawkerd, type ClawkerdProcess } from "./fixtures/clawkerd-process.js";
import { SessionClient, type ClientIdentity } from "./fixtures/session-client.js";

let agent: TestAgent;
let proc: ClawkerdProcess;

before(async () => {
  agent = await makeTestAgent();
  proc = spawnClawkerd(agent);
  await proc.waitListening();
});

after(async () => {
  await proc?.kill();
  await agent?.close();
});

/** Opens a Session with `id` and sends Hello: "ok" on HelloAck, else the stream's status code. */
async function hello(id: ClientIdentity): Promise<"ok" | number> {
  const end = await helloStatus(id);
  return end === "ok" ? end : end.code;
}

/** Like `hello`, but the whole end status (with its trailers) of a refused Session. */
async function helloStatus(id: ClientIdentity): Promise<"ok" | Awaited<ReturnType<SessionClient["ended"]>>> {
  const c = new SessionClient(proc.address, id);
  try {
    await c.hello();
    return "ok";
  } catch {
    return await c.ended();
  } finally {
    c.close();
  }
}

function identity(
  cert: { certPem: string; keyPem: string },
  caPem = agent.trust.set.ca.certPem,
): ClientIdentity {
  return { caPem, certPem: cert.certPem, keyPem: cert.keyPem };
}

test("the control plane's client leaf opens a Session", async () => {
  assert.equal(await hello(identity(agent.trust.set.controlPlaneClient)), "ok");
});

test("another agent's leaf from the same CA (CN clawker-clawkerd) is refused: PERMISSION_DENIED", async () => {
  const other = await agent.trust.issueAgent("proj.other", "ab".repeat(32));
  const before = proc.lines.filter((l) => l["event"] === "session_opened").length;
  const end = await helloStatus(identity(other));
  assert.notEqual(end, "ok");
  // ErrorInfo says the class (not_control_plane), not which check failed; the log says that.
  assert.deepEqual(end === "ok" ? end : wireError(end), {
    code: 7,
    message: "only the control plane may call clawkerd",
    reason: "not_control_plane",
    domain: "clawker.dev",
    metadata: {},
  });
  // The log line travels through a pipe, the refusal through the network: poll for it.
  await waitFor(
    () => proc.lines.some((l) => l["event"] === "peer_refused" && l["reason"] === "wrong_common_name"),
    {
      what: "the peer_refused log line",
    },
  );
  assert.equal(
    proc.lines.filter((l) => l["event"] === "session_opened").length,
    before,
    "no session was opened",
  );
});

test("a clawker-controlplane leaf without the client-auth usage is refused", async () => {
  // The control plane's *server* leaf: right CA, right CN, serverAuth usage only.
  const code = await hello(identity(agent.trust.set.controlPlaneServer));
  assert.ok(code === 14 || code === 7, `expected a refusal, got ${code}`);
});

test("the CLI's client leaf (right CA, wrong CN) is refused", async () => {
  assert.equal(await hello(identity(agent.trust.set.cli)), 7);
});

test("a clawker-controlplane client leaf from another CA is refused at the handshake", async () => {
  const foreign = await mintTrustSet();
  const code = await hello(identity(foreign.controlPlaneClient));
  assert.equal(code, 14, "UNAVAILABLE: the TLS handshake failed");
});

function handshake(maxVersion: tls.SecureVersion): Promise<string> {
  const [host, port] = [
    proc.address.slice(0, proc.address.lastIndexOf(":")),
    Number(proc.address.split(":").pop()),
  ];
  const cp = agent.trust.set.controlPlaneClient;
  return new Promise((resolve) => {
    const sock = tls.connect({
      host,
      port,
      minVersion: "TLSv1.2",
      maxVersion,
      ca: agent.trust.set.ca.certPem,
      cert: cp.certPem,
      key: cp.keyPem,
      ALPNProtocols: ["h2"],
      checkServerIdentity: () => undefined,
    });
    sock.once("secureConnect", () => {
      resolve(`connected ${sock.getProtocol()}`);
      sock.destroy();
    });
    sock.once("error", (err: NodeJS.ErrnoException) => resolve(`error ${err.code}`));
  });
}

test("TLS 1.2 is refused; the same client on TLS 1.3 connects", async () => {
  assert.match(await handshake("TLSv1.2"), /^error ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION/);
  assert.equal(await handshake("TLSv1.3"), "connected TLSv1.3");
});

test("a client without a certificate is refused", async () => {
  const code = await hello({
    caPem: agent.trust.set.ca.certPem,
    // A throwaway self-signed pair the server does not trust stands in for "no certificate".
    ...(await (async () => {
      const lone = await mintTrustSet();
      return { certPem: lone.ca.certPem, keyPem: lone.ca.keyPem };
    })()),
  });
  assert.equal(code, 14);
});

/** InstallFirewallCa as `id`, over mTLS; the error status, or "ok". */
function installCa(id: ClientIdentity, pem: string): Promise<"ok" | grpc.ServiceError> {
  const client = new trust.FirewallTrustServiceClient(
    proc.address,
    grpc.credentials.createSsl(Buffer.from(id.caPem), Buffer.from(id.keyPem), Buffer.from(id.certPem), {
      checkServerIdentity: () => undefined,
    }),
  );
  return new Promise<"ok" | grpc.ServiceError>((resolve) =>
    client.installFirewallCa({ caBundlePem: pem }, (err) => {
      client.close();
      resolve(err ?? "ok");
    }),
  ).finally(() => client.close());
}

test("FirewallTrustService is behind the same pin: another agent's leaf is refused; key material is refused for the control plane too", async () => {
  // A certificate with its key appended: refused before anything is read or written.
  const keyed = agent.trust.set.ca.certPem + agent.trust.set.ca.keyPem;
  const other = await agent.trust.issueAgent("proj.other", "cd".repeat(32));
  const refused = await installCa(identity(other), agent.trust.set.ca.certPem);
  assert.notEqual(refused, "ok");
  assert.deepEqual(refused === "ok" ? refused : wireError(refused), {
    code: 7,
    message: "only the control plane may call clawkerd",
    reason: "not_control_plane",
    domain: "clawker.dev",
    metadata: {},
  });
  const keyRefused = await installCa(identity(agent.trust.set.controlPlaneClient), keyed);
  assert.notEqual(keyRefused, "ok");
  assert.deepEqual(keyRefused === "ok" ? keyRefused : wireError(keyRefused), {
    code: 3,
    message: "firewall CA bundle refused: it holds private key material",
    reason: "invalid_argument",
    domain: "clawker.dev",
    metadata: {},
  });
});
