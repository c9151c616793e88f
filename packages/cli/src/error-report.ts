// Turns any error into an exit code and one clear stderr line (plus the stack and causes with
// --debug). The single table from library error reasons to exit codes lives here.
import { inspect } from "node:util";
import {
  AdminError,
  TokenError,
  TrustError,
  type AdminErrorReason,
  type TokenErrorReason,
  type TrustErrorReason,
} from "@clawker/adminclient";
import { CliError, ExitCode, type ExitCodeValue } from "./exit-codes.js";
import type { Output } from "./io.js";

const ADMIN_EXIT = {
  cancelled: ExitCode.error,
  invalid_argument: ExitCode.error,
  deadline_exceeded: ExitCode.notRunning,
  not_found: ExitCode.error,
  already_exists: ExitCode.exists,
  permission_denied: ExitCode.auth,
  resource_exhausted: ExitCode.error,
  starting_up: ExitCode.notRunning,
  failed_precondition: ExitCode.error,
  aborted: ExitCode.error,
  unimplemented: ExitCode.error,
  internal: ExitCode.error,
  unavailable: ExitCode.notRunning,
  unauthenticated: ExitCode.auth,
} as const satisfies Record<AdminErrorReason, ExitCodeValue>;

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
  if (err instanceof AdminError) return ADMIN_EXIT[err.reason];
  if (err instanceof TokenError) return TOKEN_EXIT[err.reason];
  if (err instanceof TrustError) return TRUST_EXIT[err.reason];
  return ExitCode.error;
}

/** The one-line message for an error. */
export function messageOf(err: unknown): string {
  if (err instanceof AdminError) {
    const hint =
      err.reason === "unavailable"
        ? " (is the control plane running? try: clawker controlplane status)"
        : err.reason === "starting_up"
          ? " (wait for it to become healthy)"
          : "";
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
