import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { describe, it } from "node:test";
import { calculateJwkThumbprint } from "jose";
import { AGENT_LEAF_VALIDITY_MS, issueAgentLeaf, mintTrustSet } from "./bootstrap.js";
import { EKU_CLIENT_AUTH, EKU_SERVER_AUTH } from "./certificates.js";
import { TrustError } from "./errors.js";

void describe("mintTrustSet", () => {
  void it("mints a CA, the CP server/client leaves, the CLI leaf and the signing key", async () => {
    const set = await mintTrustSet({ serverNames: ["cp.internal", "10.1.2.3"] });
    const ca = new X509Certificate(set.ca.certPem);
    const server = new X509Certificate(set.controlPlaneServer.certPem);
    const cpClient = new X509Certificate(set.controlPlaneClient.certPem);
    const cli = new X509Certificate(set.cli.certPem);

    assert.equal(server.subject, "CN=clawker-controlplane");
    assert.equal(
      server.subjectAltName,
      "DNS:localhost, DNS:clawker-controlplane, DNS:cp.internal, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, IP Address:10.1.2.3",
    );
    assert.deepEqual(server.keyUsage, [EKU_SERVER_AUTH]);
    assert.equal(cpClient.subject, "CN=clawker-controlplane");
    assert.deepEqual(cpClient.keyUsage, [EKU_CLIENT_AUTH]);
    assert.equal(cli.subject, "CN=clawker-cli");
    assert.deepEqual(cli.keyUsage, [EKU_CLIENT_AUTH]);
    for (const leaf of [server, cpClient, cli]) {
      assert.ok(leaf.checkIssued(ca) && leaf.verify(ca.publicKey));
    }
    const { kid, privateJwk, publicJwk } = set.signingKey;
    assert.equal(
      kid,
      await calculateJwkThumbprint({ kty: "EC", crv: "P-256", x: publicJwk.x!, y: publicJwk.y! }),
    );
    assert.equal(publicJwk.kid, kid);
    assert.equal(privateJwk.kid, kid);
    assert.equal(publicJwk.alg, "ES256");
    assert.equal(publicJwk.d, undefined);
    assert.equal(typeof privateJwk.d, "string");
  });
});

void describe("issueAgentLeaf", () => {
  const id = "0123456789abcdef".repeat(4);

  void it("issues a 24 h clawkerd leaf with agent and container URI SANs, client+server auth", async () => {
    const set = await mintTrustSet();
    const before = Date.now();
    const leaf = new X509Certificate(
      (await issueAgentLeaf(set.ca, { agentName: "clawker.proj.dev", containerId: id })).certPem,
    );
    assert.equal(leaf.subject, "CN=clawker-clawkerd");
    assert.equal(
      leaf.subjectAltName,
      `URI:urn:clawker:agent:clawker.proj.dev, URI:urn:clawker:container:${id}`,
    );
    assert.deepEqual(leaf.keyUsage, [EKU_SERVER_AUTH, EKU_CLIENT_AUTH]);
    assert.ok(leaf.verify(new X509Certificate(set.ca.certPem).publicKey));
    const lifetime = leaf.validToDate.getTime() - before;
    assert.ok(Math.abs(lifetime - AGENT_LEAF_VALIDITY_MS) < 10_000, `lifetime ${lifetime} ms`);
  });

  for (const [agentName, containerId] of [
    ["bad name", id],
    ["ok", "XYZ"],
    ["ok", "ABCDEF012345"],
    ["-leading", id],
  ] as const) {
    void it(`refuses agent ${JSON.stringify(agentName)} / container ${JSON.stringify(containerId)}`, async () => {
      const set = await mintTrustSet();
      await assert.rejects(
        issueAgentLeaf(set.ca, { agentName, containerId }),
        (err) => err instanceof TrustError && err.reason === "invalid_argument",
      );
    });
  }
});
