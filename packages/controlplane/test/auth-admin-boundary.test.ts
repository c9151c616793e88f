// The auth admin API is the daemon's alone (issue 10 §1), against the real daemon and its real
// embedded authserver: (1) another local user (`nobody`) cannot reach the admin API (EACCES on
// the socket; the authserver listens on no TCP port but the public one, which serves no admin
// route), so registering an `admin` client fails; (2) a squatter's `clawker-cli` (their key, a
// broader scope) already in the store when the daemon starts is replaced, logged as a security
// event, its token and key stop working, and the real CLI works again; (3) a client with scope
// `admin` under another id (registered while the admin API was reachable) administers nothing.
import assert from "node:assert/strict";
import {
  chmodSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { Metadata, status } from "@grpc/grpc-js";
import { dial, mintTrustSet, openAdminClient, TokenSource, writeTrustSet } from "@clawker/adminclient";
import { exportJWK, generateKeyPair } from "jose";
import { httpRequest } from "../src/http-client.js";
import { helperPid, startControlPlane, type ControlPlane } from "../../../test/harness/controlplane.js";
import { requires } from "../../../test/harness/preconditions.js";
import { runNodeAsSecondUser, secondUser } from "../../../test/harness/second-user.js";

/** TCP ports the process `pid` listens on (its socket inodes matched against /proc/net/tcp{,6}). */
function listeningTcpPorts(pid: number): number[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m !== null) inodes.add(m[1]!);
    } catch {
      // fd closed while listing
    }
  }
  const ports: number[] = [];
  for (const table of ["tcp", "tcp6"]) {
    for (const line of readFileSync(`/proc/${pid}/net/${table}`, "utf8").split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      // local_address is f[1] (hex addr:port), st is f[3] (0A = LISTEN), inode is f[9].
      if (f.length > 9 && f[3] === "0A" && inodes.has(f[9]!)) ports.push(parseInt(f[1]!.split(":")[1]!, 16));
    }
  }
  return ports.sort((a, b) => a - b);
}

/** A client registration body: what finding 1's local user sent. */
async function clientBody(clientId: string, scope: string) {
  const { publicKey, privateKey } = await generateKeyPair("ES256", { extractable: true });
  return {
    privateJwk: { ...(await exportJWK(privateKey)), alg: "ES256" },
    body: {
      client_id: clientId,
      grant_types: ["client_credentials"],
      token_endpoint_auth_method: "private_key_jwt",
      token_endpoint_auth_signing_alg: "ES256",
      scope,
      jwks: { keys: [{ ...(await exportJWK(publicKey)), alg: "ES256", use: "sig" }] },
    },
  };
}

/** What `nobody` runs: POST the client to the admin socket, and to the public TCP port. */
const ATTACK = `
import http from "node:http";
import https from "node:https";
const [socketPath, publicPort, body] = process.argv.slice(1);
const send = (mod, opts) =>
  new Promise((resolve) => {
    const req = mod.request(
      { ...opts, method: "POST", path: "/admin/clients", headers: { "content-type": "application/json" } },
      (res) => {
        let text = "";
        res.on("data", (c) => (text += c));
        res.on("end", () => resolve({ status: res.statusCode, body: text }));
      },
    );
    req.on("error", (err) => resolve({ error: err.code }));
    req.end(body);
  });
const socket = await send(http, { socketPath });
const publicPortAnswer = await send(https, { host: "127.0.0.1", port: Number(publicPort), rejectUnauthorized: false });
console.log(JSON.stringify({ uid: process.getuid(), socket, publicPort: publicPortAnswer }));
`;

async function adminCall(cp: ControlPlane, method: "GET" | "POST" | "DELETE", path: string, body?: unknown) {
  return httpRequest(new URL(path, cp.authAdminUrl), {
    method,
    signal: AbortSignal.timeout(5000),
    ...(body === undefined
      ? {}
      : { body: JSON.stringify(body), headers: { "content-type": "application/json" } }),
  });
}

function callListAgents(cp: ControlPlane, bearer: string): Promise<number> {
  const raw = dial({
    target: `127.0.0.1:${cp.ports.admin}`,
    tls: { ca: cp.trust!.ca.certPem, cert: cp.trust!.cli.certPem, key: cp.trust!.cli.keyPem },
  });
  const md = new Metadata();
  md.set("authorization", `Bearer ${bearer}`);
  return new Promise<number>((resolve) =>
    raw.listAgents({}, md, (err) => {
      raw.close();
      resolve(err === null ? status.OK : err.code);
    }),
  );
}

