// The root logger: pino JSON to stdout with secrets redacted. Components take `log.child({ component })`.
import { pino, type Logger } from "pino";

/** Paths pino removes from every log object: credentials never reach the logs. */
export const REDACT_PATHS = [
  "authorization",
  "*.authorization",
  "headers.authorization",
  "*.headers.authorization",
  "metadata.authorization",
  "token",
  "*.token",
  "accessToken",
  "*.accessToken",
  "access_token",
  "*.access_token",
  "assertion",
  "*.assertion",
  "client_assertion",
  "*.client_assertion",
  "privateKey",
  "*.privateKey",
  "keyPem",
  "*.keyPem",
  "secret",
  "*.secret",
  "secrets",
  "*.secrets",
] as const;

/** Creates the daemon's root logger writing JSON lines to `destination` (stdout by default). */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: "clawker-cp" },
      redact: { paths: [...REDACT_PATHS], censor: "[redacted]" },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? pino.destination({ fd: 1, sync: false }),
  );
}

export type { Logger } from "pino";
