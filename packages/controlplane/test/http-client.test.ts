// The daemon's HTTPS client against real TLS servers on loopback: TLS 1.3 only, the server
// verified against the CA we give it, mTLS leaves presented, bodies bounded, aborts prompt, and
// a keep-alive pool that reuses one connection. And plain HTTP through a real Unix socket for
// `http+unix:` URLs, pooled the same way.
import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { createServer, type Server, type ServerOptions } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { TLSSocket } from "node:tls";
import { mintTrustSet } from "@clawker/adminclient";
import {
  agentFor,
  httpRequest,
  httpsAgent,
  ResponseTooLargeError,
  unixSocketPathOf,
  unixSocketUrl,
} from "../src/http-client.js";
import { mintTestTrust, type TestTrust } from "../../../test/harness/trust.js";

let pki: TestTrust;
let otherCa: string;
const servers: Server[] = [];

before(async () => {
  pki = await mintTestTrust();
  otherCa = (await mintTrustSet()).ca.certPem;
});
after(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    s.close();
  }
  await pki.close();
});

async function serve(
  handler: Parameters<typeof createServer>[1],
  options: ServerOptions = {},
): Promise<{ url: string; server: Server }> {
  const server = createServer(
    { cert: pki.set.controlPlaneServer.certPem, key: pki.set.controlPlaneServer.keyPem, ...options },
    handler,
  );
  servers.push(server);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { url: `https://127.0.0.1:${(server.address() as AddressInfo).port}/x`, server };
}

const signal = (): AbortSignal => AbortSignal.timeout(5000);

test("a verified TLS 1.3 request: status and body come back, the request body and headers arrive", async () => {
  let seen = "";
  const { url } = await serve((req, res) => {
    req.setEncoding("utf8");
    req.on("data", (d: string) => (seen += d));
    req.on("end", () =>
      res.writeHead(201, { "content-type": "text/plain" }).end(`${req.method} ${String(req.headers["x-k"])}`),
    );
  });
  const res = await httpRequest(url, {
    method: "POST",
    headers: { "x-k": "v" },
    body: "a=1&b=2",
    tls: { ca: pki.set.ca.certPem },
    signal: signal(),
  });
  assert.deepEqual(res, { status: 201, body: "POST v" });
  assert.equal(seen, "a=1&b=2");
});

test("a server certificate from another CA, or a TLS 1.2-only server, is refused", async () => {
  const { url } = await serve((_req, res) => res.end("no"));
  await assert.rejects(
    httpRequest(url, { tls: { ca: otherCa }, signal: signal() }),
    (err: NodeJS.ErrnoException) => /certificate/i.test(`${err.code} ${err.message}`),
  );
  const old = await serve((_req, res) => res.end("old"), { maxVersion: "TLSv1.2" });
  await assert.rejects(
    httpRequest(old.url, { tls: { ca: pki.set.ca.certPem }, signal: signal() }),
    (err: NodeJS.ErrnoException) => /version|protocol/i.test(`${err.code} ${err.message}`),
  );
});

test("a client leaf is presented to an mTLS server", async () => {
  const { url } = await serve(
    (req, res) => {
      const peer = (req.socket as TLSSocket).getPeerCertificate();
      res.end(peer.subject.CN);
    },
    { ca: pki.set.ca.certPem, requestCert: true, rejectUnauthorized: true },
  );
  const res = await httpRequest(url, {
    tls: {
      ca: pki.set.ca.certPem,
      cert: pki.set.controlPlaneClient.certPem,
      key: pki.set.controlPlaneClient.keyPem,
    },
    signal: signal(),
  });
  assert.equal(res.status, 200);
  assert.equal(res.body, "clawker-controlplane");
});

