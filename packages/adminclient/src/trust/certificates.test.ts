import assert from "node:assert/strict";
import { X509Certificate, createPrivateKey } from "node:crypto";
import { describe, it } from "node:test";
import { createCa, issueLeaf, EKU_CLIENT_AUTH, EKU_SERVER_AUTH, type LeafUsage } from "./certificates.js";
import { TrustError } from "./errors.js";

void describe("createCa", () => {
  void it("makes a self-signed P-256 CA with the given CN", async () => {
    const ca = await createCa({ commonName: "test-ca" });
    const cert = new X509Certificate(ca.certPem);
    assert.equal(cert.ca, true);
    assert.equal(cert.subject, "CN=test-ca");
    assert.equal(cert.issuer, "CN=test-ca");
    assert.ok(cert.verify(cert.publicKey));
    assert.equal(createPrivateKey(ca.keyPem).asymmetricKeyDetails?.namedCurve, "prime256v1");
  });

  void it("makes a P-384 CA on request, and leaves under it verify", async () => {
    const ca = await createCa({ curve: "P-384" });
    assert.equal(createPrivateKey(ca.keyPem).asymmetricKeyDetails?.namedCurve, "secp384r1");
    const leaf = await issueLeaf(ca, {
      commonName: "x",
      dnsNames: ["x.test"],
      usage: "server",
      curve: "P-384",
    });
    const cert = new X509Certificate(leaf.certPem);
    assert.ok(cert.verify(new X509Certificate(ca.certPem).publicKey));
    assert.equal(createPrivateKey(leaf.keyPem).asymmetricKeyDetails?.namedCurve, "secp384r1");
  });
});

void describe("issueLeaf", () => {
  void it("puts CN, DNS/IP/URI SANs and the validity into the certificate, chained to the CA", async () => {
    const ca = await createCa();
    const caCert = new X509Certificate(ca.certPem);
    const before = Date.now();
    const leaf = await issueLeaf(ca, {
      commonName: "svc",
      dnsNames: ["svc.test", "localhost"],
      ipAddresses: ["127.0.0.1", "::1"],
      uris: ["urn:example:thing"],
      usage: "server",
      validityMs: 3600_000,
    });
    const cert = new X509Certificate(leaf.certPem);
    assert.equal(cert.subject, "CN=svc");
    assert.equal(cert.ca, false);
    assert.equal(
      cert.subjectAltName,
      "DNS:svc.test, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, URI:urn:example:thing",
    );
    assert.ok(cert.checkIssued(caCert));
    assert.ok(cert.verify(caCert.publicKey));
    const lifetime = cert.validToDate.getTime() - before;
    assert.ok(lifetime > 3590_000 && lifetime <= 3601_000, `lifetime ${lifetime} ms`);
    assert.ok(cert.checkPrivateKey(createPrivateKey(leaf.keyPem)));
  });

  const usages: [LeafUsage, string[]][] = [
    ["server", [EKU_SERVER_AUTH]],
    ["client", [EKU_CLIENT_AUTH]],
    ["both", [EKU_SERVER_AUTH, EKU_CLIENT_AUTH]],
  ];
  for (const [usage, eku] of usages) {
    void it(`sets extended key usage for ${usage}`, async () => {
      const ca = await createCa();
      const leaf = await issueLeaf(ca, { commonName: "u", dnsNames: ["u.test"], usage });
      assert.deepEqual(new X509Certificate(leaf.certPem).keyUsage, eku);
    });
  }

  const bad: [string, Parameters<typeof issueLeaf>[1]][] = [
    ["a bad DNS name", { commonName: "x", dnsNames: ["bad name"], usage: "server" }],
    ["a bad IP", { commonName: "x", ipAddresses: ["300.1.1.1"], usage: "server" }],
    ["a URI without scheme", { commonName: "x", uris: ["no-scheme"], usage: "server" }],
    ["a server leaf without SANs", { commonName: "x", usage: "server" }],
    ["an empty CN", { commonName: "", dnsNames: ["x.test"], usage: "server" }],
    ["a negative validity", { commonName: "x", dnsNames: ["x.test"], usage: "server", validityMs: -1 }],
    [
      "a leaf outliving its CA",
      { commonName: "x", dnsNames: ["x.test"], usage: "server", validityMs: 20 * 365 * 86400_000 },
    ],
  ];
  for (const [what, options] of bad) {
    void it(`refuses ${what}`, async () => {
      const ca = await createCa();
      await assert.rejects(
        issueLeaf(ca, options),
        (err) => err instanceof TrustError && err.reason === "invalid_argument",
      );
    });
  }
});
