// @clawker/overseer: the control plane's typed event bus and its event vocabulary. Imports
// nothing internal.

/** Typed event bus with per-subscriber bounded queues, its options, handles and counters. */
export {
  DEFAULT_CAPACITY,
  type Handler,
  type SubscribeOptions,
  type Subscription,
  type SubscriptionStats,
  Topic,
  type TopicOptions,
  type TopicStats,
  type TopicStream,
} from "./topic.js";
/** The control plane's five topics, aggregated stats and a snapshot helper for any topics. */
export {
  Overseer,
  type OverseerOptions,
  type StatsSnapshot,
  type StatsSource,
  type StatsTotals,
  statsSnapshot,
} from "./overseer.js";
/** Data-only event types (one discriminated union per topic), label names and a label check. */
export * from "./events.js";
/** The logger interface (pino-compatible) and a silent default. */
export { type Logger, silentLogger } from "./logger.js";
/** Errors with a stable `reason`. */
export { OverseerError, type OverseerErrorReason } from "./errors.js";
