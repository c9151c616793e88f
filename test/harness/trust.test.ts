// The harness's per-run trust material is valid: it loads back through the CLI's own loader, and
// its leaves complete real TLS 1.3 mutual handshakes on loopback in each role.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { stat } from "node:fs/promises";
import { once } from "node:events";
import { test } from "node:test";
import tls from "node:tls";
import { loadTrustSet, type CertifiedKey } from "@clawker/adminclient";
import { mintTestTrust, useTestTrust } from "./trust.js";

/** One mTLS handshake: returns what each side saw of the other, or throws. */
async function handshake(
  caPem: string,
  server: CertifiedKey,
  client: CertifiedKey,
  servername: string,
  checkServerIdentity?: (host: string, cert: tls.PeerCertificate) => Error | undefined,
): Promise<{ clientSubject: string; serverSubject: string; protocol: string | null }> {
  const srv = tls.createServer({
    key: server.keyPem,
    cert: server.certPem,
    ca: caPem,
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: "TLSv1.3",
  });
  const seen = new Promise<string>((resolve, reject) => {
    srv.once("secureConnection", (s) => {
      s.on("error", () => undefined); // the client may reset first; the outcome is decided below
      resolve(String(s.getPeerCertificate().subject.CN));
      s.end();
    });
    srv.on("tlsClientError", reject);
  });
  seen.catch(() => undefined); // awaited below only when the client side got through
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const { port } = srv.address() as { port: number };
  const sock = tls.connect({
    host: "127.0.0.1",
    port,
    servername,
    key: client.keyPem,
    cert: client.certPem,
    ca: caPem,
    minVersion: "TLSv1.3",
    ...(checkServerIdentity === undefined ? {} : { checkServerIdentity }),
  });
  try {
    await new Promise<void>((resolve, reject) => {
      sock.once("secureConnect", resolve);
      sock.on("error", reject); // stays attached: a late reset must not become an uncaught error
    });
    const serverSubject = String(sock.getPeerCertificate().subject.CN);
    return { clientSubject: await seen, serverSubject, protocol: sock.getProtocol() };
  } finally {
    sock.destroy();
    srv.close();
  }
}

void test("mintTestTrust: a valid set on disk, usable for mTLS in every role", async (t) => {
  const trust = await useTestTrust(t);
  assert.equal((await stat(trust.trustDir)).mode & 0o777, 0o700);
  assert.equal((await stat(trust.paths.caKey)).mode & 0o777, 0o600);
  assert.deepEqual(await loadTrustSet(trust.trustDir), trust.set);

  const { ca, controlPlaneServer, controlPlaneClient, cli } = trust.set;
  // The CLI dials the control plane by "localhost".
  assert.deepEqual(await handshake(ca.certPem, controlPlaneServer, cli, "localhost"), {
    clientSubject: "clawker-cli",
    serverSubject: "clawker-controlplane",
    protocol: "TLSv1.3",
  });
  // The control plane dials an agent's clawkerd, whose leaf is a server leaf too.
  const agent = await trust.issueAgent("clawker.proj.dev", "ab".repeat(32));
  // The CP checks the agent by its URI SAN, not by a host name.
  const agentUri = "URI:urn:clawker:agent:clawker.proj.dev";
  const byAgentUri = (_host: string, cert: tls.PeerCertificate): Error | undefined =>
    cert.subjectaltname?.split(", ").includes(agentUri) === true
      ? undefined
      : new Error("not the expected agent");
  const agentTls = await handshake(ca.certPem, agent, controlPlaneClient, "clawkerd", byAgentUri);
  assert.equal(agentTls.clientSubject, "clawker-controlplane");
  assert.equal(agentTls.serverSubject, "clawker-clawkerd");
  // A client-only leaf cannot serve: the CLI leaf lacks serverAuth.
  await assert.rejects(handshake(ca.certPem, cli, controlPlaneClient, "localhost"));
});

void test("mintTestTrust: close removes the temp dir", async () => {
  const trust = await mintTestTrust();
  assert.ok(existsSync(trust.paths.cliKey));
  await trust.close();
  assert.ok(!existsSync(trust.dir));
});
