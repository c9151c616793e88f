// grpc-js logs through a process-wide logger that defaults to console.error, past pino's redaction:
// a refused `authorization` value (non-ASCII bytes) came out on stderr in clear (issue 10 §2).
// Here every grpc-js line goes through our logger and the refusal rate limit, and no header value
// survives: the metadata failure is reduced to the header's name, anything else is scrubbed.
import { logVerbosity, setLogger, setLogVerbosity } from "@grpc/grpc-js";
import type { Logger } from "../logging.js";
import type { RefusalLog } from "./refusal-log.js";

/** The listener name grpc-js lines are counted under (grpc-js's logger is process-wide). */
export const GRPC_JS_LISTENER = "grpc-js";

const BAD_METADATA = "Failed to add metadata entry ";
/** A header name as HTTP/2 allows it; anything else is not echoed. */
const HEADER_NAME = /^[a-z0-9!#$%&'*+.^_`|~-]{1,64}$/;
const MAX_TEXT = 300;

/**
 * Removes credentials from a grpc-js log text: the value after any `authorization` key (JSON or
 * `key: value`), bearer tokens anywhere, and `-bin` header values; then bounds the length.
 */
export function scrubGrpcText(text: string): string {
  const scrubbed = text
    // A quoted or bracketed value, or an unquoted one up to the end of its sentence or line.
    .replace(
      /(authorization"?\s*[:=]\s*)("(?:[^"\\]|\\.)*"|\[[^\]]*\]|[^\n]*?(?=\.\s|\.?$))/gim,
      '$1"[redacted]"',
    )
    .replace(/\bbearer\s+[^\s",\]]+/gi, "Bearer [redacted]")
    .replace(/(-bin"?\s*[:=]\s*)("(?:[^"\\]|\\.)*"|\[[^\]]*\]|\S+)/gi, '$1"[redacted]"');
  return scrubbed.length > MAX_TEXT ? `${scrubbed.slice(0, MAX_TEXT)}...` : scrubbed;
}

/**
 * Points grpc-js's logger at `log` (through `refusals`, so a flood of bad requests is rate-limited
 * and counted). grpc-js's debug tracing is passed on only when `log` is at debug level or below.
 */
export function routeGrpcJsLogs(log: Logger, refusals: RefusalLog): void {
  const emit = (level: "warn" | "info" | "debug", args: unknown[]): void => {
    const text = args.map((a) => (a instanceof Error ? a.message : String(a))).join(" ");
    if (text.startsWith(BAD_METADATA)) {
      // "Failed to add metadata entry <key>: <value>. <why>": only the key may be logged.
      const key = text.slice(BAD_METADATA.length).split(":", 1)[0] ?? "";
      refusals.refused(
        GRPC_JS_LISTENER,
        "bad_metadata",
        { event: "grpc_bad_metadata", header: HEADER_NAME.test(key) ? key : "(not a header name)" },
        "request header dropped: value not allowed",
      );
      return;
    }
    refusals.refused(
      GRPC_JS_LISTENER,
      `log_${level}`,
      { event: "grpc_log", text: scrubGrpcText(text) },
      "grpc-js",
      level,
    );
  };
  setLogger({
    error: (...args: unknown[]) => emit("warn", args),
    info: (...args: unknown[]) => emit("info", args),
    debug: (...args: unknown[]) => emit("debug", args),
  });
  setLogVerbosity(log.isLevelEnabled("debug") ? logVerbosity.DEBUG : logVerbosity.ERROR);
}
