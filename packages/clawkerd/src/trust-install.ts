// A rotated firewall CA reaching a running agent: the control plane sends the CA certificates to
// trust (FirewallTrustService, trust-service.ts) and they replace FIREWALL_CA_FILE, then the
// system store and the bundle are rebuilt from it (trust-store.ts). During a rotation the control
// plane sends the new CA and the old one together, and the old alone goes only once the proxy
// presents certificates of the new one: a process started at any moment verifies what it is shown.
// Only public CA certificates are accepted: the CA's key stays with the control plane.
import { X509Certificate, createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { ClawkerError, type TrustReason } from "@clawker/proto";
import type { Logger } from "./log.js";
import {
  DEFAULT_TRUST_STORE_PATHS,
  type TrustStorePaths,
  installFirewallCa,
  writeAtomic,
} from "./trust-store.js";

/** Largest bundle accepted, in bytes (a P-256 CA is ~700 bytes of PEM). */
export const MAX_BUNDLE_BYTES = 64 * 1024;
/** Most certificates one bundle may hold (the new CA and the old one, with room to spare). */
export const MAX_BUNDLE_CERTS = 4;

/** An install that was refused (nothing changed) or could not be written. */
export class TrustInstallError extends ClawkerError<TrustReason> {
  override readonly name = "TrustInstallError";
}

/** What an install did. */
export interface TrustInstallOutcome {
  /** False when the file already held exactly this bundle (nothing was rewritten). */
  readonly changed: boolean;
  /** The agent was made without a firewall CA file: nothing was installed (see install()). */
  readonly absent: boolean;
  /** SHA-256 of each certificate, hex lowercase, in bundle order. */
  readonly fingerprints: readonly string[];
  readonly systemStore: boolean;
  readonly bundle: boolean;
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([A-Za-z0-9+/=\r\n]+?)-----END \1-----/g;

/**
 * Checks a bundle: PEM CERTIFICATE blocks only, each a CA certificate, nothing else but
 * whitespace between them. Returns the canonical text (LF, one newline after each block) and the
 * fingerprints; throws TrustInstallError("invalid_argument") otherwise.
 */
export function parseCaBundle(pem: string): { readonly text: string; readonly fingerprints: string[] } {
  const refuse = (why: string): never => {
    throw new TrustInstallError("invalid_argument", `firewall CA bundle refused: ${why}`);
  };
  if (Buffer.byteLength(pem) > MAX_BUNDLE_BYTES) refuse(`larger than ${MAX_BUNDLE_BYTES} bytes`);
  // Checked on the whole text, not per block: a key hidden in a comment line or in a block with
  // a broken end must be refused too, never silently skipped.
  if (/PRIVATE KEY/i.test(pem)) refuse("it holds private key material");
  const blocks: string[] = [];
  const fingerprints: string[] = [];
  let rest = "";
  let at = 0;
  for (const match of pem.matchAll(PEM_BLOCK)) {
    rest += pem.slice(at, match.index);
    at = match.index + match[0].length;
    if (match[1] !== "CERTIFICATE")
      refuse(`it holds a ${match[1]} block; only CERTIFICATE blocks are accepted`);
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(match[0]);
    } catch {
      return refuse(`block ${blocks.length + 1} is not an X.509 certificate`);
    }
    if (!cert.ca)
      refuse(`certificate ${blocks.length + 1} (${cert.subject.replaceAll("\n", ", ")}) is not a CA`);
    blocks.push(`${match[0].replaceAll("\r\n", "\n")}\n`);
    fingerprints.push(cert.fingerprint256.replaceAll(":", "").toLowerCase());
  }
  rest += pem.slice(at);
  if (rest.trim() !== "") refuse("it holds text outside PEM CERTIFICATE blocks");
  if (blocks.length === 0) refuse("it holds no certificate");
  if (blocks.length > MAX_BUNDLE_CERTS)
    refuse(`it holds ${blocks.length} certificates; at most ${MAX_BUNDLE_CERTS}`);
  return { text: blocks.join(""), fingerprints };
}

/** Installs CA bundles one at a time (two pushes never interleave their writes). */
export class TrustInstaller {
  readonly #log: Logger;
  readonly #paths: TrustStorePaths;
  #tail: Promise<unknown> = Promise.resolve();

  constructor(log: Logger, paths: TrustStorePaths = DEFAULT_TRUST_STORE_PATHS) {
    this.#log = log;
    this.#paths = paths;
  }

  /**
   * Replaces FIREWALL_CA_FILE with the bundle (atomically, 0444) and rebuilds the system store
   * and the bundle file from it; a bundle equal to the file held changes nothing. An agent made
   * without the file gets none (`absent`): `clawker run` set no NODE_EXTRA_CA_CERTS or
   * SSL_CERT_FILE there, so some of its clients would trust the CA and others not. Throws
   * TrustInstallError: `invalid_argument` (refused, file untouched) or `internal` (not written).
   */
  install(pem: string): Promise<TrustInstallOutcome> {
    const run = this.#tail.then(() => this.#install(pem));
    this.#tail = run.catch(() => undefined);
    return run;
  }

  async #install(pem: string): Promise<TrustInstallOutcome> {
    const { text, fingerprints } = parseCaBundle(pem);
    let held: string;
    try {
      held = await readFile(this.#paths.firewallCa, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
        throw new TrustInstallError("internal", "firewall CA unreadable", { cause: err });
      }
      return { changed: false, absent: true, fingerprints, systemStore: false, bundle: false };
    }
    if (held === text)
      return { changed: false, absent: false, fingerprints, systemStore: false, bundle: false };
    try {
      await writeAtomic(this.#paths.firewallCa, text);
    } catch (err) {
      this.#log.error(
        { err, file: this.#paths.firewallCa, event: "firewall_ca_not_written" },
        "firewall CA not written",
      );
      throw new TrustInstallError("internal", "firewall CA not written", { cause: err });
    }
    const outcome = await installFirewallCa(this.#log, this.#paths);
    this.#log.info(
      {
        event: "firewall_ca_replaced",
        fingerprints,
        before: fingerprintsOf(held),
        systemStore: outcome.systemStore,
        bundle: outcome.bundle,
      },
      "firewall CA replaced",
    );
    return {
      changed: true,
      absent: false,
      fingerprints,
      systemStore: outcome.systemStore,
      bundle: outcome.bundle,
    };
  }
}

function fingerprintsOf(text: string): string[] {
  try {
    return parseCaBundle(text).fingerprints;
  } catch {
    // What `clawker run` copied in before is ours, but a hand-edited file is only logged as unknown.
    return [createHash("sha256").update(text).digest("hex")];
  }
}
