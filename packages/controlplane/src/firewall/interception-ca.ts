// The firewall's interception CA: a P-256 CA of our own (key 0600 in the firewall's 0700 dir) that
// issues the per-name certificates the proxy presents when a rule's path or method limits need
// the TLS opened. Agents trust it; nothing else does. Certificates are built with @peculiar/x509
// on node's WebCrypto (the daemon may not import the CLI's trust library). See README.md.
import { X509Certificate, createPrivateKey, randomBytes, webcrypto } from "node:crypto";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import type * as X509 from "@peculiar/x509";
import { FirewallError } from "./errors.js";
import { writeFileAtomic } from "./proxy/map-files.js";

let x509Module: Promise<typeof X509.default> | undefined;

/**
 * @peculiar/x509 on first use, not at import: with tsyringe and the asn1 schemas it is ~200
 * modules and ~20 MiB of the daemon's resident memory, and only a firewall that opens TLS needs it.
 */
function peculiarX509(): Promise<typeof X509.default> {
  x509Module ??= (async () => {
    // Must precede @peculiar/x509: its dependency tsyringe checks for the Reflect metadata API on load.
    await import("reflect-metadata");
    // `default` (module.exports): the package is CommonJS, and a bundle that splits it into a
    // chunk of its own (scripts/install-tree.ts) exports only `default`, as Node guarantees; the
    // named exports Node guesses from the source are not there and cryptoProvider was undefined.
    const x509 = (await import("@peculiar/x509")).default;
    x509.cryptoProvider.set(webcrypto);
    return x509;
  })();
  return x509Module;
}

/** A certificate and its key, PEM (PKCS#8 key). */
export interface IssuedCertificate {
  readonly certPem: string;
  readonly keyPem: string;
  readonly notAfter: Date;
}

/** Lifetimes and the clock; defaults are the production ones. */
export interface InterceptionCaOptions {
  /** The CA's folder (created 0700): `ca.crt` and `ca.key`, both 0600. */
  readonly dir: string;
  readonly now?: () => number;
  /** CA lifetime (default one year). */
  readonly caValidityMs?: number;
  /** Leaf lifetime (default 30 days, never past the CA's). */
  readonly leafValidityMs?: number;
}

/** The common name of every interception CA we mint. */
export const INTERCEPTION_CA_CN = "clawker firewall interception CA";
const DAY_MS = 24 * 3600_000;
const BACKDATE_MS = 5 * 60_000;
/** A CA this close to its end is replaced at load, so its leaves never run out mid-run. */
const CA_RENEW_BEFORE_MS = 30 * DAY_MS;
const SIGNING = { name: "ECDSA", hash: "SHA-256" } as const;

interface Loaded {
  readonly cert: X509.X509Certificate;
  readonly key: webcrypto.CryptoKey;
  readonly certPem: string;
}

/** The interception CA: load or create it, issue leaves, rotate it. */
export class InterceptionCa {
  readonly #dir: string;
  readonly #now: () => number;
  readonly #caValidityMs: number;
  readonly #leafValidityMs: number;
  #ca: Loaded | undefined;

  constructor(options: InterceptionCaOptions) {
    this.#dir = options.dir;
    this.#now = options.now ?? Date.now;
    this.#caValidityMs = options.caValidityMs ?? 365 * DAY_MS;
    this.#leafValidityMs = options.leafValidityMs ?? 30 * DAY_MS;
  }

