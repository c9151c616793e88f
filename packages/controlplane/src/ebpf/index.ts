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
  type GatewayPort,
  type GcResult,
  type Route,
  type Status,
} from "./protocol.js";
export {
  CLOSED_TARGETS,
  Enforcement,
  MANAGER_HELPER,
  type EnforcedMode,
  type EnforcementOptions,
  type EnforcementTargets,
  type EnrolledContainer,
} from "./enforcement.js";
export { cgroupDriverOf, cgroupLayout, type CgroupDriver, type CgroupLayout } from "./cgroup-layout.js";
export { findBpfMounts, type BpfMounts } from "./mounts.js";
export { findExecutable } from "../supervisor/find-executable.js";
export {
  decideEbpf,
  hostFacts,
  type EbpfDecision,
  type EbpfHostFacts,
  type EbpfSetting,
} from "./availability.js";
export { EnforcementError, type EnforcementReason } from "./errors.js";