test("a body over the bound is a ResponseTooLargeError; an abort rejects promptly", async () => {
  const big = await serve((_req, res) => res.end(Buffer.alloc(200_000, 0x61)));
  await assert.rejects(
    httpRequest(big.url, { tls: { ca: pki.set.ca.certPem }, signal: signal(), maxBodyBytes: 100_000 }),
    ResponseTooLargeError,
  );
  const ok = await httpRequest(big.url, {
    tls: { ca: pki.set.ca.certPem },
    signal: signal(),
    maxBodyBytes: 200_000,
  });
  assert.equal(ok.body.length, 200_000);

  const silent = await serve(() => undefined);
  const started = performance.now();
  await assert.rejects(
    httpRequest(silent.url, { tls: { ca: pki.set.ca.certPem }, signal: AbortSignal.timeout(100) }),
    (err: Error) => err.name === "AbortError",
  );
  assert.ok(performance.now() - started < 2000);
});

test("a keep-alive pool reuses one connection for sequential requests", async () => {
  let connections = 0;
  const { url, server } = await serve((_req, res) => res.end("ok"));
  server.on("secureConnection", () => connections++);
  const agent = httpsAgent({ ca: pki.set.ca.certPem });
  try {
    for (let i = 0; i < 5; i++)
      assert.equal((await httpRequest(url, { agent, signal: signal() })).body, "ok");
  } finally {
    agent.destroy();
  }
  assert.equal(connections, 1);
});

async function serveOnSocket(
  t: { after: (fn: () => unknown) => void },
  handler: Parameters<typeof createHttpServer>[1],
): Promise<{ url: string; server: HttpServer; path: string }> {
  const dir = mkdtempSync(join(tmpdir(), "http-client-sock "));
  const path = join(dir, "api.sock");
  const server = createHttpServer(handler);
  server.listen(path);
  await once(server, "listening");
  t.after(() => {
    server.closeAllConnections();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { url: unixSocketUrl(path), server, path };
}

test("http+unix URLs: the socket path round-trips (spaces, percent signs), relative paths are refused", () => {
  for (const p of ["/run/clawker/admin.sock", "/tmp/a b/%41/x.sock"]) {
    assert.equal(unixSocketPathOf(unixSocketUrl(p)), p);
    assert.equal(unixSocketPathOf(new URL("/admin/clients?x=1", unixSocketUrl(p))), p);
  }
  assert.equal(unixSocketPathOf("https://127.0.0.1:4445"), undefined);
  assert.throws(() => unixSocketPathOf("http+unix://relative.sock/x"), /absolute/);
});

test("an http+unix URL is plain HTTP through the socket: path, query, method, body and a Host header arrive", async (t) => {
  const seen: string[] = [];
  const { url } = await serveOnSocket(t, (req, res) => {
    let body = "";
    req.setEncoding("utf8").on("data", (d: string) => (body += d));
    req.on("end", () => {
      seen.push(`${req.method} ${req.url} host=${req.headers.host} ${body}`);
      res.writeHead(204).end();
    });
  });
  const res = await httpRequest(new URL("/admin/oauth2/tokens?client_id=clawker-cli", url), {
    method: "DELETE",
    body: "b",
    signal: signal(),
  });
  assert.deepEqual(res, { status: 204, body: "" });
  assert.equal((await httpRequest(url, { signal: signal() })).status, 204, "a bare base URL asks for /");
  assert.deepEqual(seen, [
    "DELETE /admin/oauth2/tokens?client_id=clawker-cli host=localhost b",
    "GET / host=localhost ",
  ]);
});

test("an http+unix pool reuses one connection; a missing socket rejects with ENOENT", async (t) => {
  let connections = 0;
  const { url, server, path } = await serveOnSocket(t, (_req, res) => res.end("ok"));
  server.on("connection", () => connections++);
  const agent = agentFor(url, {});
  assert.ok(agent !== undefined);
  try {
    for (let i = 0; i < 5; i++)
      assert.equal((await httpRequest(url, { agent, signal: signal() })).body, "ok");
  } finally {
    agent.destroy();
  }
  assert.equal(connections, 1);
  await assert.rejects(
    httpRequest(unixSocketUrl(`${path}.missing`), { signal: signal() }),
    (err: NodeJS.ErrnoException) => err.code === "ENOENT",
  );
});
