// Turns any error into an exit code and one clear stderr line (plus the stack and causes with
// --debug). The tables from library error reasons to exit codes live here; a control plane's
// error is decided on the reason its ErrorInfo carries, never on its message.
import { inspect } from "node:util";
import type { status } from "@grpc/grpc-js";
import {
  AdminError,
  STATUS_REASONS,
  TokenError,
  TrustError,
  type StatusReason,
  type TokenErrorReason,
  type TrustErrorReason,
} from "@clawker/adminclient";
import { CLAWKER_ERROR_DOMAIN, type AdminReason } from "@clawker/proto";
import { CliError, ExitCode, type ExitCodeValue } from "./exit-codes.js";
import type { Output } from "./io.js";

/** Every reason the admin listener sends (clawker.dev, proto's ADMIN_ERRORS). */
const ADMIN_EXIT = {
  unmapped_method: ExitCode.auth,
  missing_or_malformed_token: ExitCode.auth,
  token_inactive: ExitCode.auth,
  token_unverified: ExitCode.auth,
  permission_denied: ExitCode.auth,
  undecodable_request: ExitCode.error,
  request_timeout: ExitCode.error,
  internal: ExitCode.error,
  starting_up: ExitCode.notRunning,
  unimplemented: ExitCode.error,
  invalid_argument: ExitCode.error,
  agent_not_found: ExitCode.error,
  agent_ambiguous: ExitCode.error,
  agent_starting: ExitCode.error,
  no_session: ExitCode.error,
  session_closed: ExitCode.error,
} as const satisfies Record<AdminReason, ExitCodeValue>;

/** A status without ErrorInfo (grpc-js's own: no connection, deadline; or a peer that sends none). */
const STATUS_EXIT = {
  cancelled: ExitCode.error,
  invalid_argument: ExitCode.error,
  deadline_exceeded: ExitCode.notRunning,
  not_found: ExitCode.error,
  already_exists: ExitCode.exists,
  permission_denied: ExitCode.auth,
  resource_exhausted: ExitCode.error,
  failed_precondition: ExitCode.error,
  aborted: ExitCode.error,
  unimplemented: ExitCode.error,
  internal: ExitCode.error,
  unavailable: ExitCode.notRunning,
  unauthenticated: ExitCode.auth,
} as const satisfies Record<StatusReason, ExitCodeValue>;

/** Hints for reasons a user can act on. */
const ADMIN_HINT: Partial<Record<AdminReason | StatusReason, string>> = {
  unavailable: " (is the control plane running? try: clawker controlplane status)",
  starting_up: " (wait for it to become healthy)",
  agent_starting: " (the agent is still starting; try again shortly)",
};

const TOKEN_EXIT = {
  token_request_failed: ExitCode.auth,
  unreachable: ExitCode.notRunning,
  invalid_response: ExitCode.auth,
  invalid_key: ExitCode.auth,
} as const satisfies Record<TokenErrorReason, ExitCodeValue>;

const TRUST_EXIT = {
  exists: ExitCode.exists,
  missing: ExitCode.error,
  malformed: ExitCode.error,
  insecure_permissions: ExitCode.error,
  key_mismatch: ExitCode.error,
  chain_invalid: ExitCode.error,
  expired: ExitCode.error,
  not_yet_valid: ExitCode.error,
  wrong_identity: ExitCode.error,
  invalid_argument: ExitCode.usage,
} as const satisfies Record<TrustErrorReason, ExitCodeValue>;

/** The exit code for an error. */
export function exitCodeOf(err: unknown): ExitCodeValue {
  if (err instanceof CliError) return err.exitCode;
  if (err instanceof AdminError) return adminExit(err);
  if (err instanceof TokenError) return TOKEN_EXIT[err.reason];
  if (err instanceof TrustError) return TRUST_EXIT[err.reason];
  return ExitCode.error;
}

/** The one-line message for an error. */
export function messageOf(err: unknown): string {
  if (err instanceof AdminError) {
    const hint = hintOf(err);
    return `${err.method.split("/").pop() ?? err.method}: ${err.reason}: ${conciseGrpcMessage(err.message)}${hint}`;
  }
  if (err instanceof TokenError) return `token: ${err.reason}: ${err.message}`;
  if (err instanceof TrustError) {
    if (err.reason === "exists") {
      return `trust material: exists: a trust set is already stored there (${err.file ?? "?"}); pass --force to replace it`;
    }
    const hint = err.reason === "missing" ? " (run: clawker auth init)" : "";
    return `trust material: ${err.reason}: ${err.message}${hint}`;
  }
  if (err instanceof Error) return err.message.split("\n")[0] ?? err.message;
  return String(err);
}

/**
 * The exit code of a failed call, by its reason: one of the admin listener's (clawker.dev), or a
 * StatusReason for a status without ErrorInfo. Another domain's or a newer server's reason, which
 * this CLI has no row for, is decided by its code.
 */
function adminExit(err: AdminError): ExitCodeValue {
  if (err.domain === CLAWKER_ERROR_DOMAIN && Object.hasOwn(ADMIN_EXIT, err.reason))
    return ADMIN_EXIT[err.reason as AdminReason];
  if (err.domain === undefined && Object.hasOwn(STATUS_EXIT, err.reason))
    return STATUS_EXIT[err.reason as StatusReason];
  return STATUS_EXIT[STATUS_REASONS[err.code as Exclude<status, status.OK>] ?? "internal"];
}

/** The hint for a reason a user can act on ("" for any other). */
function hintOf(err: AdminError): string {
  const isOurs = err.domain === CLAWKER_ERROR_DOMAIN || err.domain === undefined;
  return isOurs && Object.hasOwn(ADMIN_HINT, err.reason) ? (ADMIN_HINT[err.reason as AdminReason] ?? "") : "";
}

/** Writes the error to stderr: one line, then details, then (debug) stack and causes. */
export function reportError(err: unknown, stderr: Output, debug: boolean): ExitCodeValue {
  stderr.write(`clawker: error: ${messageOf(err)}\n`);
  if (err instanceof CliError) for (const line of err.details) stderr.write(`${line}\n`);
  if (debug) {
    let e: unknown = err;
    let depth = 0;
    while (e !== undefined && depth < 8) {
      stderr.write(
        `${depth === 0 ? "" : "caused by: "}${e instanceof Error ? (e.stack ?? e.message) : inspect(e)}\n`,
      );
      e = e instanceof Error ? e.cause : undefined;
      depth++;
    }
  }
  return exitCodeOf(err);
}

/** grpc-js connection errors carry "No connection established. Last error: ...": keep the cause. */
function conciseGrpcMessage(message: string): string {
  const m = /Last error: (?:Error: )?(.*?)\.?(?: Resolution note:.*)?$/s.exec(message);
  return m?.[1] !== undefined && m[1] !== "" ? `no connection (${m[1]})` : message;
}
