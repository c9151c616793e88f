// peerOf on certificates minted by the CLI's own library, read the way the listener reads them
// (node's getPeerCertificate shape, from a real X509Certificate).
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import type { PeerCertificate } from "node:tls";
import { test } from "node:test";
import { CLI_CN as ADMINCLIENT_CLI_CN, issueLeaf, type CertifiedKey } from "@clawker/adminclient";
import { CLI_CN, peerOf } from "../src/server/peer-role.js";
import { mintTestTrust } from "../../../test/harness/trust.js";

/** The fields peerOf reads, as node's getPeerCertificate() would return them for this leaf. */
function asPeer(leaf: CertifiedKey): Pick<PeerCertificate, "raw" | "subject" | "subjectaltname"> {
  const x = new X509Certificate(leaf.certPem);
  const subject: Record<string, string | string[]> = {};
  for (const line of x.subject.split("\n")) {
    const [k, v = ""] = line.split("=", 2) as [string, string?];
    const prev = subject[k];
    subject[k] = prev === undefined ? v : [...(Array.isArray(prev) ? prev : [prev]), v];
  }
  return {
    raw: x.raw,
    subject,
    subjectaltname: x.subjectAltName ?? "",
  };
}

void test("the CLI, an agent and the control plane each get their role; other leaves get none", async (t) => {
  assert.equal(CLI_CN, ADMINCLIENT_CLI_CN, "the CN the CLI mints");
  const pki = await mintTestTrust();
  t.after(() => pki.close());
  const agent = await pki.issueAgent("proj.dev", "c".repeat(64));
  const cases: Array<[string, CertifiedKey, string | undefined]> = [
    ["CLI leaf", pki.set.cli, "cli"],
    ["agent leaf", agent, "agent"],
    ["control plane client leaf", pki.set.controlPlaneClient, "controlplane"],
    ["control plane server leaf", pki.set.controlPlaneServer, "controlplane"],
    [
      "CLI CN with an agent SAN",
      await issueLeaf(pki.set.ca, {
        commonName: "clawker-cli",
        uris: ["urn:clawker:agent:x"],
        usage: "client",
      }),
      undefined,
    ],
    [
      "clawkerd CN without a container SAN",
      await issueLeaf(pki.set.ca, {
        commonName: "clawker-clawkerd",
        uris: ["urn:clawker:agent:x"],
        usage: "client",
      }),
      undefined,
    ],
    ["another CN", await issueLeaf(pki.set.ca, { commonName: "someone-else", usage: "client" }), undefined],
  ];
  for (const [name, leaf, role] of cases) assert.equal(peerOf(asPeer(leaf))?.role, role, name);
  const a = peerOf(asPeer(agent));
  assert.match(a?.thumbprint ?? "", /^[0-9a-f]{64}$/, "per-peer caps count by the leaf's SHA-256");
  assert.equal(peerOf({ raw: Buffer.alloc(0), subject: {}, subjectaltname: "" }), undefined);
});
