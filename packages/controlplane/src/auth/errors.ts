// Authorization errors: one stable reason per failure class, one table from reason to gRPC status
// and one fixed message per status class (API.md §5), so no check leaks which part failed.
import { Metadata, status, type StatusObject } from "@grpc/grpc-js";

/** Why a call was refused or failed; stable strings for logs and tests. */
export type AuthReason =
  | "missing_token"
  | "malformed_token"
  | "token_inactive"
  | "introspection_failed"
  | "introspection_throttled"
  | "unmapped_method"
  | "insufficient_scope"
  | "client_mismatch"
  | "not_ready"
  | "internal";

/** The single table from reason to gRPC code (API.md §5); exhaustive by construction. */
export const reasonStatus = {
  missing_token: status.UNAUTHENTICATED,
  malformed_token: status.UNAUTHENTICATED,
  token_inactive: status.UNAUTHENTICATED,
  introspection_failed: status.UNAUTHENTICATED,
  introspection_throttled: status.UNAUTHENTICATED,
  unmapped_method: status.UNAUTHENTICATED,
  insufficient_scope: status.PERMISSION_DENIED,
  client_mismatch: status.PERMISSION_DENIED,
  not_ready: status.FAILED_PRECONDITION,
  internal: status.INTERNAL,
} as const satisfies Record<AuthReason, status>;

/**
 * The fixed texts clients see, defined once. Missing scope and a wrong client id share one text
 * (API.md §5); the UNAUTHENTICATED classes say no more than the class.
 */
export const reasonMessage = {
  missing_token: "missing or malformed bearer token",
  malformed_token: "missing or malformed bearer token",
  token_inactive: "invalid or expired token",
  introspection_failed: "token could not be verified",
  // A connection that spent its share of introspections: the same text, the token was not checked.
  introspection_throttled: "token could not be verified",
  unmapped_method: "method is not permitted",
  insufficient_scope: "permission denied",
  client_mismatch: "permission denied",
  not_ready: "control plane is starting up",
  internal: "internal error",
} as const satisfies Record<AuthReason, string>;

/** An authorization refusal carrying its stable reason; `toStatus()` is what goes on the wire. */
export class AuthError extends Error {
  override readonly name = "AuthError";
  constructor(
    readonly reason: AuthReason,
    options?: { cause?: unknown },
  ) {
    super(reasonMessage[reason], options);
  }

  /** The gRPC status for this refusal: code from the table, the fixed text, empty trailers. */
  toStatus(): StatusObject {
    return statusFor(this.reason);
  }
}

/** The wire status for a reason (code from `reasonStatus`, text from `reasonMessage`). */
export function statusFor(reason: AuthReason): StatusObject {
  return { code: reasonStatus[reason], details: reasonMessage[reason], metadata: new Metadata() };
}

/** Why an introspection request failed; never cached, always mapped to UNAUTHENTICATED. */
export type IntrospectionFailure = "unavailable" | "timeout" | "http_status" | "malformed_response";

/** A failed introspection request (transport, timeout, non-200 or an unparseable body). */
export class IntrospectionError extends Error {
  override readonly name = "IntrospectionError";
  constructor(
    readonly reason: IntrospectionFailure,
    message: string,
    options?: { cause?: unknown; httpStatus?: number },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.httpStatus = options?.httpStatus;
  }
  /** The HTTP status when `reason` is `http_status`. */
  readonly httpStatus: number | undefined;
}
