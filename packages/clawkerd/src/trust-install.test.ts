// The firewall CA install on real files in a temp dir, with real certificates made by openssl:
// key material and anything but CA certificates refused with the file held left as it was; the
// file replaced atomically, 0444; an equal bundle changes nothing; the bundle file follows.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { test, type TestContext } from "node:test";
import { createLogger } from "./log.js";
import { MAX_BUNDLE_CERTS, TrustInstallError, TrustInstaller, parseCaBundle } from "./trust-install.js";
import type { TrustStorePaths } from "./trust-store.js";

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), "trust-install-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A P-256 certificate and its key from openssl: a CA unless `leaf`. */
function mint(dir: string, name: string, leaf = false): { cert: string; key: string } {
  const keyFile = join(dir, `${name}.key`);
  const certFile = join(dir, `${name}.crt`);
  execFileSync("openssl", ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", keyFile], {
    stdio: "ignore",
  });
  execFileSync("openssl", [
    "req",
    "-x509",
    "-new",
    "-key",
    keyFile,
    "-out",
    certFile,
    "-days",
    "2",
    "-subj",
    `/CN=${name}`,
    "-addext",
    leaf ? "basicConstraints=critical,CA:FALSE" : "basicConstraints=critical,CA:TRUE",
  ]);
  return { cert: readFileSync(certFile, "utf8"), key: readFileSync(keyFile, "utf8") };
}

function world(t: TestContext): { dir: string; paths: TrustStorePaths; installer: TrustInstaller } {
  const dir = tempDir(t);
  const paths: TrustStorePaths = {
    firewallCa: join(dir, "etc/clawker/firewall-ca.crt"),
    bundle: join(dir, "etc/clawker/ca-bundle.crt"),
    systemBundles: [join(dir, "system.crt")],
    localCaDir: join(dir, "local"),
    updateCommand: join(dir, "no-update-ca-certificates"),
  };
  writeFileSync(paths.systemBundles[0]!, "");
  const installer = new TrustInstaller(
    createLogger("error", () => undefined),
    paths,
  );
  return { dir, paths, installer };
}

void test("a new CA replaces the file atomically, 0444, and the bundle follows; the same bundle again changes nothing", async (t) => {
  const { dir, paths, installer } = world(t);
  const old = mint(dir, "old-ca");
  const next = mint(dir, "new-ca");
  mkdirSync(dirname(paths.firewallCa), { recursive: true });
  writeFileSync(paths.firewallCa, old.cert, { mode: 0o444 });

  // The rotation's overlap: both CAs, the new one first.
  const both = await installer.install(next.cert + old.cert);
  assert.equal(both.changed, true);
  assert.equal(both.fingerprints.length, 2);
  assert.deepEqual(both.fingerprints, parseCaBundle(next.cert + old.cert).fingerprints);
  assert.equal(readFileSync(paths.firewallCa, "utf8"), next.cert + old.cert);
  assert.equal(statSync(paths.firewallCa).mode & 0o777, 0o444);
  assert.equal(readFileSync(paths.bundle, "utf8"), next.cert + old.cert);
  // Atomic: nothing but the two files is left in the folder (no temporary file).
  assert.deepEqual(readdirSync(dirname(paths.firewallCa)).sort(), ["ca-bundle.crt", "firewall-ca.crt"]);

  const inode = statSync(paths.firewallCa).ino;
  const again = await installer.install(next.cert + old.cert);
  assert.equal(again.changed, false);
  assert.equal(statSync(paths.firewallCa).ino, inode);

  // After the proxy switched: the new one alone.
  const alone = await installer.install(next.cert);
  assert.equal(alone.changed, true);
  assert.equal(readFileSync(paths.firewallCa, "utf8"), next.cert);
  assert.equal(readFileSync(paths.bundle, "utf8"), next.cert);
  assert.notEqual(statSync(paths.firewallCa).ino, inode, "replaced by a rename, not rewritten in place");
});

void test("key material, leaves and anything but CA certificates are refused, and the file held stays", async (t) => {
  const { dir, paths, installer } = world(t);
  const ca = mint(dir, "held-ca");
  const other = mint(dir, "other-ca");
  const leaf = mint(dir, "leaf", true);
  mkdirSync(dirname(paths.firewallCa), { recursive: true });
  writeFileSync(paths.firewallCa, ca.cert, { mode: 0o444 });
  const pkcs8 = execFileSync("openssl", ["pkcs8", "-topk8", "-nocrypt", "-in", join(dir, "other-ca.key")], {
    encoding: "utf8",
  });
  const cases: Array<[string, string, RegExp]> = [
    ["a CA with its EC key after it", other.cert + other.key, /private key material/],
    ["a CA with its PKCS#8 key after it", other.cert + pkcs8, /private key material/],
    ["a key alone", other.key, /private key material/],
    [
      "a key inside text between certificates",
      `${other.cert}# PRIVATE KEY\n${ca.cert}`,
      /private key material/,
    ],
    ["a leaf certificate", leaf.cert, /certificate 1 \(CN=leaf\) is not a CA/],
    ["a CA and a leaf", other.cert + leaf.cert, /certificate 2 \(CN=leaf\) is not a CA/],
    [
      "a public key block",
      execFileSync("openssl", ["ec", "-in", join(dir, "other-ca.key"), "-pubout"], {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "ignore"],
      }),
      /PUBLIC KEY block/,
    ],
    [
      "a broken certificate",
      "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
      /not an X\.509 certificate/,
    ],
    ["text around a certificate", `hello\n${other.cert}`, /outside PEM CERTIFICATE blocks/],
    ["nothing", "", /holds no certificate/],
    ["too many", other.cert.repeat(MAX_BUNDLE_CERTS + 1), /at most 4/],
    ["too large", "x".repeat(70_000), /larger than/],
  ];
  // An agent made without the CA gets none: its clients were not told to trust one.
  const absent = world(t);
  assert.equal((await absent.installer.install(ca.cert)).absent, true);
  assert.equal(existsSync(absent.paths.firewallCa), false);
  for (const [what, pem, message] of cases) {
    await assert.rejects(
      installer.install(pem),
      (err: unknown) => {
        assert.ok(err instanceof TrustInstallError, what);
        assert.equal(err.reason, "invalid_argument", what);
        assert.match(err.message, message, what);
        return true;
      },
      what,
    );
    assert.equal(readFileSync(paths.firewallCa, "utf8"), ca.cert, what);
  }
  assert.equal(existsSync(paths.bundle), false);
});
