export { TrustError, type TrustErrorReason } from "./trust/errors.js";
export {
  createCa,
  issueLeaf,
  parseCertificate,
  curveOfKey,
  DEFAULT_CA_VALIDITY_MS,
  DEFAULT_LEAF_VALIDITY_MS,
  EKU_CLIENT_AUTH,
  EKU_SERVER_AUTH,
  type CaOptions,
  type CertifiedKey,
  type Curve,
  type LeafOptions,
  type LeafUsage,
  type ValidityOptions,
} from "./trust/certificates.js";
export { createSigningKey, checkSigningKey, type SigningKey } from "./trust/signing-key.js";
export {
  mintTrustSet,
  issueAgentLeaf,
  agentUri,
  containerUri,
  AGENT_LEAF_VALIDITY_MS,
  CLAWKERD_CN,
  CLI_CN,
  CONTROLPLANE_CN,
  CONTROLPLANE_DEFAULT_NAMES,
  type AgentLeafOptions,
  type TrustSet,
  type TrustSetOptions,
} from "./trust/bootstrap.js";
export { loadTokenCredentials, type TokenCredentials } from "./trust/token-credentials.js";
export { verifyCa, verifyLeaf, commonNameOf, type LeafRole, type PairFiles } from "./trust/verify.js";
export {
  writeTrustSet,
  loadTrustSet,
  trustPaths,
  TRUST_FILES,
  type LoadOptions,
  type TrustFile,
  type TrustPaths,
  type WriteOptions,
} from "./trust/store.js";
export {
  AdminError,
  TokenError,
  toAdminError,
  isTokenRefusal,
  STATUS_REASONS,
  type AdminErrorOptions,
  type AdminErrorReason,
  type StatusReason,
  type TokenErrorReason,
} from "./errors.js";
export {
  CLIENT_ASSERTION_TYPE,
  ASSERTION_LIFETIME_S,
  importSigningKey,
  signClientAssertion,
  type AssertionClaims,
} from "./client-assertion.js";
export {
  TokenSource,
  DEFAULT_TOKEN_ENDPOINT,
  DEFAULT_REFRESH_WINDOW_MS,
  DEFAULT_TOKEN_TIMEOUT_MS,
  type AccessToken,
  type TokenSourceOptions,
} from "./token-source.js";
export {
  dial,
  dialSocket,
  adminChannelCredentials,
  bearerCallCredentials,
  checkControlPlaneIdentity,
  DEFAULT_ADMIN_TARGET,
  type ClientTls,
  type DialOptions,
} from "./dial.js";
export {
  AdminClient,
  openAdminClient,
  openAdminSocketClient,
  cliTls,
  DEFAULT_DEADLINE_MS,
  type AdminCallOptions,
  type AdminClientOptions,
  type ClockSkew,
  type OpenAdminClientOptions,
  type OpenAdminSocketClientOptions,
  type RequestOf,
  type ResponseOf,
  type UnaryMethod,
} from "./admin-client.js";
export {
  createAgentContainer,
  removeAgentContainer,
  checkAgentNames,
  checkBootstrapConfig,
  agentContainerName,
  bootstrapArchive,
  dockerClient,
  dockerSocketPath,
  networkGateway,
  AgentBootstrapError,
  AGENT_ASSERTION_LIFETIME_S,
  AGENT_CLIENT_ID,
  DEFAULT_AGENT_ENTRYPOINT,
  DEFAULT_AGENT_NETWORK,
  DEFAULT_AGENT_CGROUP_PARENT,
  agentCgroupParent,
  DEFAULT_STOP_TIMEOUT_S,
  MAX_AGENT_NAME_LENGTH,
  type AgentBootstrapReason,
  type AgentContainer,
  type AgentContainerOptions,
  type RemoveAgentOptions,
  type RemovedAgent,
} from "./agent-bootstrap.js";
export { writeUstar, readUstar, type UstarEntry, type UstarRecord } from "./ustar.js";
export type { StreamMethod } from "./admin-client.js";
