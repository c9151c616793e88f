// The agent bootstrap contract between the CLI (which creates agent containers), clawkerd (which
// reads the material at start) and the control plane (which checks the identity they carry).
// Like the .proto files, changing a name here breaks running agents: add, never rename.

/** Docker labels on everything clawker creates (ARCHITECTURE.md). */
export const LABELS = Object.freeze({
  managed: "dev.clawker.managed",
  purpose: "dev.clawker.purpose",
  agent: "dev.clawker.agent",
  project: "dev.clawker.project",
} as const);

/**
 * Node flags clawkerd runs with (the agent entrypoint's, before the bundle): 1 MiB semi-spaces.
 * A command's output reaches clawkerd in pipe-read Buffers and leaves it in grpc-js frames, all
 * backed outside V8's heap, and V8 counts such memory allocated since its last full collection
 * against the old generation's limit until a collection frees it. Streaming, clawkerd allocates
 * little on its heap, so at V8's default young generation (8 MiB semi-spaces on a 24 GiB host)
 * scavenges were rare, the dead Buffers piled up and set off a full collection about every 10 MiB
 * streamed: ~45 % of clawkerd's CPU per MiB. 1 MiB semi-spaces scavenge them every few hundred
 * chunks; clawkerd's heap-tuning.ts gives the rest room. @clawker/clawkerd README, "Heap settings".
 */
export const CLAWKERD_NODE_FLAGS: readonly string[] = Object.freeze(["--max-semi-space-size=1"]);

/** The port clawkerd serves the Session channel on inside every agent container. */
export const CLAWKERD_PORT = 7700;

/** Where the CLI copies the bootstrap material into a created (not yet started) container. */
export const BOOTSTRAP_DIR = "/run/clawker/bootstrap";

/** The bootstrap files inside BOOTSTRAP_DIR (all 0400, owned by root). */
export const BOOTSTRAP_FILES = Object.freeze({
  /** The CLI's CA: clawkerd accepts only control-plane client certificates chaining to it. */
  ca: "ca.crt",
  /** The agent's 24 h leaf (CN clawker-clawkerd, agent and container URI SANs). */
  cert: "agent.crt",
  key: "agent.key",
  /** The single-use ES256 client assertion for `clawker-agent`. */
  assertion: "assertion.jwt",
  /** AgentBootstrapConfig as JSON. */
  config: "agent.json",
} as const);

/**
 * The firewall's interception CA certificate (public part only, 0444), copied in by the CLI when
 * the control plane has one: agents trust it for names whose rules need the TLS opened. Outside
 * BOOTSTRAP_DIR, which only root may enter, because the agent's own user must read it too.
 */
export const FIREWALL_CA_FILE = "/etc/clawker/firewall-ca.crt";

/** The bundle clawkerd writes at every start: the image's system CAs plus FIREWALL_CA_FILE (0444). */
export const CA_BUNDLE_FILE = "/etc/clawker/ca-bundle.crt";

/** The agent's environment when a firewall CA is copied in (Node reads the first, OpenSSL the second). */
export const FIREWALL_CA_ENV = Object.freeze({
  NODE_EXTRA_CA_CERTS: FIREWALL_CA_FILE,
  SSL_CERT_FILE: CA_BUNDLE_FILE,
} as const);

/** What clawkerd needs to know besides its keys (BOOTSTRAP_FILES.config). */
export interface AgentBootstrapConfig {
  /** Short agent name as the user typed it (`dev`). */
  readonly agentName: string;
  /** Project the agent belongs to; "" for none. */
  readonly project: string;
  /** The control plane's agent listener, `host:port`, reachable from the container. */
  readonly controlPlaneAddr: string;
  /** The token endpoint URL; also the audience the assertion was minted for. */
  readonly tokenEndpoint: string;
  /** The name the control plane's server certificate is checked against. */
  readonly serverName: string;
}

/** The leaf certificate's common name for clawkerd. */
export const CLAWKERD_CN = "clawker-clawkerd";
/** The control plane's common name (server leaf, and the client leaf it dials clawkerd with). */
export const CONTROLPLANE_CN = "clawker-controlplane";

/** The full agent name: `<project>.<agent>`, or the agent name alone without a project. */
export function agentFullName(project: string, agentName: string): string {
  return project === "" ? agentName : `${project}.${agentName}`;
}

/** The URI SAN naming an agent in its leaf certificate. */
export function agentUri(fullName: string): string {
  return `urn:clawker:agent:${fullName}`;
}

/** The URI SAN naming the container in an agent's leaf certificate. */
export function containerUri(containerId: string): string {
  return `urn:clawker:container:${containerId}`;
}
