// @clawker/clawkerd: the agent daemon's building blocks (the bin is main.ts).
export { loadBootstrap, commonName, type Bootstrap } from "./bootstrap.js";
export { ClawkerdError, ERROR_CODES, type ClawkerdReason } from "./errors.js";
export { Executor, defaultBaseEnv, type ExecutorOptions } from "./executor.js";
export {
  Job,
  killGroup,
  validateShell,
  type JobResult,
  type JobState,
  type ShellSpec,
  type StageExitInfo,
  type StageSpec,
} from "./job.js";
export { createLogger, type Logger, type LogLevel } from "./log.js";
export { MainCommand, parseRunAs, type RunAs } from "./main-command.js";
export {
  OutputBuffer,
  Watcher,
  DEFAULT_CAPACITY_BYTES,
  DEFAULT_HIGH_WATER_BYTES,
  DEFAULT_MAX_CHUNK_BYTES,
  type OutputEvent,
  type OutputBufferOptions,
  type WatchOptions,
} from "./output-buffer.js";
export {
  checkControlPlaneClient,
  peerIdentityInterceptor,
  EKU_CLIENT_AUTH,
  PEER_REFUSED_MESSAGE,
  PEER_WIRE_REASON,
  type PeerCheck,
} from "./peer-identity.js";
export {
  Registrar,
  agentListenerChannel,
  checkControlPlane,
  AGENT_TOKEN_SCOPE,
  REGISTER_SCOPE,
  REQUEST_SCOPE,
  type RegisterOutcome,
} from "./registrar.js";
export { AGENT_TOKEN_FILE, loadAgentToken, saveAgentToken, type AgentToken } from "./agent-token.js";
export { requestEgressCommand, REQUEST_EGRESS_EXIT, type RequestEgressPaths } from "./request-egress.js";
export { ClawkerdServer, type ClawkerdServerOptions } from "./server.js";
export { CreditWindow } from "./credit-window.js";
export { Session, STDIN_WINDOW_BYTES, type SessionDeps } from "./session.js";
export { StateStore, DEFAULT_STATE_DIR, STATE_FILE, type RegistrationRecord } from "./state-store.js";
