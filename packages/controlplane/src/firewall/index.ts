// The egress firewall's rule store, validation, action queue, compile step and container modes:
// see README.md. The subsystem (firewall.ts), its RPC handlers (handlers.ts) and the interception
// CA are imported by path, so importing this entry loads neither the proxy nor @peculiar/x509.
export * from "./errors.js";
export * from "./rule.js";
export { type DestinationResult, parseDestination } from "./destination.js";
export * from "./rule-validation.js";
export * from "./rule-merge.js";
export * from "./rule-store.js";
export * from "./floor-file.js";
export * from "./action-queue.js";
export * from "./compile.js";
export * from "./container-modes.js";
