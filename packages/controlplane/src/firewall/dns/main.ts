#!/usr/bin/env node
// clawker-dns-gate: the DNS gate as a helper process the daemon supervises.
// Usage: main.js --config FILE, with the control channel on fd 3 (newline-delimited JSON).
// Exit 0 after SIGTERM/SIGINT or EOF on fd 3 (the daemon is gone), 2 on bad usage or config
// (nothing bound), 1 when start-up or serving fails.
import { fstatSync } from "node:fs";
import { Socket } from "node:net";
import { pino } from "pino";
import { EbpfClient } from "../../ebpf/index.js";
import { EbpfDnsCacheWriter, UnrecordedDnsCacheWriter } from "./cache-writer.js";
import { loadDnsGateConfig, type DnsGateConfig } from "./config.js";
import { ControlChannel } from "./control-channel.js";
import { DnsGateError } from "./errors.js";
import { DnsGate } from "./gate.js";

/** The control channel's file descriptor in this process. */
const CONTROL_FD = 3;

const USAGE = `usage: clawker-dns-gate --config FILE   (control channel on fd ${CONTROL_FD})

Answers DNS for agents under the policy the daemon sends on fd ${CONTROL_FD}; see
packages/controlplane/src/firewall/dns/README.md.`;

function configPath(argv: readonly string[]): string {
  const [flag, value, ...rest] = argv;
  if (flag === "--help" || flag === "-h") {
    console.log(USAGE);
    process.exit(0);
  }
  if (flag === "--config" && value !== undefined && rest.length === 0) return value;
  if (flag?.startsWith("--config=") === true && value === undefined) return flag.slice("--config=".length);
  throw new DnsGateError("invalid_config", `bad arguments ${JSON.stringify(argv)}`);
}

let config: DnsGateConfig;
try {
  config = loadDnsGateConfig(configPath(process.argv.slice(2)));
  // The channel is how the daemon sends policy and learns we are alive: without it, refuse to run.
  // Without one, fd 3 is libuv's own epoll descriptor, which is neither a socket nor a pipe.
  const fd = fstatSync(CONTROL_FD);
  if (!fd.isSocket() && !fd.isFIFO()) throw new Error("not a socket or pipe");
} catch (err) {
  console.error(err instanceof DnsGateError ? err.message : `no control channel on fd ${CONTROL_FD}`);
  console.error(USAGE);
  process.exit(2);
}

const log = pino({
  level: config.logLevel,
  base: { component: "dns-gate", pid: process.pid },
  timestamp: pino.stdTimeFunctions.isoTime,
  formatters: { level: (label) => ({ level: label }) },
});
const ebpf =
  config.ebpfSocket === undefined
    ? undefined
    : new EbpfClient({ socketPath: config.ebpfSocket, timeoutMs: config.ebpfTimeoutMs, log });
const control = new Socket({ fd: CONTROL_FD, readable: true, writable: true });
const gate = new DnsGate({
  address: config.listen.address,
  port: config.listen.port,
  writer: ebpf === undefined ? new UnrecordedDnsCacheWriter() : new EbpfDnsCacheWriter(ebpf),
  log,
  // Called only after start(), when `channel` below exists.
  onDecision: (d) => channel.decision(d),
  cacheMaxEntries: config.cacheMaxEntries,
  maxTcpConnections: config.maxTcpConnections,
  tcpIdleMs: config.tcpIdleMs,
  writeTimeoutMs: config.writeTimeoutMs,
  ...(config.udpReceiveBufferBytes === undefined
    ? {}
    : { udpReceiveBufferBytes: config.udpReceiveBufferBytes }),
});
const channel = new ControlChannel({
  input: control,
  output: control,
  gate,
  log,
  maxBufferedBytes: config.decisionBufferBytes,
});
const lifetime = new AbortController();
let stopped: Promise<never> | undefined;

/** Stops once (later calls share the first one's exit code) and exits the process. */
function stop(code: number, why: Record<string, unknown>): Promise<never> {
  stopped ??= (async () => {
    log.info({ event: "stopping", ...why }, "dns gate stopping");
    lifetime.abort();
    channel.close();
    try {
      await gate.close();
      await ebpf?.close();
    } catch (err) {
      log.error({ err, event: "close_failed" }, "close failed");
      code = code === 0 ? 1 : code;
    }
    control.destroy();
    log.info({ event: "stopped", exitCode: code }, "dns gate stopped");
    log.flush();
    process.exit(code);
  })();
  return stopped;
}

for (const sig of ["SIGTERM", "SIGINT"] as const) process.on(sig, () => void stop(0, { signal: sig }));
process.on("uncaughtException", (err) => {
  log.fatal({ err, event: "uncaught_exception" }, "uncaught exception");
  void stop(1, { reason: "uncaught_exception" });
});
process.on("unhandledRejection", (err) => {
  log.fatal({ err, event: "unhandled_rejection" }, "unhandled rejection");
  void stop(1, { reason: "unhandled_rejection" });
});

try {
  // Listen for EOF first: a daemon that dies during start-up must not leave us running.
  const served = channel.serve(lifetime.signal);
  void served.then(() => stop(0, { reason: "control_channel_closed" }));
  if (ebpf === undefined) {
    log.warn(
      { event: "dns_cache_not_recorded" },
      "no eBPF manager socket configured: answers are not recorded in the dns_cache",
    );
  } else {
    // Fail closed: without the manager no answer could be recorded, so none would be sent.
    await ebpf.start(lifetime.signal);
  }
  const bound = await gate.start(lifetime.signal);
  channel.send("ready", { address: bound.address, port: bound.port, pid: process.pid });
} catch (err) {
  log.fatal(
    { err, event: "start_failed", reason: err instanceof DnsGateError ? err.reason : undefined },
    "start failed",
  );
  await stop(1, { reason: "start_failed" });
}
