// The eBPF manager client: see README.md.
export { EbpfClient, type EbpfClientOptions, type EventStream } from "./client.js";
export { EbpfError, type EbpfReason } from "./errors.js";
export {
  LIMITS,
  type CgroupTarget,
  type ContainerConfig,
  type DecisionEvent,
  type DnsEntry,
  type Dump,
  type EnrollResult,
  type GcResult,
  type Route,
  type Status,
} from "./protocol.js";
