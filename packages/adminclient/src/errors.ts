// Errors of the admin client: a failed call becomes an AdminError whose `reason` is the stable
// reason the control plane put in the status's google.rpc.ErrorInfo (API.md §6); only a peer that
// sends none (an older Go control plane, or grpc-js itself: no connection, deadline, cancel) gets
// one from the status code. Token endpoint failures are TokenErrors. Callers switch on `reason`,
// never on message text.
import { status } from "@grpc/grpc-js";
import {
  CLAWKER_ERROR_DOMAIN,
  ClawkerError,
  errorDetailOf,
  type AdminReason,
  type ClawkerErrorOptions,
} from "@clawker/proto";

/** The reason a status code stands for when the status carries no ErrorInfo. */
export type StatusReason =
  | "cancelled" // the caller aborted the call
  | "invalid_argument" // the server rejected the request's fields
  | "deadline_exceeded" // the call's deadline passed
  | "not_found"
  | "already_exists"
  | "permission_denied" // token lacks the scope (API.md §5)
  | "resource_exhausted"
  | "failed_precondition" // e.g. a peer's ready gate that sends no reason
  | "aborted"
  | "unimplemented" // the control plane does not serve this RPC (yet)
  | "internal" // the server failed; it leaks no detail
  | "unavailable" // no connection (not running, wrong address, TLS handshake refused)
  | "unauthenticated"; // no/invalid/inactive token, or introspection failed

/**
 * Why an AdminService call failed: an AdminReason (domain `clawker.dev`), a firewall reason
 * (`firewall.clawker.dev`) or one a newer control plane added, as the ErrorInfo said; else the
 * status code's StatusReason. `AdminError.domain` says which (undefined: no ErrorInfo). The
 * `string & {}` admits a reason this client does not know yet while keeping the named ones.
 */
export type AdminErrorReason = AdminReason | StatusReason | (string & {});

/**
 * Every gRPC status code (except OK) and the reason it stands for when the status carries no
 * ErrorInfo. Exhaustive by type. Message text is never consulted.
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
  [status.FAILED_PRECONDITION]: "failed_precondition",
  [status.ABORTED]: "aborted",
  [status.OUT_OF_RANGE]: "invalid_argument",
  [status.UNIMPLEMENTED]: "unimplemented",
  [status.INTERNAL]: "internal",
  [status.UNAVAILABLE]: "unavailable",
  [status.DATA_LOSS]: "internal",
  [status.UNAUTHENTICATED]: "unauthenticated",
} as const satisfies Record<Exclude<status, status.OK>, StatusReason>;

/** Options of an AdminError beyond ClawkerError's. */
export interface AdminErrorOptions extends ClawkerErrorOptions {
  /** The ErrorInfo domain; absent when the status carried no ErrorInfo. */
  readonly domain?: string;
}

/** A failed AdminService call: its `reason`, the gRPC `code` and the server's message. */
export class AdminError extends ClawkerError<AdminErrorReason> {
  override readonly name = "AdminError";
  /** The gRPC status code the call ended with. */
  readonly code: status;
  /** The full method path, e.g. `/clawker.admin.v1.AdminService/ListAgents`. */
  readonly method: string;
  /** The ErrorInfo domain the reason is from (`clawker.dev`, `firewall.clawker.dev`); undefined: from the code. */
  readonly domain: string | undefined;

  constructor(
    reason: AdminErrorReason,
    code: status,
    method: string,
    message: string,
    options?: AdminErrorOptions,
  ) {
    super(reason, message, options);
    this.code = code;
    this.method = method;
    this.domain = options?.domain;
  }
}

/**
 * Maps a grpc-js call error (a ServiceError or anything thrown) to an AdminError: the ErrorInfo's
 * reason, domain and metadata when the status carries one, else the code's StatusReason.
 */
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
  const detail = errorDetailOf(err);
  if (detail !== undefined) {
    return new AdminError(detail.reason, code, method, details, {
      cause: err,
      domain: detail.domain,
      metadata: detail.metadata,
    });
  }
  return new AdminError(STATUS_REASONS[code], code, method, details, { cause: err });
}

/**
 * The reasons that say the bearer token itself was refused (so a fresh one may pass): the admin
 * listener's token classes, and `unauthenticated` from a peer that sends no ErrorInfo.
 */
const TOKEN_REFUSALS: ReadonlySet<AdminErrorReason> = new Set<AdminErrorReason>([
  "missing_or_malformed_token",
  "token_inactive",
  "token_unverified",
  "unauthenticated",
] satisfies (AdminReason | StatusReason)[]);

/** Whether a failed call refused the bearer token (the cached token should be dropped). */
export function isTokenRefusal(err: AdminError): boolean {
  return TOKEN_REFUSALS.has(err.reason) && (err.domain === undefined || err.domain === CLAWKER_ERROR_DOMAIN);
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
export class TokenError extends ClawkerError<TokenErrorReason> {
  override readonly name = "TokenError";
  /** The HTTP status the token endpoint answered with. */
  readonly status: number | undefined;
  /** The OAuth2 `error` code from the answer's JSON body (RFC 6749 §5.2). */
  readonly oauthError: string | undefined;

  constructor(
    reason: TokenErrorReason,
    message: string,
    options: { status?: number; oauthError?: string; cause?: unknown } = {},
  ) {
    super(reason, message, options.cause === undefined ? undefined : { cause: options.cause });
    this.status = options.status;
    this.oauthError = options.oauthError;
  }
}