describe("the auth admin API is the daemon's alone", () => {
  test("finding 1 as another local user: the admin socket refuses nobody (EACCES), no admin TCP port exists, no admin client gets registered", async (t) => {
    if (!requires(t, ...secondUser)) return;
    // Every directory above the data dir is enterable by nobody, so what stops them is ours.
    const top = mkdtempSync(join(tmpdir(), "clawker-boundary-"));
    t.after(() => rmSync(top, { recursive: true, force: true }));
    chmodSync(top, 0o711);
    const dataDir = join(top, "data");
    mkdirSync(dataDir, { mode: 0o711 });
    const cp = await startControlPlane({ dataDir });
    t.after(() => cp.close());

    const authDir = join(dataDir, "authserver");
    const socket = join(authDir, "admin.sock");
    assert.equal(statSync(authDir).mode & 0o777, 0o700);
    assert.equal(lstatSync(socket).mode & 0o777, 0o600);
    for (const f of ["authserver.db", "authserver.db-wal", "authserver.db-shm", "signing-key.jwk"]) {
      assert.equal(statSync(join(authDir, f)).mode & 0o777, 0o600, f);
    }
    const publicPort = cp.ports.authPublic;
    assert.deepEqual(listeningTcpPorts(helperPid(cp, "authserver")), [publicPort], "no admin TCP listener");

    const { body } = await clientBody("evil", "admin");
    const attack = async () =>
      JSON.parse(await runNodeAsSecondUser(ATTACK, [socket, String(publicPort), JSON.stringify(body)])) as {
        uid: number;
        socket: { error?: string; status?: number };
        publicPort: { status?: number };
      };
    const got = await attack();
    assert.equal(got.uid, 65534);
    assert.deepEqual(got.socket, { error: "EACCES" });
    assert.equal(got.publicPort.status, 404, "the public port serves no admin route");

    // Defence in depth: with the directory opened up, the socket's own mode still refuses them.
    chmodSync(authDir, 0o711);
    try {
      assert.deepEqual((await attack()).socket, { error: "EACCES" });
    } finally {
      chmodSync(authDir, 0o700);
    }
    assert.equal((await adminCall(cp, "GET", "/admin/clients/evil")).status, 404, "nothing was registered");
  });

  test("finding 2: a squatter's clawker-cli in the store before start is replaced and logged; their key and token stop working, the real CLI works", async (t) => {
    const top = mkdtempSync(join(tmpdir(), "clawker-squat-"));
    t.after(() => rmSync(top, { recursive: true, force: true }));
    const dataDir = join(top, "data");
    const trustDir = join(top, "trust");
    const trustSet = await mintTrustSet();
    await writeTrustSet(trustDir, trustSet);
    const first = await startControlPlane({ dataDir, trustDir, trustSet });
    t.after(() => first.close());

    // The squatter's registration (what a local user did while the admin API was on loopback TCP).
    const squatter = await clientBody("clawker-cli", "admin agent:self:register");
    assert.equal((await adminCall(first, "DELETE", "/admin/clients/clawker-cli")).status, 204);
    assert.equal((await adminCall(first, "POST", "/admin/clients", squatter.body)).status, 201);
    const squatterTokens = new TokenSource({
      ca: trustSet.ca.certPem,
      signingKey: squatter.privateJwk,
      tokenEndpoint: first.tokenEndpoint,
      scope: "admin",
    });
    t.after(() => squatterTokens.close());
    const stolen = await squatterTokens.token();
    assert.equal(await callListAgents(first, stolen), status.OK, "the attack works without the fix");
    assert.equal(await first.close(), 0);

    const cp = await startControlPlane({ dataDir, trustDir, trustSet, ports: first.ports });
    t.after(() => cp.close());
    const replaced = cp.logs.filter((l) => l["event"] === "oauth_client_replaced");
    assert.equal(replaced.length, 1, JSON.stringify(replaced));
    assert.equal(replaced[0]!["clientId"], "clawker-cli");
    assert.equal(replaced[0]!["level"], "warn");
    assert.deepEqual(replaced[0]!["differences"], ["jwks", "scope"]);
    const keys = [squatter.body.jwks.keys[0]!.x, trustSet.signingKey.publicJwk["x"]];
    for (const x of keys) assert.ok(!JSON.stringify(cp.logs).includes(String(x)), "no key material logged");
    assert.deepEqual(cp.logs.find((l) => l["event"] === "clients_registered")?.["clients"], {
      "clawker-cli": "replaced",
      "clawker-agent": "exists",
    });

    assert.equal(await callListAgents(cp, stolen), status.UNAUTHENTICATED, "the squatter's token is dead");
    const again = new TokenSource({
      ca: trustSet.ca.certPem,
      signingKey: squatter.privateJwk,
      tokenEndpoint: cp.tokenEndpoint,
      scope: "admin",
    });
    t.after(() => again.close());
    await assert.rejects(again.token(), /invalid_client/, "the squatter's key gets no token");

    const client = openAdminClient({
      trust: trustSet,
      target: `127.0.0.1:${cp.ports.admin}`,
      tokenEndpoint: cp.tokenEndpoint,
    });
    t.after(() => client.close());
    assert.deepEqual(await client.listAgents(), [], "the real CLI is authorized again");
  });

  test("a client registered under another id with scope admin gets a token but is refused on the admin listener", async (t) => {
    const cp = await startControlPlane();
    t.after(() => cp.close());
    const rogue = await clientBody("rogue-admin", "admin");
    assert.equal((await adminCall(cp, "POST", "/admin/clients", rogue.body)).status, 201);
    const tokens = new TokenSource({
      ca: cp.trust!.ca.certPem,
      signingKey: rogue.privateJwk,
      tokenEndpoint: cp.tokenEndpoint,
      clientId: "rogue-admin",
      scope: "admin",
    });
    t.after(() => tokens.close());
    assert.equal(await callListAgents(cp, await tokens.token()), status.PERMISSION_DENIED);
  });
});
