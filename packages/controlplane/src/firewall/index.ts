// The egress firewall's rule store, validation and action queue: see README.md. (The proxy lives
// in ./proxy/ and has its own entry.)
export * from "./errors.js";
export * from "./rule.js";
export { type DestinationResult, parseDestination } from "./destination.js";
export * from "./rule-validation.js";
export * from "./rule-merge.js";
export * from "./rule-store.js";
export * from "./floor-file.js";
export * from "./action-queue.js";
