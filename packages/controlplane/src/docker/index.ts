// The control plane's view of the Docker engine: see README.md.
export {
  DEFAULT_DOCKER_SOCKET,
  type DockerClientOptions,
  createDockerClient,
  parseDockerHost,
} from "./client.js";
export { DockerError, type DockerErrorReason, toDockerError } from "./errors.js";
export {
  DEFAULT_COUNT_TIMEOUT_MS,
  RUNNING_AGENTS_FILTER,
  countRunningAgentContainers,
} from "./agent-count.js";
export {
  EventsFeeder,
  type EventsFeederOptions,
  FEEDER_DEFAULTS,
  type FeederBackoff,
  type Publisher,
} from "./events-feeder.js";
export type {
  NetworkCreated,
  NetworkDestroyed,
  NetworkEvent,
  NetworkEventSource,
  NetworkMembership,
  NetworksReconciled,
} from "./event-parse.js";
