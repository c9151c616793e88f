#!/usr/bin/env node
// clawkerd: the agent daemon inside every agent container (README.md). Reads the bootstrap
// files, serves the Session channel over mutual TLS and, on AgentReady, runs the container's
// main command and exits with its code. Exit 2: bootstrap or environment unusable (nothing bound).
import { performance } from "node:perf_hooks";
import { BOOTSTRAP_DIR, CLAWKERD_PORT, agentFullName } from "@clawker/proto";
import { AgentJobs } from "./agent-jobs.js";
import { loadBootstrap } from "./bootstrap.js";
import { ClawkerdError } from "./errors.js";
import { defaultBaseEnv, Executor } from "./executor.js";
import { tuneHeap } from "./heap-tuning.js";
import { agentLimitsOf, findJobCgroupRoot, JobCgroups } from "./job-cgroup.js";
import { DEFAULT_LOG_CAPACITY_BYTES } from "./job-log.js";
import { DEFAULT_MAX_STALL_MS, jobGateImplementation, jobServiceImplementation } from "./job-service.js";
import { createLogger, type LogLevel } from "./log.js";
import { MainCommand, parseRunAs } from "./main-command.js";
import { Registrar } from "./registrar.js";
import { ClawkerdServer } from "./server.js";
import { DEFAULT_STATE_DIR, StateStore } from "./state-store.js";
import { TrustInstaller } from "./trust-install.js";
import { trustServiceImplementation } from "./trust-service.js";
import { installFirewallCa } from "./trust-store.js";

// The start-up timeline (ms since the process began, Node's own clock), logged with `listening`:
// the agent's start -> registered waits on this, so every start shows where it went.
const timeline: Record<string, number> = {};
const mark = (step: string): void => {
  timeline[step] = Math.round(performance.now() * 10) / 10;
};
mark("modulesLoaded");
const env = process.env;
const LEVELS = new Set(["debug", "info", "warn", "error", "fatal", "silent"]);
const level = env["CLAWKERD_LOG_LEVEL"] ?? "info";
const log = createLogger(LEVELS.has(level) ? (level as LogLevel) : "info", undefined, {
  component: "clawkerd",
});

function die(message: string): never {
  process.stderr.write(`clawkerd: ${message}\n`);
  process.exit(2);
}

/** A positive integer setting from the environment, or `fallback`; anything else is exit 2. */
function positiveInt(name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n <= 0)
    die(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  return n;
}

const argv = process.argv.slice(2);
if (argv[0] === "--") argv.shift();
const bootstrapDir = env["CLAWKERD_BOOTSTRAP_DIR"] || BOOTSTRAP_DIR;
const listen = env["CLAWKERD_LISTEN"] || `0.0.0.0:${CLAWKERD_PORT}`;
const stateDir = env["CLAWKERD_STATE_DIR"] || DEFAULT_STATE_DIR;

// `clawkerd request-egress ...`: a one-shot command inside the container, not the daemon.
if (argv[0] === "request-egress") {
  const { requestEgressCommand } = await import("./request-egress.js");
  process.exit(
    await requestEgressCommand(argv.slice(1), { bootstrapDir, stateDir }, process.stdout, process.stderr),
  );
}

let bootstrap;
let runAs;
const state = new StateStore(stateDir);
try {
  bootstrap = await loadBootstrap(bootstrapDir);
  runAs = parseRunAs(env["CLAWKERD_RUN_AS"], process.getuid?.() === 0);
  await state.load();
} catch (err) {
  die(err instanceof ClawkerdError ? err.message : `start-up failed: ${String(err)}`);
}
mark("bootstrapLoaded");

// Before anything runs in the agent: the main command and jobs see the firewall CA trusted.
await installFirewallCa(log.child({ component: "trust-store" }));
mark("trustInstalled");

if (process.pid === 1) {
  log.warn(
    { event: "pid1_without_init" },
    "running as PID 1: orphans will not be reaped; run the container with --init",
  );
}

