// clawker-cp proper: parses flags and config (nothing binds if
// either is wrong), then runs the Daemon and exits with its code. The only place that exits.
// The auth helper's boot is the critical path of the start-up: its first steps (auth-boot.ts, a
// small module graph) fork it before the daemon's own modules load, which then load while it boots.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { AuthBoot } from "./auth-boot.js";
import { ConfigError, loadConfig } from "./config.js";
import type { StopCause } from "./daemon.js";
import { createLogger } from "./logging.js";
import { StartupTimeline } from "./startup-timeline.js";

// Everything above is loaded by now: Node's own start plus the first steps' module graph.
const modulesLoadedMs = StartupTimeline.sinceExecMs();

/** How long the exit waits for the log's last writes before the exit hook writes what is left. */
const EXIT_FLUSH_MS = 2_000;

const HELP = `clawker-cp: the clawker control plane daemon

Usage: clawker-cp [--config FILE]

Starts the control plane on its embedded defaults (the embedded OAuth2 server instead of Ory
Hydra) unless the config says otherwise. Logs are JSON lines on stdout.

Options:
  -c, --config FILE   configuration file (JSON or YAML); also CLAWKER_CP_CONFIG
  -h, --help          show this help
  -v, --version       print the version

Environment overrides:
  CLAWKER_CP_DATA_DIR      state directory (registry, auth server store, generated configs)
  CLAWKER_CP_TRUST_DIR     trust material from \`clawker auth init\`
  CLAWKER_CP_ADMIN_ADDR    admin gRPC listener host:port (default 127.0.0.1:7443)
  CLAWKER_CP_AGENT_ADDR    agent gRPC listener host:port (default 127.0.0.1:7444)
  CLAWKER_CP_HEALTH_ADDR   /healthz listener host:port (default 127.0.0.1:7080)
  CLAWKER_CP_ADMIN_SOCKET  admin Unix socket path (default <data dir>/run/admin.sock)
  CLAWKER_CP_AUTH_MODE     embedded | ory
  CLAWKER_CP_LOG_LEVEL     trace | debug | info | warn | error | fatal

Exit codes: 0 stopped by SIGTERM/SIGINT or drained to zero; 1 failure (config, start-up,
helper crash, serve failure); 2 bad command line.
`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  return pkg.version;
}

let args;
try {
  args = parseArgs({
    options: {
      config: { type: "string", short: "c" },
      help: { type: "boolean", short: "h" },
      version: { type: "boolean", short: "v" },
    },
    strict: true,
    allowPositionals: false,
  });
} catch (err) {
  process.stderr.write(
    `clawker-cp: ${err instanceof Error ? err.message : String(err)}\n(see clawker-cp --help)\n`,
  );
  process.exit(2);
}
if (args.values.help === true) {
  process.stdout.write(HELP);
  process.exit(0);
}
if (args.values.version === true) {
  process.stdout.write(`clawker-cp ${version()}\n`);
  process.exit(0);
}

let config;
try {
  config = loadConfig(args.values.config);
} catch (err) {
  process.stderr.write(`clawker-cp: ${err instanceof ConfigError ? err.message : String(err)}\n`);
  process.exit(1);
}

const log = createLogger(config.log.level);
const timeline = new StartupTimeline(log);
timeline.record("modules", 0, modulesLoadedMs);
timeline.record("config", modulesLoadedMs, StartupTimeline.sinceExecMs());
// Causes that arrive while the daemon's modules load wait for it: a helper is forked by then.
const early: StopCause[] = [];
let stop = (cause: StopCause): void => void early.push(cause);
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => stop({ kind: "signal", signal }));
}
// After start-up nothing may crash the process: route everything into the drain.
process.on("uncaughtException", (error) => stop({ kind: "fatal", error }));
process.on("unhandledRejection", (error) => stop({ kind: "fatal", error }));

const boot = new AuthBoot(config, log);
await boot.start();
const daemonModulesAt = StartupTimeline.sinceExecMs();
const { Daemon } = await import("./daemon.js").catch(async (err: unknown): Promise<never> => {
  // No Daemon to drain yet: stop what the first steps forked, then exit 1 like any failed start.
  timeline.record("daemon_modules", daemonModulesAt, StartupTimeline.sinceExecMs(), "failed");
  log.fatal({ err, event: "startup_failed" }, "cannot load the daemon's modules");
  await boot.supervisor.shutdown();
  await flushLog();
  process.exit(1);
});
timeline.record("daemon_modules", daemonModulesAt, StartupTimeline.sinceExecMs());
const daemon = new Daemon(config, log, boot);
stop = (cause) => daemon.stop(cause);
for (const cause of early.splice(0)) daemon.stop(cause);

const code = await daemon.run();
await flushLog();
process.exit(code);

/**
 * Waits for the log sink's batch in flight before an exit: process.exit would leave that async
 * write's outcome unknown, and the exit hook, writing it again, printed the drain lines twice.
 */
async function flushLog(): Promise<void> {
  await new Promise<void>((resolve) => {
    const stuck = setTimeout(resolve, EXIT_FLUSH_MS); // a pipe nobody reads: the exit hook tries
    log.flush(() => {
      clearTimeout(stuck);
      resolve();
    });
  });
}
