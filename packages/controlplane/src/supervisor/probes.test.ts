// Probe factories against real TLS 1.3 servers with per-run certificates (openssl).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createSecureServer } from "node:http2";
import { createServer as createHttpsServer } from "node:https";
import { createServer as createNetServer, type AddressInfo, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { createServer as createTlsServer } from "node:tls";
import { httpProbe, ProbeError, tlsHandshakeProbe } from "./probes.js";

interface Pki {
  ca: Buffer;
  otherCa: Buffer;
  serverCert: Buffer;
  serverKey: Buffer;
  clientCert: Buffer;
  clientKey: Buffer;
}

let dir: string;
let pki: Pki;

/** A CA, a server leaf (SAN 127.0.0.1), a client leaf, and an unrelated CA; EC P-256, one day. */
function makePki(d: string): Pki {
  const ssl = (...args: string[]): void => void execFileSync("openssl", args, { cwd: d, stdio: "ignore" });
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  for (const ca of ["ca", "other"]) {
    ssl(
      "req",
      "-x509",
      ...ec,
      "-keyout",
      `${ca}.key`,
      "-out",
      `${ca}.crt`,
      "-subj",
      `/CN=${ca}`,
      "-days",
      "1",
    );
  }
  writeFileSync(join(d, "server.ext"), "subjectAltName=IP:127.0.0.1,DNS:clawker-controlplane\n");
  writeFileSync(join(d, "client.ext"), "extendedKeyUsage=clientAuth\n");
  for (const leaf of ["server", "client"]) {
    ssl("req", ...ec, "-keyout", `${leaf}.key`, "-out", `${leaf}.csr`, "-subj", `/CN=${leaf}`);
    ssl(
      "x509",
      "-req",
      "-in",
      `${leaf}.csr`,
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      `${leaf}.crt`,
      "-days",
      "1",
      "-extfile",
      `${leaf}.ext`,
    );
  }
  const read = (f: string): Buffer => readFileSync(join(d, f));
  return {
    ca: read("ca.crt"),
    otherCa: read("other.crt"),
    serverCert: read("server.crt"),
    serverKey: read("server.key"),
    clientCert: read("client.crt"),
    clientKey: read("client.key"),
  };
}

const servers: Server[] = [];

async function listen<S extends Server>(server: S): Promise<number> {
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as AddressInfo).port;
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), "probes-test-"));
  pki = makePki(dir);
});

after(async () => {
  await Promise.all(
    servers.map(
      (s) =>
        new Promise<void>((resolve) => {
          (s as Server & { closeAllConnections?: () => void }).closeAllConnections?.();
          s.close(() => resolve());
        }),
    ),
  );
  rmSync(dir, { recursive: true, force: true });
});

const signal = (): AbortSignal => AbortSignal.timeout(5_000);

void test("tlsHandshakeProbe completes a verified TLS 1.3 handshake", async () => {
  const port = await listen(
    createTlsServer({ cert: pki.serverCert, key: pki.serverKey, minVersion: "TLSv1.3" }, (s) => s.end()),
  );
  await tlsHandshakeProbe("127.0.0.1", port, { ca: pki.ca })(signal());
  await tlsHandshakeProbe("127.0.0.1", port, { ca: pki.ca, servername: "clawker-controlplane" })(signal());
  await assert.rejects(
    tlsHandshakeProbe("127.0.0.1", port, { ca: pki.otherCa })(signal()),
    (e: unknown) => e instanceof ProbeError && e.reason === "handshake_failed",
  );
  await assert.rejects(
    tlsHandshakeProbe("127.0.0.1", port, { ca: pki.ca, servername: "someone-else" })(signal()),
    (e: unknown) => e instanceof ProbeError && e.reason === "handshake_failed",
  );
});