const baseEnv = defaultBaseEnv();
const executor = new Executor({ log: log.child({ component: "executor" }), baseEnv });
const registrar = new Registrar({ bootstrap, state, log: log.child({ component: "registrar" }) });
const main = new MainCommand({ log: log.child({ component: "main-command" }), argv, runAs, env: baseEnv });
const cgroupRoot = findJobCgroupRoot(env);
const agentJobs = new AgentJobs({
  agent: agentFullName(bootstrap.config.project, bootstrap.config.agentName),
  stateDir,
  cgroups: new JobCgroups(cgroupRoot.root, cgroupRoot.why),
  log: log.child({ component: "jobs" }),
  baseEnv,
  runAs: runAs ?? { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 },
  output: { capacityBytes: positiveInt("CLAWKERD_JOB_OUTPUT_BYTES", DEFAULT_LOG_CAPACITY_BYTES) },
  agentLimits: agentLimitsOf(),
});
try {
  agentJobs.load();
} catch (err) {
  die(`cannot read the jobs in ${stateDir}: ${String(err)}`);
}
mark("jobsLoaded");
log.info(
  { event: "job_cgroups", root: cgroupRoot.root ?? "", why: cgroupRoot.why },
  cgroupRoot.root === undefined ? "jobs run under the agent's limits only" : "jobs get cgroups of their own",
);
let stopping: Promise<never> | undefined;
const server = new ClawkerdServer({
  bootstrap,
  listen,
  executor,
  registrar,
  state,
  main,
  log,
  requestExit: (code) => void stop(code, "exit_on_non_zero"),
  jobService: jobServiceImplementation({
    jobs: agentJobs,
    agentName: bootstrap.config.agentName,
    project: bootstrap.config.project,
    log: log.child({ component: "job-service" }),
    maxStallMs: positiveInt("CLAWKERD_JOB_WATCH_STALL_MS", DEFAULT_MAX_STALL_MS),
  }),
  jobGateService: jobGateImplementation({ jobs: agentJobs, log: log.child({ component: "job-service" }) }),
  // A rotated firewall CA, pushed by the control plane to running agents (trust-install.ts).
  trustService: trustServiceImplementation({
    installer: new TrustInstaller(log.child({ component: "trust-store" })),
    log: log.child({ component: "trust-service" }),
  }),
});

function stop(code: number, why: string): Promise<never> {
  stopping ??= (async () => {
    log.info({ event: "stopping", why, exitCode: code }, "clawkerd stopping");
    try {
      await server.close();
      await executor.close();
      await agentJobs.close();
    } catch (err) {
      log.error({ err, event: "close_failed" }, "close failed");
    }
    log.info({ event: "stopped", exitCode: code }, "clawkerd stopped");
    process.exit(code);
  })();
  return stopping;
}

for (const sig of ["SIGTERM", "SIGINT"] as const) {
  process.on(sig, () => {
    // With a main command the container's life is its life: forward and wait for its exit.
    if (main.forward(sig))
      log.info({ signal: sig, event: "signal_forwarded" }, "signal forwarded to the main command");
    else void stop(0, sig);
  });
}
main.on("exit", (code) => void stop(code, "main_exited"));
process.on("uncaughtException", (err) => {
  log.fatal({ err, event: "uncaught_exception" }, "uncaught exception");
  void stop(1, "uncaught_exception");
});
process.on("unhandledRejection", (err) => {
  log.fatal({ err, event: "unhandled_rejection" }, "unhandled rejection");
  void stop(1, "unhandled_rejection");
});

try {
  const address = await server.start();
  mark("listening");
  tuneHeap();
  log.info(
    {
      event: "listening",
      address,
      agent: bootstrap.config.agentName,
      project: bootstrap.config.project,
      initialized: state.initialized,
      registration: state.registration?.phase ?? "none",
      processStartUnixMs: Math.round(performance.timeOrigin),
      timeline,
    },
    "clawkerd serving Session",
  );
} catch (err) {
  log.fatal({ err, listen, event: "listen_failed" }, "cannot serve");
  await stop(1, "listen_failed");
}
