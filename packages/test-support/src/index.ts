// Test and benchmark helpers shared by every workspace. Never imported by product code.
export { waitFor, type WaitForOptions } from "./wait-for.js";
export { isAlive } from "./is-alive.js";
export { findOnPath } from "./find-on-path.js";
export {
  freePort,
  freePorts,
  withFreePorts,
  isAddrInUse,
  FreePortsError,
  type FreePortsOptions,
} from "./free-ports.js";
export {
  startMtlsGrpcServer,
  type MtlsGrpcServer,
  type MtlsGrpcServerOptions,
  type MtlsServerMaterial,
} from "./mtls-grpc-server.js";
export { JsonLines, captureJsonLines, type JsonLine } from "./json-lines.js";
export { stepWithin, processSnapshot } from "./step-within.js";
