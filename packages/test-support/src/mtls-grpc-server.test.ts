import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { Client, credentials, type ServiceDefinition } from "@grpc/grpc-js";
import { startMtlsGrpcServer } from "./mtls-grpc-server.js";

const identity = (b: Buffer): Buffer => b;
const ECHO: ServiceDefinition = {
  echo: {
    path: "/test.Echo/Echo",
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

/** A CA, a server leaf for 127.0.0.1 and a client leaf, fresh per run (openssl, EC P-256). */
function mint(dir: string): Record<string, string> {
  const ossl = (...args: string[]): void => void execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
  const key = (name: string): void =>
    ossl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", `${name}.key`);
  key("ca");
  ossl("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=test ca", "-days", "1", "-out", "ca.crt");
  for (const [name, ext] of [
    ["server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"],
    ["client", "extendedKeyUsage=clientAuth"],
  ] as const) {
    key(name);
    ossl("req", "-new", "-key", `${name}.key`, "-subj", `/CN=${name}`, "-out", `${name}.csr`);
    execFileSync("sh", ["-c", `printf '${ext}\\n' > ${name}.ext`], { cwd: dir });
    ossl(
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-days",
      "1",
      "-extfile",
      `${name}.ext`,
      "-out",
      `${name}.crt`,
    );
  }
  const read = (f: string): string => readFileSync(join(dir, f), "utf8");
  return {
    ca: read("ca.crt"),
    serverCert: read("server.crt"),
    serverKey: read("server.key"),
    clientCert: read("client.crt"),
    clientKey: read("client.key"),
  };
}

function call(client: Client): Promise<string> {
  return new Promise((resolve, reject) =>
    client.makeUnaryRequest("/test.Echo/Echo", identity, identity, Buffer.from("hi"), (err, res) =>
      err ? reject(err) : resolve(res!.toString()),
    ),
  );
}

void test("startMtlsGrpcServer: a client with a CA-signed certificate is served, one without is refused; close is idempotent", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "test-support-mtls-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const m = mint(dir);
  const server = await startMtlsGrpcServer(
    { caPem: m["ca"]!, certPem: m["serverCert"]!, keyPem: m["serverKey"]! },
    {
      services: [
        [ECHO, { echo: (c: { request: Buffer }, cb: (e: null, r: Buffer) => void) => cb(null, c.request) }],
      ],
    },
  );
  t.after(() => server.close());
  const ca = Buffer.from(m["ca"]!);
  const good = new Client(
    server.address,
    credentials.createSsl(ca, Buffer.from(m["clientKey"]!), Buffer.from(m["clientCert"]!)),
  );
  const anonymous = new Client(server.address, credentials.createSsl(ca));
  t.after(() => {
    good.close();
    anonymous.close();
  });
  assert.equal(await call(good), "hi");
  await assert.rejects(call(anonymous), (err: { code?: number }) => err.code === 14);
  await Promise.all([server.close(), server.close()]);
  await assert.rejects(call(good), (err: { code?: number }) => err.code === 14);
});
