// Errors of the trust-material library, each with a stable `reason` callers can switch on.

/** Why a trust operation failed; stable strings, safe to match on. */
export type TrustErrorReason =
  | "exists" // a trust set is already stored and `force` was not given
  | "missing" // a file of the set is absent
  | "malformed" // a file does not parse as what it should be
  | "insecure_permissions" // a private key file or the directory is readable by others
  | "key_mismatch" // a private key does not belong to its certificate / public JWK
  | "chain_invalid" // a certificate is not issued by the CA of the set
  | "expired" // a certificate's notAfter is in the past
  | "not_yet_valid" // a certificate's notBefore is in the future
  | "wrong_identity" // a certificate has the wrong CN, SANs or key usages for its role
  | "invalid_argument"; // a caller passed a name, address or validity we refuse to sign

/** An error of the trust library; `file` names the offending file when there is one. */
export class TrustError extends Error {
  override readonly name = "TrustError";
  readonly reason: TrustErrorReason;
  readonly file: string | undefined;

  constructor(reason: TrustErrorReason, message: string, options: { file?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.reason = reason;
    this.file = options.file;
  }
}