  /** Where the CA certificate is (what agents must trust). */
  get certFile(): string {
    return join(this.#dir, "ca.crt");
  }

  /** The key file (0600). */
  get keyFile(): string {
    return join(this.#dir, "ca.key");
  }

  /** The current CA certificate (PEM); load() first. */
  get certPem(): string {
    return this.#loaded().certPem;
  }

  /**
   * The CA certificate agents must trust (PEM, public part only): the loaded one, else the one on
   * disk, else undefined (no CA was made yet). Never creates one.
   */
  async publicCertPem(): Promise<string | undefined> {
    if (this.#ca !== undefined) return this.#ca.certPem;
    try {
      return await readFile(this.certFile, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
  }

  /** The current CA's SHA-256 fingerprint (hex, lowercase); load() first. */
  get fingerprint(): string {
    return new X509Certificate(this.#loaded().certPem).fingerprint256.replaceAll(":", "").toLowerCase();
  }

  /**
   * Loads the CA from its files, or creates one when there are none. A CA near its end (30 days)
   * is replaced too; `created` says a new CA was made. A pair that does not parse or whose key does not belong
   * to the certificate is refused (FirewallError `internal`, naming the files): it was not ours.
   */
  async load(): Promise<{ readonly created: boolean }> {
    await mkdir(this.#dir, { recursive: true, mode: 0o700 });
    let certPem: string;
    let keyPem: string;
    try {
      [certPem, keyPem] = await Promise.all([
        readFile(this.certFile, "utf8"),
        readFile(this.keyFile, "utf8"),
      ]);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      await this.rotate();
      return { created: true };
    }
    const x509 = await peculiarX509();
    let loaded: Loaded;
    try {
      const node = new X509Certificate(certPem);
      const privateKey = createPrivateKey(keyPem);
      if (!node.checkPrivateKey(privateKey) || node.ca !== true) throw new Error("not a CA pair");
      loaded = {
        cert: new x509.X509Certificate(certPem),
        key: privateKey.toCryptoKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign"]),
        certPem,
      };
    } catch (err) {
      throw new FirewallError(
        "internal",
        `interception CA ${this.certFile} / ${this.keyFile} is not a matching CA pair; move both aside and a new CA is created`,
        { cause: err },
      );
    }
    if (loaded.cert.notAfter.getTime() - this.#now() < CA_RENEW_BEFORE_MS) {
      await this.rotate();
      return { created: true };
    }
    this.#ca = loaded;
    return { created: false };
  }

  /** Replaces the CA with a new one (written atomically, key 0600). Leaves of the old one stay valid until replaced. */
  async rotate(): Promise<void> {
    const x509 = await peculiarX509();
    const keys = await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
      "sign",
      "verify",
    ]);
    const now = this.#now();
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: serialNumber(),
      name: [{ CN: [INTERCEPTION_CA_CN] }, { O: ["clawker"] }],
      notBefore: new Date(now - BACKDATE_MS),
      notAfter: new Date(now + this.#caValidityMs),
      keys,
      signingAlgorithm: SIGNING,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    const certPem = `${cert.toString("pem")}\n`;
    // Key first: a crash between the two writes leaves a mismatched pair, which load() refuses
    // loudly instead of presenting certificates nobody trusts.
    await writeFileAtomic(this.keyFile, await exportKeyPem(keys.privateKey));
    await writeFileAtomic(this.certFile, certPem);
    this.#ca = { cert, key: keys.privateKey, certPem };
  }

  /**
   * Issues a server certificate for `name`: a DNS name, or `*.parent`, which gets the SANs
   * `*.parent` and `parent` (the proxy's wildcard covers the parent too; a name two labels below
   * the parent is not covered by any certificate, see README.md "Limits").
   */
  async issue(name: string): Promise<IssuedCertificate> {
    const ca = this.#loaded();
    const x509 = await peculiarX509();
    const dnsNames = name.startsWith("*.") ? [name, name.slice(2)] : [name];
    const keys = await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
      "sign",
      "verify",
    ]);
    const now = this.#now();
    const notAfter = new Date(Math.min(now + this.#leafValidityMs, ca.cert.notAfter.getTime()));
    const caSki = ca.cert.getExtension(x509.SubjectKeyIdentifierExtension);
    const extensions: X509.Extension[] = [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension(["1.3.6.1.5.5.7.3.1"], false),
      new x509.SubjectAlternativeNameExtension(
        dnsNames.map((value) => ({ type: "dns" as const, value })),
        false,
      ),
    ];
    if (caSki !== null) extensions.push(new x509.AuthorityKeyIdentifierExtension(caSki.keyId));
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serialNumber(),
      // A CN is at most 64 characters (RFC 5280 ub-common-name); the SANs are what clients check.
      subject: [{ CN: [name.length <= 64 ? name : name.slice(0, 64)] }],
      issuer: ca.cert.subjectName,
      notBefore: new Date(now - BACKDATE_MS),
      notAfter,
      publicKey: keys.publicKey,
      signingKey: ca.key,
      signingAlgorithm: SIGNING,
      extensions,
    });
    return { certPem: `${cert.toString("pem")}\n`, keyPem: await exportKeyPem(keys.privateKey), notAfter };
  }

  #loaded(): Loaded {
    if (this.#ca === undefined) throw new FirewallError("internal", "interception CA not loaded");
    return this.#ca;
  }
}

function serialNumber(): string {
  // RFC 5280 §4.1.2.2: positive, at most 20 octets.
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x01;
  return bytes.toString("hex");
}

async function exportKeyPem(key: webcrypto.CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", key));
  const b64 = der
    .toString("base64")
    .replace(/(.{64})/g, "$1\n")
    .replace(/\n$/, "");
  return `-----BEGIN PRIVATE KEY-----\n${b64}\n-----END PRIVATE KEY-----\n`;
}
