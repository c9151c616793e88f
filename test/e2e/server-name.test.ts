// The control plane's server certificate from `clawker auth init` answers to the names clients
// dial it by (API.md "Server names"): `clawker-controlplane` (the Go CLI's server name, the CP
// container's name on the agents' network) and `localhost`; any other name is refused at the TLS
// handshake. Real CLI process for `auth init`, real daemon, real mTLS 1.3 on its admin listener.
import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import {
  AdminError,
  CONTROLPLANE_CN,
  issueLeaf,
  loadTrustSet,
  mintTrustSet,
  openAdminClient,
  writeTrustSet,
  type TrustSet,
} from "@clawker/adminclient";
import { messageOf } from "@clawker/cli";
import { clawker } from "../harness/clawker-cli.js";
import { startControlPlane, type ControlPlane } from "../harness/controlplane.js";

/** Connects with `serverName` and returns the error the first call fails with. */
async function refusal(cp: ControlPlane, trust: TrustSet, serverName: string): Promise<AdminError> {
  const client = clientFor(cp, trust, serverName);
  try {
    const err = await client.clockSkew().then(
      () => assert.fail(`${serverName} is not in the certificate and must be refused`),
      (e: unknown) => e,
    );
    assert.ok(err instanceof AdminError, String(err));
    return err;
  } finally {
    await client.close();
  }
}

function clientFor(cp: ControlPlane, trust: TrustSet, serverName: string) {
  return openAdminClient({
    trust,
    target: `127.0.0.1:${cp.ports.admin}`,
    tokenEndpoint: cp.tokenEndpoint,
    serverName,
    deadlineMs: 5_000,
  });
}

test("auth init's server leaf is dialable as clawker-controlplane and localhost, not as another name", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "clawker-server-name-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const trustDir = join(dir, "trust");
  const init = await clawker(["auth", "init", "--dir", trustDir]);
  assert.equal(init.code, 0, init.stderr);
  const trust = await loadTrustSet(trustDir);
  assert.equal(
    new X509Certificate(trust.controlPlaneServer.certPem).subjectAltName,
    "DNS:localhost, DNS:clawker-controlplane, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1",
  );

  const cp = await startControlPlane({ trustDir, trustSet: trust });
  t.after(() => cp.close());

  for (const serverName of ["clawker-controlplane", "localhost"]) {
    const client = clientFor(cp, trust, serverName);
    t.after(() => client.close());
    const skew = await client.clockSkew();
    assert.ok(Math.abs(skew.skewMs) < 1_000, `${serverName}: skew ${skew.skewMs} ms on one machine`);
    assert.deepEqual(await client.listAgents(), [], `${serverName}: an authorized call goes through`);
  }

  const refused = await refusal(cp, trust, "not-in-the-cert.example");
  assert.equal(refused.reason, "unavailable");
  assert.match(refused.message, /server certificate is not valid for not-in-the-cert\.example/);
  // What the CLI prints for it says how to get the name into the certificate.
  assert.match(messageOf(refused), /clawker auth init --force --san not-in-the-cert\.example,/);
});

test("a trust set minted before clawker-controlplane was a default name is refused by it, with the remedy", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "clawker-server-name-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const trustDir = join(dir, "trust");
  const minted = await mintTrustSet();
  // The server leaf exactly as `auth init` issued it before: localhost and the loopback addresses.
  const old: TrustSet = {
    ...minted,
    controlPlaneServer: await issueLeaf(minted.ca, {
      commonName: CONTROLPLANE_CN,
      dnsNames: ["localhost"],
      ipAddresses: ["127.0.0.1", "::1"],
      usage: "server",
    }),
  };
  await writeTrustSet(trustDir, old);
  const cp = await startControlPlane({ trustDir, trustSet: old });
  t.after(() => cp.close());

  const client = clientFor(cp, old, "localhost");
  t.after(() => client.close());
  await client.clockSkew();
  const refused = await refusal(cp, old, "clawker-controlplane");
  assert.equal(refused.reason, "unavailable");
  assert.match(
    messageOf(refused),
    /server certificate is not valid for clawker-controlplane \(it names DNS:localhost, IP Address:127\.0\.0\.1, IP Address:0:0:0:0:0:0:0:1\); re-mint the trust set with clawker auth init --force, then restart/,
  );
});
