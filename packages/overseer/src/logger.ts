// The one logging call the overseer makes. A pino Logger satisfies this interface as is.

/** The logger the overseer writes to: object first, short fixed message (pino's shape). */
export interface Logger {
  warn(obj: Record<string, unknown>, msg: string): void;
}

/** A logger that discards everything, the default when none is given. */
export const silentLogger: Logger = Object.freeze({ warn: () => {} });

/** Calls `log.warn`, swallowing anything a broken logger throws: logging must not break delivery. */
export function safeWarn(log: Logger, obj: Record<string, unknown>, msg: string): void {
  try {
    log.warn(obj, msg);
  } catch {
    // A logger failure has nowhere better to go; the counters still record what happened.
  }
}
