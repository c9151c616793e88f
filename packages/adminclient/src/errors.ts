// Errors of the admin client: gRPC status codes mapped to stable reasons (AdminError), and token
// endpoint failures (TokenError). Callers switch on `reason`, never on message text.
import { status } from "@grpc/grpc-js";

/** Why an AdminService call failed; stable strings, safe to match on. */
export type AdminErrorReason =
  | "cancelled" // the caller aborted the call
  | "invalid_argument" // the server rejected the request's fields
  | "deadline_exceeded" // the call's deadline passed
  | "not_found"
  | "already_exists"
  | "permission_denied" // token lacks the scope (API.md §5)
  | "resource_exhausted"
  | "starting_up" // FAILED_PRECONDITION `control plane is starting up` (API.md §5): not ready yet
  | "failed_precondition" // any other FAILED_PRECONDITION, e.g. ExecAgent: the agent has no Session
  | "aborted"
  | "unimplemented" // the control plane does not serve this RPC (yet)
  | "internal" // the server failed; it leaks no detail
  | "unavailable" // no connection (not running, wrong address, TLS handshake refused)
  | "unauthenticated"; // no/invalid/inactive token, or introspection failed

/** The ready gate's fixed FAILED_PRECONDITION text (API.md §5). */
export const STARTING_UP_MESSAGE = "control plane is starting up";

/**
 * Every gRPC status code (except OK) and the reason it becomes. Exhaustive by type.
 * FAILED_PRECONDITION is `starting_up` only with the ready gate's text, else `failed_precondition`.
 */
export const STATUS_REASONS = {
  [status.CANCELLED]: "cancelled",
  [status.UNKNOWN]: "internal",
  [status.INVALID_ARGUMENT]: "invalid_argument",
  [status.DEADLINE_EXCEEDED]: "deadline_exceeded",
  [status.NOT_FOUND]: "not_found",
  [status.ALREADY_EXISTS]: "already_exists",
  [status.PERMISSION_DENIED]: "permission_denied",
  [status.RESOURCE_EXHAUSTED]: "resource_exhausted",
  [status.FAILED_PRECONDITION]: "starting_up",
  [status.ABORTED]: "aborted",
  [status.OUT_OF_RANGE]: "invalid_argument",
  [status.UNIMPLEMENTED]: "unimplemented",
  [status.INTERNAL]: "internal",
  [status.UNAVAILABLE]: "unavailable",
  [status.DATA_LOSS]: "internal",
  [status.UNAUTHENTICATED]: "unauthenticated",
} as const satisfies Record<Exclude<status, status.OK>, AdminErrorReason>;

/** A failed AdminService call: the mapped `reason`, the gRPC `code` and the server's message. */
export class AdminError extends Error {
  override readonly name = "AdminError";
  readonly reason: AdminErrorReason;
  /** The gRPC status code the call ended with. */
  readonly code: status;
  /** The full method path, e.g. `/clawker.admin.v1.AdminService/ListAgents`. */
  readonly method: string;

  constructor(
    reason: AdminErrorReason,
    code: status,
    method: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.reason = reason;
    this.code = code;
    this.method = method;
  }
}

/** Maps a grpc-js call error (a ServiceError or anything thrown) to an AdminError. */
export function toAdminError(err: unknown, method: string): AdminError {
  if (err instanceof AdminError) return err;
  const code = grpcCode(err);
  const details =
    typeof err === "object" && err !== null && "details" in err && typeof err.details === "string"
      ? err.details
      : err instanceof Error
        ? err.message
        : String(err);
  if (code === undefined || code === status.OK) {
    return new AdminError("internal", status.INTERNAL, method, details, { cause: err });
  }
  const reason =
    code === status.FAILED_PRECONDITION && details !== STARTING_UP_MESSAGE
      ? "failed_precondition"
      : STATUS_REASONS[code];
  return new AdminError(reason, code, method, details, { cause: err });
}

function grpcCode(err: unknown): Exclude<status, status.OK> | status.OK | undefined {
  if (typeof err !== "object" || err === null || !("code" in err)) return undefined;
  const code = err.code;
  if (typeof code !== "number" || !Number.isInteger(code) || code < 0 || code > 16) return undefined;
  return code;
}

/** Why a token could not be obtained; stable strings, safe to match on. */
export type TokenErrorReason =
  | "token_request_failed" // the token endpoint answered with an error status
  | "unreachable" // no answer: connection refused, TLS failure, timeout
  | "invalid_response" // a 2xx answer without a usable access token
  | "invalid_key"; // the signing key cannot sign ES256 assertions

/** A failed token request. `status` and `oauthError` are set when the endpoint answered. */
export class TokenError extends Error {
  override readonly name = "TokenError";
  readonly reason: TokenErrorReason;
  /** The HTTP status the token endpoint answered with. */
  readonly status: number | undefined;
  /** The OAuth2 `error` code from the answer's JSON body (RFC 6749 §5.2). */
  readonly oauthError: string | undefined;

  constructor(
    reason: TokenErrorReason,
    message: string,
    options: { status?: number; oauthError?: string; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.reason = reason;
    this.status = options.status;
    this.oauthError = options.oauthError;
  }
}
