// The firewall CA in the agent's trust store, at every clawkerd start: `clawker run` copies the
// firewall's interception CA to FIREWALL_CA_FILE (and sets NODE_EXTRA_CA_CERTS and SSL_CERT_FILE);
// here it joins the image's system store (update-ca-certificates on Debian-like images) and a
// bundle of the system CAs plus it is written to CA_BUNDLE_FILE, what SSL_CERT_FILE names. Every
// start rebuilds both from the file as it is then, so a CA copied in anew reaches the agent on its
// next start. A failure is logged, never fatal: without the CA intercepted names fail verification.
import { execFile } from "node:child_process";
import { chmod, mkdir, readFile, rename, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { CA_BUNDLE_FILE, FIREWALL_CA_FILE } from "@clawker/proto";
import type { Logger } from "./log.js";

/** Where the image keeps its system CAs, and its tools; the defaults are Debian's. */
export interface TrustStorePaths {
  readonly firewallCa: string;
  readonly bundle: string;
  /** System bundles, the first that exists is used (Debian/Alpine, Fedora, others). */
  readonly systemBundles: readonly string[];
  /** Debian's local CA folder: a certificate there is in the store after update-ca-certificates. */
  readonly localCaDir: string;
  readonly updateCommand: string;
}

/** Debian's paths (and the other families' bundles). */
export const DEFAULT_TRUST_STORE_PATHS: TrustStorePaths = Object.freeze({
  firewallCa: FIREWALL_CA_FILE,
  bundle: CA_BUNDLE_FILE,
  systemBundles: [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
  ],
  localCaDir: "/usr/local/share/ca-certificates",
  updateCommand: "/usr/sbin/update-ca-certificates",
});

/** The name the CA gets in the local CA folder (update-ca-certificates takes `*.crt`). */
export const LOCAL_CA_NAME = "clawker-firewall-ca.crt";
const UPDATE_TIMEOUT_MS = 60_000;

/** What installFirewallCa did. */
export interface TrustStoreOutcome {
  /** No firewall CA was copied in: nothing to do. */
  readonly present: boolean;
  /** The image's system store holds it (update-ca-certificates ran). */
  readonly systemStore: boolean;
  /** CA_BUNDLE_FILE was written (system CAs, when found, plus the firewall CA). */
  readonly bundle: boolean;
}

/**
 * Puts the firewall CA (when copied in) into the system store and writes the bundle. Needs root
 * for both (the image's files and /etc/clawker are root's); logs what it could not do.
 */
export async function installFirewallCa(
  log: Logger,
  paths: TrustStorePaths = DEFAULT_TRUST_STORE_PATHS,
): Promise<TrustStoreOutcome> {
  let ca: string;
  try {
    ca = await readFile(paths.firewallCa, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT")
      return { present: false, systemStore: false, bundle: false };
    log.warn({ err, file: paths.firewallCa, event: "firewall_ca_unreadable" }, "firewall CA unreadable");
    return { present: true, systemStore: false, bundle: false };
  }
  const systemStore = await addToSystemStore(log, paths, ca);
  let bundle = false;
  try {
    const system = await firstReadable(paths.systemBundles);
    // After update-ca-certificates the system bundle already holds it: one copy is enough.
    const parts = [system ?? "", system?.includes(ca.trim()) === true ? "" : ca].filter((p) => p !== "");
    await writeAtomic(paths.bundle, parts.map((p) => (p.endsWith("\n") ? p : `${p}\n`)).join(""));
    bundle = true;
  } catch (err) {
    log.warn({ err, file: paths.bundle, event: "ca_bundle_not_written" }, "CA bundle not written");
  }
  log.info({ event: "firewall_ca_installed", systemStore, bundle }, "firewall CA trusted");
  return { present: true, systemStore, bundle };
}

async function addToSystemStore(log: Logger, paths: TrustStorePaths, ca: string): Promise<boolean> {
  try {
    await stat(paths.updateCommand);
    await stat(paths.localCaDir);
  } catch {
    // Not a Debian-like image: the bundle (SSL_CERT_FILE) and NODE_EXTRA_CA_CERTS carry it.
    return false;
  }
  try {
    const local = join(paths.localCaDir, LOCAL_CA_NAME);
    const held = await readFile(local, "utf8").catch(() => undefined);
    if (held !== ca) await writeAtomic(local, ca, 0o644);
    await new Promise<void>((resolve, reject) => {
      execFile(paths.updateCommand, [], { timeout: UPDATE_TIMEOUT_MS }, (err, _stdout, stderr) =>
        err === null
          ? resolve()
          : reject(new Error(`${paths.updateCommand}: ${stderr.trim() || err.message}`)),
      );
    });
    return true;
  } catch (err) {
    log.warn({ err, event: "system_store_not_updated" }, "firewall CA not added to the system store");
    return false;
  }
}

async function firstReadable(files: readonly string[]): Promise<string | undefined> {
  for (const file of files) {
    try {
      return await readFile(file, "utf8");
    } catch {
      // The next family's path.
    }
  }
  return undefined;
}

/** Writes `file` whole or not at all (a temporary file beside it, renamed over it); mode 0444 by default. */
export async function writeAtomic(file: string, content: string, mode = 0o444): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o755 });
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, content, { mode });
  // The umask may have narrowed the mode; readers are every user of the agent.
  await chmod(tmp, mode);
  await rename(tmp, file);
}
