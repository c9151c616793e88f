// The auth domain's public surface: interceptors, introspection, client registration, Ory mode.
export * from "./errors.js";
export * from "./introspector.js";
export * from "./introspection-cache.js";
export * from "./auth-interceptor.js";
export * from "./ready-gate.js";
export * from "./recovery.js";
export * from "./client-registration.js";
export * from "./admin-sockets.js";
export * from "./ory-config.js";
export * from "./ory-schema-validator.js";
