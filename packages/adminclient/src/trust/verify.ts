// Checks a stored certificate/key pair against its CA and its role, with precise errors: the
// loader runs these so a wrong file fails at load time, not at the first TLS handshake.
import { createPrivateKey, createPublicKey, X509Certificate } from "node:crypto";
import { EKU_CLIENT_AUTH, EKU_SERVER_AUTH, type CertifiedKey, type LeafUsage } from "./certificates.js";
import { TrustError } from "./errors.js";

/** Where a pair came from, for error messages. */
export interface PairFiles {
  readonly cert?: string;
  readonly key?: string;
}

/** What a leaf must be: its CN and the extended key usages it needs. */
export interface LeafRole {
  readonly commonName: string;
  readonly usage: LeafUsage;
}

/** Checks a CA: parses, is a CA, self-signed, in validity at `now`, and the key matches. */
export function verifyCa(ca: CertifiedKey, now: Date = new Date(), files: PairFiles = {}): X509Certificate {
  const cert = parseX509(ca.certPem, files.cert);
  if (!cert.ca)
    throw new TrustError("chain_invalid", "CA certificate lacks basicConstraints CA:true", at(files.cert));
  if (!cert.checkIssued(cert) || !cert.verify(cert.publicKey)) {
    throw new TrustError("chain_invalid", "CA certificate is not self-signed", at(files.cert));
  }
  checkTime(cert, now, files.cert);
  checkKeyMatches(cert, ca.keyPem, files);
  return cert;
}

/** Checks a leaf: issued and signed by `caCert`, in validity at `now`, key matches, role fits. */
export function verifyLeaf(
  caCert: X509Certificate,
  leaf: CertifiedKey,
  role: LeafRole,
  now: Date = new Date(),
  files: PairFiles = {},
): X509Certificate {
  const cert = parseX509(leaf.certPem, files.cert);
  if (!cert.checkIssued(caCert) || !cert.verify(caCert.publicKey)) {
    throw new TrustError("chain_invalid", "certificate is not issued by this CA", at(files.cert));
  }
  if (cert.ca) throw new TrustError("wrong_identity", "leaf certificate is a CA", at(files.cert));
  checkTime(cert, now, files.cert);
  checkKeyMatches(cert, leaf.keyPem, files);
  const cn = commonNameOf(cert);
  if (cn !== role.commonName) {
    throw new TrustError(
      "wrong_identity",
      `CN is ${JSON.stringify(cn)}, want ${role.commonName}`,
      at(files.cert),
    );
  }
  const eku = cert.keyUsage ?? [];
  const want =
    role.usage === "server"
      ? [EKU_SERVER_AUTH]
      : role.usage === "client"
        ? [EKU_CLIENT_AUTH]
        : [EKU_SERVER_AUTH, EKU_CLIENT_AUTH];
  for (const oid of want) {
    if (!eku.includes(oid)) {
      throw new TrustError("wrong_identity", `certificate lacks extended key usage ${oid}`, at(files.cert));
    }
  }
  return cert;
}

/** The subject CN of a certificate, or undefined. */
export function commonNameOf(cert: X509Certificate): string | undefined {
  for (const line of cert.subject.split("\n")) {
    if (line.startsWith("CN=")) return line.slice(3);
  }
  return undefined;
}

function parseX509(pem: string, file: string | undefined): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (err) {
    throw new TrustError("malformed", "not a PEM certificate", { cause: err, ...at(file) });
  }
}

function checkTime(cert: X509Certificate, now: Date, file: string | undefined): void {
  if (now > cert.validToDate) {
    throw new TrustError("expired", `certificate expired at ${cert.validToDate.toISOString()}`, at(file));
  }
  if (now < cert.validFromDate) {
    throw new TrustError(
      "not_yet_valid",
      `certificate is valid from ${cert.validFromDate.toISOString()}`,
      at(file),
    );
  }
}

function checkKeyMatches(cert: X509Certificate, keyPem: string, files: PairFiles): void {
  let spki: Buffer;
  try {
    spki = createPublicKey(createPrivateKey(keyPem)).export({ type: "spki", format: "der" });
  } catch (err) {
    throw new TrustError("malformed", "not a PEM private key", { cause: err, ...at(files.key) });
  }
  if (!spki.equals(cert.publicKey.export({ type: "spki", format: "der" }))) {
    throw new TrustError("key_mismatch", "private key does not match the certificate", at(files.key));
  }
}

function at(file: string | undefined): { file?: string } {
  return file === undefined ? {} : { file };
}