void test("tlsHandshakeProbe refuses a TLS 1.2-only server", async () => {
  const port = await listen(
    createTlsServer({ cert: pki.serverCert, key: pki.serverKey, maxVersion: "TLSv1.2" }, (s) => s.end()),
  );
  await assert.rejects(
    tlsHandshakeProbe("127.0.0.1", port, { ca: pki.ca })(signal()),
    (e: unknown) => e instanceof ProbeError && e.reason === "handshake_failed",
  );
});

void test("expectHttp2 proves an mTLS HTTP/2 server accepted our client certificate", async () => {
  const port = await listen(
    createSecureServer({
      cert: pki.serverCert,
      key: pki.serverKey,
      ca: pki.ca,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: "TLSv1.3",
    }),
  );
  const withCert = { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey, expectHttp2: true };
  await tlsHandshakeProbe("127.0.0.1", port, withCert)(signal());
  await assert.rejects(
    tlsHandshakeProbe("127.0.0.1", port, { ca: pki.ca, expectHttp2: true })(signal()),
    (e: unknown) => e instanceof ProbeError && e.reason === "handshake_failed",
  );
});

void test("expectHttp2 fails against a TLS server that does not speak h2", async () => {
  const port = await listen(createTlsServer({ cert: pki.serverCert, key: pki.serverKey }, () => undefined));
  await assert.rejects(
    tlsHandshakeProbe("127.0.0.1", port, { ca: pki.ca, expectHttp2: true })(signal()),
    (e: unknown) => e instanceof ProbeError && e.reason === "not_http2",
  );
});

void test("a probe stops when its signal aborts", async () => {
  // Accepts TCP, never answers the ClientHello.
  const port = await listen(createNetServer(() => undefined));
  const ac = new AbortController();
  const probing = tlsHandshakeProbe("127.0.0.1", port, { ca: pki.ca })(ac.signal);
  ac.abort(new Error("enough"));
  await assert.rejects(probing, (e: unknown) => e instanceof ProbeError && e.reason === "aborted");
  await assert.rejects(
    httpProbe(`http://127.0.0.1:${port}/`)(AbortSignal.abort()),
    (e: unknown) => (e as Error).name === "AbortError" || e instanceof DOMException,
  );
});

void test("httpProbe over TLS trusts only the given CA and expects 200", async () => {
  let answer = 200;
  const port = await listen(
    createHttpsServer({ cert: pki.serverCert, key: pki.serverKey }, (_req, res) =>
      res.writeHead(answer).end(),
    ),
  );
  await httpProbe(`https://127.0.0.1:${port}/health/ready`, { ca: pki.ca })(signal());
  await assert.rejects(httpProbe(`https://127.0.0.1:${port}/health/ready`, { ca: pki.otherCa })(signal()));
  answer = 503;
  await assert.rejects(
    httpProbe(`https://127.0.0.1:${port}/health/ready`, { ca: pki.ca })(signal()),
    (e: unknown) => e instanceof ProbeError && e.reason === "unexpected_status",
  );
});

void test("httpProbe with an instance nonce fails not_ours on a 200 that does not echo it", async () => {
  let body = JSON.stringify({ status: "ok", instance: "nonce-of-this-start" });
  const port = await listen(
    createHttpsServer({ cert: pki.serverCert, key: pki.serverKey }, (_req, res) =>
      res.writeHead(200).end(body),
    ),
  );
  const url = `https://127.0.0.1:${port}/health/ready`;
  await httpProbe(url, { ca: pki.ca }, { instance: "nonce-of-this-start" })(signal());
  for (const other of [
    JSON.stringify({ status: "ok" }),
    JSON.stringify({ status: "ok", instance: "nonce-of-an-earlier-start" }),
    "ok",
  ]) {
    body = other;
    await assert.rejects(
      httpProbe(url, { ca: pki.ca }, { instance: "nonce-of-this-start" })(signal()),
      (e: unknown) => e instanceof ProbeError && e.reason === "not_ours",
      other,
    );
    await httpProbe(url, { ca: pki.ca })(signal());
  }
});
