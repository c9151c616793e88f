// Throwaway PKI for the auth tests (CA, server leaf for 127.0.0.1, client leaf), made with the
// openssl CLI in a temp dir. Stand-in until every test uses test/harness/trust.ts.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** PEMs plus the files they were written to; `cleanup()` removes the directory. */
export interface TestPki {
  readonly dir: string;
  readonly caPem: string;
  readonly serverCertPem: string;
  readonly serverKeyPem: string;
  readonly clientCertPem: string;
  readonly clientKeyPem: string;
  readonly files: { readonly ca: string; readonly serverCert: string; readonly serverKey: string };
  cleanup(): void;
}

/** Mints a P-256 CA with a server leaf (SAN 127.0.0.1, localhost) and a client leaf. */
export function mintTestPki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), "clawker-auth-pki-"));
  const f = (n: string): string => join(dir, n);
  const ssl = (...args: string[]): void => {
    execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
  };
  const ecKey = (out: string): void =>
    ssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", out);
  ecKey(f("ca.key"));
  ssl(
    "req",
    "-x509",
    "-new",
    "-key",
    f("ca.key"),
    "-subj",
    "/CN=clawker-test-ca",
    "-days",
    "2",
    "-out",
    f("ca.pem"),
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
  );
  const leaf = (name: string, cn: string, ext: string): void => {
    ecKey(f(`${name}.key`));
    ssl("req", "-new", "-key", f(`${name}.key`), "-subj", `/CN=${cn}`, "-out", f(`${name}.csr`));
    writeFileSync(f(`${name}.ext`), ext);
    ssl(
      "x509",
      "-req",
      "-in",
      f(`${name}.csr`),
      "-CA",
      f("ca.pem"),
      "-CAkey",
      f("ca.key"),
      "-CAcreateserial",
      "-days",
      "2",
      "-extfile",
      f(`${name}.ext`),
      "-out",
      f(`${name}.pem`),
    );
  };
  leaf(
    "server",
    "clawker-controlplane",
    "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n",
  );
  leaf("client", "clawker-cli", "extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n");
  const read = (n: string): string => readFileSync(f(n), "utf8");
  return {
    dir,
    caPem: read("ca.pem"),
    serverCertPem: read("server.pem"),
    serverKeyPem: read("server.key"),
    clientCertPem: read("client.pem"),
    clientKeyPem: read("client.key"),
    files: { ca: f("ca.pem"), serverCert: f("server.pem"), serverKey: f("server.key") },
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
}
