// Certificate authority and leaf issuance: ECDSA keys from node's WebCrypto, certificates built
// with @peculiar/x509. Everything is returned as PEM so it can be written, logged-by-name, or
// handed straight to node:tls / grpc-js.
import { createPrivateKey, randomBytes, webcrypto } from "node:crypto";
import { isIP } from "node:net";
// Must precede @peculiar/x509: its dependency tsyringe checks for the Reflect metadata API on load.
import "reflect-metadata";
import * as x509 from "@peculiar/x509";
import { TrustError } from "./errors.js";

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

// @peculiar/x509 signs through a WebCrypto provider; node's is complete for ECDSA P-256/P-384.
x509.cryptoProvider.set(webcrypto);

/** The elliptic curves we issue keys on. P-256 is the default everywhere. */
export type Curve = "P-256" | "P-384";

/** What a leaf may authenticate as: TLS server, TLS client, or both (extended key usage). */
export type LeafUsage = "server" | "client" | "both";

/** A certificate and its private key, both PEM (certificate, PKCS#8 key). */
export interface CertifiedKey {
  readonly certPem: string;
  readonly keyPem: string;
}

/** Validity window: explicit dates, or a duration from now (`validityMs`). */
export interface ValidityOptions {
  /** Duration from now until notAfter; ignored when `notAfter` is given. */
  readonly validityMs?: number;
  /** Defaults to five minutes ago, so a peer with a slightly slow clock accepts it. */
  readonly notBefore?: Date;
  readonly notAfter?: Date;
}

/** Options for createCa. */
export interface CaOptions extends ValidityOptions {
  /** Subject CN; default `clawker-ca`. */
  readonly commonName?: string;
  readonly curve?: Curve;
}

/** Options for issueLeaf. */
export interface LeafOptions extends ValidityOptions {
  readonly commonName: string;
  readonly dnsNames?: readonly string[];
  readonly ipAddresses?: readonly string[];
  readonly uris?: readonly string[];
  readonly usage: LeafUsage;
  readonly curve?: Curve;
}

/** Default CA lifetime: ten years. */
export const DEFAULT_CA_VALIDITY_MS = 10 * 365 * 24 * 3600_000;
/** Default leaf lifetime: one year. */
export const DEFAULT_LEAF_VALIDITY_MS = 365 * 24 * 3600_000;
/** Extended key usage OIDs (RFC 5280 §4.2.1.12). */
export const EKU_SERVER_AUTH = "1.3.6.1.5.5.7.3.1";
/** Extended key usage OID for TLS client authentication. */
export const EKU_CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";

const BACKDATE_MS = 5 * 60_000;
const HASH_OF: Record<Curve, string> = { "P-256": "SHA-256", "P-384": "SHA-384" };
const CURVE_OF_NODE_NAME: Record<string, Curve> = { prime256v1: "P-256", secp384r1: "P-384" };

/** Creates a self-signed CA (basicConstraints CA:true pathlen 0, keyCertSign + cRLSign). */
export async function createCa(options: CaOptions = {}): Promise<CertifiedKey> {
  const curve = options.curve ?? "P-256";
  const commonName = options.commonName ?? "clawker-ca";
  checkCommonName(commonName);
  const { notBefore, notAfter } = validity(options, DEFAULT_CA_VALIDITY_MS);
  const keys = await generateKeyPair(curve);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: [{ CN: [commonName] }],
    notBefore,
    notAfter,
    keys,
    signingAlgorithm: { name: "ECDSA", hash: HASH_OF[curve] },
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { certPem: cert.toString("pem") + "\n", keyPem: await exportKeyPem(keys.privateKey) };
}

/** Issues a leaf signed by `ca`, with the given CN, SANs, extended key usage and validity. */
export async function issueLeaf(ca: CertifiedKey, options: LeafOptions): Promise<CertifiedKey> {
  checkCommonName(options.commonName);
  const names = sanEntries(options);
  if (names.length === 0 && options.usage !== "client") {
    throw new TrustError("invalid_argument", "a server leaf needs at least one DNS, IP or URI SAN");
  }
  const caCert = parseCertificate(ca.certPem);
  const caKey = importSigningKey(ca.keyPem);
  const { notBefore, notAfter } = validity(options, DEFAULT_LEAF_VALIDITY_MS);
  if (notAfter > caCert.notAfter) {
    throw new TrustError("invalid_argument", "leaf would outlive its CA");
  }
  const caSki = caCert.getExtension(x509.SubjectKeyIdentifierExtension);
  const keys = await generateKeyPair(options.curve ?? "P-256");
  const eku =
    options.usage === "server"
      ? [EKU_SERVER_AUTH]
      : options.usage === "client"
        ? [EKU_CLIENT_AUTH]
        : [EKU_SERVER_AUTH, EKU_CLIENT_AUTH];
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
    new x509.ExtendedKeyUsageExtension(eku, false),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ];
  if (caSki !== null) extensions.push(new x509.AuthorityKeyIdentifierExtension(caSki.keyId));
  // RFC 5280 §4.2.1.6: the SAN extension is critical only when the subject is empty; ours is not.
  if (names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names, false));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serialNumber(),
    subject: [{ CN: [options.commonName] }],
    issuer: caCert.subjectName,
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey: caKey.key,
    signingAlgorithm: { name: "ECDSA", hash: HASH_OF[caKey.curve] },
    extensions,
  });
  return { certPem: cert.toString("pem") + "\n", keyPem: await exportKeyPem(keys.privateKey) };
}

