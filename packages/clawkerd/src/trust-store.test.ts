// installFirewallCa on real files in a temp dir: the bundle is the system CAs plus the firewall CA
// (once), world-readable; no CA copied in writes nothing. update-ca-certificates itself runs in the
// firewall e2e test's Debian-less image path (absent) and in the agent image (docker/agent).
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { createLogger } from "./log.js";
import { installFirewallCa, type TrustStorePaths } from "./trust-store.js";

const CA = "-----BEGIN CERTIFICATE-----\nFIREWALL\n-----END CERTIFICATE-----\n";
const SYSTEM = "-----BEGIN CERTIFICATE-----\nROOT1\n-----END CERTIFICATE-----\n";

function world(t: { after: (fn: () => void) => void }): { paths: TrustStorePaths; lines: string[] } {
  const dir = mkdtempSync(join(tmpdir(), "trust-store-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const paths: TrustStorePaths = {
    firewallCa: join(dir, "etc/clawker/firewall-ca.crt"),
    bundle: join(dir, "etc/clawker/ca-bundle.crt"),
    systemBundles: [join(dir, "missing.crt"), join(dir, "system.crt")],
    localCaDir: join(dir, "local"),
    updateCommand: join(dir, "no-update-ca-certificates"),
  };
  return { paths, lines: [] };
}

test("no firewall CA copied in: nothing is written", async (t) => {
  const { paths, lines } = world(t);
  const out = await installFirewallCa(
    createLogger("info", (l) => lines.push(l)),
    paths,
  );
  assert.deepEqual(out, { present: false, systemStore: false, bundle: false });
  assert.equal(existsSync(paths.bundle), false);
});

test("the bundle is the system CAs plus the firewall CA, 0444; a CA the system already has is not repeated", async (t) => {
  const { paths, lines } = world(t);
  const log = createLogger("info", (l) => lines.push(l));
  mkdirSync(join(paths.firewallCa, ".."), { recursive: true });
  writeFileSync(paths.firewallCa, CA);
  // No system bundle at all (a busybox image): the CA alone.
  assert.deepEqual(await installFirewallCa(log, paths), { present: true, systemStore: false, bundle: true });
  assert.equal(readFileSync(paths.bundle, "utf8"), CA);
  assert.equal(statSync(paths.bundle).mode & 0o777, 0o444);
  // A system bundle (the second candidate): both, the system's first.
  writeFileSync(paths.systemBundles[1]!, SYSTEM);
  await installFirewallCa(log, paths);
  assert.equal(readFileSync(paths.bundle, "utf8"), SYSTEM + CA);
  // A rotated CA copied in: the next start's bundle holds the new one, not the old.
  const rotated = CA.replace("FIREWALL", "ROTATED");
  writeFileSync(paths.firewallCa, rotated);
  await installFirewallCa(log, paths);
  assert.equal(readFileSync(paths.bundle, "utf8"), SYSTEM + rotated);
  // update-ca-certificates already put it into the system bundle: once.
  writeFileSync(paths.systemBundles[1]!, SYSTEM + rotated);
  await installFirewallCa(log, paths);
  assert.equal(readFileSync(paths.bundle, "utf8"), SYSTEM + rotated);
  assert.ok(lines.some((l) => l.includes('"event":"firewall_ca_installed"')));
});
