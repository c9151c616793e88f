// @clawker/controlplane: the daemon as a library (embedding, tests) and the client of the eBPF
// manager's control socket (the manager's own tests drive it); the bin is main.ts. Importing this
// module starts nothing.
export { Daemon, exitCodeFor, type DaemonAddresses, type StopCause } from "./daemon.js";
export { ConfigError, ConfigSchema, loadConfig, type Config } from "./config.js";
export { createLogger, REDACT_PATHS, type Logger } from "./logging.js";
export {
  EbpfClient,
  EbpfError,
  LIMITS,
  type CgroupTarget,
  type ContainerConfig,
  type DecisionEvent,
  type DnsEntry,
  type Dump,
  type EbpfClientOptions,
  type EbpfReason,
  type EnrollResult,
  type EventStream,
  type GcResult,
  type Route,
  type Status,
} from "./ebpf/index.js";
