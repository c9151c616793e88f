#!/usr/bin/env node
// clawker-authserver: the embedded Hydra-compatible OAuth2 server as its own process.
// Usage: clawker-authserver --config FILE. Exit 0 after SIGTERM/SIGINT, 2 on a bad config or
// usage (nothing bound), 1 when start-up or serving fails or the supervisor's lifeline breaks.
import { pino } from "pino";
import { AuthServer } from "./auth-server.js";
import { ENV_LOG_LEVEL, loadConfigFile, type AuthServerConfig } from "./config.js";
import { AuthServerError, ConfigError } from "./errors.js";
import { StartupSteps } from "./startup-steps.js";
import { ENV_INSTANCE_NONCE, ENV_LIFELINE_FD, instanceNonceFromEnv, watchLifeline } from "./supervised.js";

// Everything above is loaded by now: Node's own start plus this program's whole module graph.
const modulesLoadedMs = StartupSteps.sinceExecMs();

const USAGE = `usage: clawker-authserver --config FILE

Serves the subset of Ory Hydra's API that clawker uses (client_credentials with private_key_jwt,
RFC 7662 introspection, client registration). FILE is JSON; see the package README.
Environment: CLAWKER_AUTHSERVER_CONFIG (instead of --config), ${ENV_LOG_LEVEL} (overrides logLevel);
set by a supervising control plane: ${ENV_LIFELINE_FD} (exit when that fd reaches EOF),
${ENV_INSTANCE_NONCE} (echoed by /health/ready as "instance").`;

/** After the supervisor is gone nothing is worth waiting for: exit by then whatever close() does. */
const PARENT_GONE_EXIT_MS = 1_000;

/** Redacted wherever they appear in a log object: credentials never reach the logs. */
const REDACT = [
  "req.headers.authorization",
  "headers.authorization",
  "*.authorization",
  "token",
  "*.token",
  "access_token",
  "*.access_token",
  "client_assertion",
  "*.client_assertion",
  "assertion",
  "*.assertion",
  "jwks",
  "*.jwks",
  "key",
  "*.key",
  "d",
  "*.d",
];

function configPath(argv: readonly string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--help" || a === "-h") {
      console.log(USAGE);
      process.exit(0);
    }
    if (a === "--config") {
      const v = argv[i + 1];
      if (v === undefined) throw new ConfigError(["--config needs a file path"]);
      return v;
    }
    if (a.startsWith("--config=")) return a.slice("--config=".length);
    throw new ConfigError([`unknown argument ${JSON.stringify(a)}`]);
  }
  const fromEnv = process.env["CLAWKER_AUTHSERVER_CONFIG"];
  return fromEnv === undefined || fromEnv === "" ? undefined : fromEnv;
}

let config: AuthServerConfig;
let instance: string | undefined;
try {
  const file = configPath(process.argv.slice(2));
  if (file === undefined) throw new ConfigError(["no config file: pass --config FILE"]);
  config = loadConfigFile(file);
  instance = instanceNonceFromEnv();
} catch (err) {
  console.error(err instanceof AuthServerError ? err.message : String(err));
  if (!(err instanceof ConfigError)) console.error(USAGE);
  process.exit(2);
}

// Synchronous writes: pino's asynchronous stdout registers an exit hook that flushes with
// writeSync and, on EPIPE (our supervisor, the reader, is gone), retries every 100 ms forever, so
// process.exit() never returned and an orphan outlived SIGTERM (issue 10 §2). A sync write that
// fails EPIPE makes pino drop further lines instead.
const log = pino(
  {
    level: config.logLevel,
    base: { component: "authserver", pid: process.pid },
    redact: { paths: REDACT, censor: "[redacted]" },
    timestamp: pino.stdTimeFunctions.isoTime,
  },
  pino.destination({ fd: 1, sync: true }),
);
const steps = new StartupSteps(log);
steps.record("modules", 0, modulesLoadedMs);
steps.record("config", modulesLoadedMs, StartupSteps.sinceExecMs());
const server = new AuthServer(config, log, instance === undefined ? {} : { instance });
let stopping = false;

async function stop(code: number, why: Record<string, unknown>): Promise<never> {
  if (!stopping) {
    stopping = true;
    log.info({ event: "stopping", ...why }, "auth server stopping");
    try {
      await server.close();
    } catch (err) {
      log.error({ err, event: "close_failed" }, "close failed");
      code = code === 0 ? 1 : code;
    }
    log.info({ event: "stopped", exitCode: code }, "auth server stopped");
  }
  process.exit(code);
}

for (const sig of ["SIGTERM", "SIGINT"] as const) process.on(sig, () => void stop(0, { signal: sig }));
try {
  watchLifeline(() => {
    // Our supervisor died without stopping us (SIGKILL): we must not keep its ports.
    setTimeout(() => process.exit(1), PARENT_GONE_EXIT_MS).unref();
    void stop(1, { reason: "parent_gone" });
  });
} catch (err) {
  log.fatal({ err, event: "start_failed", reason: "invalid_config" }, "start failed");
  process.exit(2);
}
process.on("uncaughtException", (err) => {
  log.fatal({ err, event: "uncaught_exception" }, "uncaught exception");
  void stop(1, { reason: "uncaught_exception" });
});
process.on("unhandledRejection", (err) => {
  log.fatal({ err, event: "unhandled_rejection" }, "unhandled rejection");
  void stop(1, { reason: "unhandled_rejection" });
});

try {
  await server.start();
} catch (err) {
  log.fatal(
    { err, event: "start_failed", reason: err instanceof AuthServerError ? err.reason : undefined },
    "start failed",
  );
  await stop(1, { reason: "start_failed" });
}
