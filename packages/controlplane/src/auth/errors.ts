// Authorization errors: one stable reason per failed check (logged and counted), its wire reason
// (one per API.md §5 class, so the ErrorInfo tells no more than the text) and one fixed message per
// class. Codes come from the listeners' table in @clawker/proto (LISTENER_ERRORS).
import type { StatusObject } from "@grpc/grpc-js";
import { ClawkerError, LISTENER_ERRORS, type ListenerReason } from "@clawker/proto";

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
  | "internal";

/**
 * The reason each check is answered with on the wire (ErrorInfo): the API.md §5 class only, so a
 * caller learns no more from the reason than from the text.
 */
export const authWireReason = {
  missing_token: "missing_or_malformed_token",
  malformed_token: "missing_or_malformed_token",
  token_inactive: "token_inactive",
  introspection_failed: "token_unverified",
  introspection_throttled: "token_unverified",
  unmapped_method: "unmapped_method",
  insufficient_scope: "permission_denied",
  client_mismatch: "permission_denied",
  internal: "internal",
} as const satisfies Record<AuthReason, ListenerReason>;

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
  internal: "internal error",
} as const satisfies Record<AuthReason, string>;

/** Each reason's status, encoded once: refusals are answered at flood rates. */
const FIXED = Object.fromEntries(
  (Object.keys(authWireReason) as AuthReason[]).map((r) => [
    r,
    LISTENER_ERRORS.fixed(authWireReason[r], reasonMessage[r]),
  ]),
) as Record<AuthReason, () => StatusObject>;

/** An authorization refusal carrying its stable reason; `toStatus()` is what goes on the wire. */
export class AuthError extends ClawkerError<AuthReason> {
  override readonly name = "AuthError";
  constructor(reason: AuthReason, options?: { cause?: unknown }) {
    super(reason, reasonMessage[reason], options);
  }

  /** The gRPC status for this refusal: the class's code and text, ErrorInfo in the trailers. */
  toStatus(): StatusObject {
    return statusFor(this.reason);
  }
}

/** The wire status for a reason: code and ErrorInfo of its class, text from `reasonMessage`. */
export function statusFor(reason: AuthReason): StatusObject {
  return FIXED[reason]();
}

/** Why an introspection request failed; never cached, always mapped to UNAUTHENTICATED. */
export type IntrospectionFailure = "unavailable" | "timeout" | "http_status" | "malformed_response";

/** A failed introspection request (transport, timeout, non-200 or an unparseable body). */
export class IntrospectionError extends ClawkerError<IntrospectionFailure> {
  override readonly name = "IntrospectionError";
  constructor(
    reason: IntrospectionFailure,
    message: string,
    options?: { cause?: unknown; httpStatus?: number },
  ) {
    super(reason, message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.httpStatus = options?.httpStatus;
  }
  /** The HTTP status when `reason` is `http_status`. */
  readonly httpStatus: number | undefined;
}