function sanEntries(options: LeafOptions): x509.JsonGeneralNames {
  const out: x509.JsonGeneralNames = [];
  for (const name of options.dnsNames ?? []) {
    if (!isDnsName(name)) throw new TrustError("invalid_argument", `not a DNS name: ${JSON.stringify(name)}`);
    out.push({ type: "dns", value: name });
  }
  for (const ip of options.ipAddresses ?? []) {
    if (isIP(ip) === 0) throw new TrustError("invalid_argument", `not an IP address: ${JSON.stringify(ip)}`);
    out.push({ type: "ip", value: ip });
  }
  for (const uri of options.uris ?? []) {
    if (!isUri(uri)) throw new TrustError("invalid_argument", `not a URI: ${JSON.stringify(uri)}`);
    out.push({ type: "url", value: uri });
  }
  return out;
}

const DNS_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/i;

function isDnsName(name: string): boolean {
  return name.length > 0 && name.length <= 253 && name.split(".").every((l) => DNS_LABEL.test(l));
}

function isUri(uri: string): boolean {
  // A scheme, then printable ASCII without spaces (RFC 3986 characters; no normalisation).
  return /^[a-z][a-z0-9+.-]*:[\x21-\x7e]+$/i.test(uri);
}

function checkCommonName(cn: string): void {
  if (!/^[\x20-\x7e]{1,64}$/.test(cn) || cn.trim() !== cn) {
    throw new TrustError("invalid_argument", `bad common name: ${JSON.stringify(cn)}`);
  }
}

function validity(options: ValidityOptions, defaultMs: number): { notBefore: Date; notAfter: Date } {
  const now = Date.now();
  const notBefore = options.notBefore ?? new Date(now - BACKDATE_MS);
  const validityMs = options.validityMs ?? defaultMs;
  if (options.notAfter === undefined && !(validityMs > 0)) {
    throw new TrustError("invalid_argument", "validityMs must be positive");
  }
  const notAfter = options.notAfter ?? new Date(now + validityMs);
  if (!(notAfter > notBefore)) throw new TrustError("invalid_argument", "notAfter must be after notBefore");
  return { notBefore, notAfter };
}

function serialNumber(): string {
  // RFC 5280 §4.1.2.2: positive, at most 20 octets; 16 random octets, top bit clear, first octet non-zero.
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x01;
  return bytes.toString("hex");
}

async function generateKeyPair(curve: Curve): Promise<CryptoKeyPair> {
  return await webcrypto.subtle.generateKey({ name: "ECDSA", namedCurve: curve }, true, ["sign", "verify"]);
}

async function exportKeyPem(key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey("pkcs8", key));
  const b64 = der
    .toString("base64")
    .replace(/(.{64})/g, "$1\n")
    .replace(/\n$/, "");
  return `-----BEGIN PRIVATE KEY-----\n${b64}\n-----END PRIVATE KEY-----\n`;
}

/** Parses a PEM certificate with @peculiar/x509; throws TrustError("malformed"). */
export function parseCertificate(pem: string, file?: string): x509.X509Certificate {
  try {
    return new x509.X509Certificate(pem);
  } catch (err) {
    throw new TrustError("malformed", "not a PEM certificate", { cause: err, ...(file ? { file } : {}) });
  }
}

/** The curve of an EC private key in PEM, or throws TrustError("malformed"). */
export function curveOfKey(keyPem: string, file?: string): Curve {
  let curve: Curve | undefined;
  try {
    const key = createPrivateKey(keyPem);
    curve = CURVE_OF_NODE_NAME[key.asymmetricKeyDetails?.namedCurve ?? ""];
  } catch (err) {
    throw new TrustError("malformed", "not a PEM private key", { cause: err, ...(file ? { file } : {}) });
  }
  if (curve === undefined) {
    throw new TrustError("malformed", "not an EC P-256/P-384 key", file ? { file } : {});
  }
  return curve;
}

function importSigningKey(keyPem: string): { key: CryptoKey; curve: Curve } {
  const curve = curveOfKey(keyPem);
  const key = createPrivateKey(keyPem).toCryptoKey({ name: "ECDSA", namedCurve: curve }, false, ["sign"]);
  return { key: key, curve };
}
