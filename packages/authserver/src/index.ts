// @clawker/authserver: the embedded Hydra-compatible OAuth2 server. The product is the
// `clawker-authserver` process; this entry point exports what a supervisor needs to configure it
// and what tests need to run it in-process.
export {
  DEFAULT_ACCESS_TOKEN_TTL_SECONDS,
  DEFAULT_ADMIN_SOCKET_NAME,
  DEFAULT_AUDIENCE,
  DEFAULT_PUBLIC_PORT,
  ENV_LOG_LEVEL,
  loadConfigFile,
  parseConfig,
  type AuthServerConfig,
  type AuthServerConfigInput,
} from "./config.js";
export { AuthServer, type AuthServerAddresses, type AuthServerRunOptions } from "./auth-server.js";
export { ENV_INSTANCE_NONCE, ENV_LIFELINE_FD } from "./supervised.js";
export { AuthServerError, ConfigError, type AuthServerReason } from "./errors.js";
export type { HydraClientInput } from "./clients.js";
export type { IntrospectionResponse } from "./introspection.js";
