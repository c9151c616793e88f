// The trust set the CLI mints at `auth init` (the CLI is the root of trust, ARCHITECTURE.md
// "Agent identity"), and the per-agent leaf it mints before each agent container starts.
import { isIP } from "node:net";
import {
  createCa,
  issueLeaf,
  type CertifiedKey,
  type Curve,
  DEFAULT_CA_VALIDITY_MS,
  DEFAULT_LEAF_VALIDITY_MS,
} from "./certificates.js";
import { TrustError } from "./errors.js";
import { createSigningKey, type SigningKey } from "./signing-key.js";

/** CN of the control plane's server leaf and of its client leaf (used to dial clawkerd). */
export const CONTROLPLANE_CN = "clawker-controlplane";
/** CN of the CLI's client leaf. */
export const CLI_CN = "clawker-cli";
/** CN of every agent's clawkerd leaf. */
export const CLAWKERD_CN = "clawker-clawkerd";
/**
 * SANs every control-plane server leaf carries, before the caller's. `clawker-controlplane` is the
 * name the Go CLI dials with and the CP container's name on the agents' network (API.md,
 * "Server names").
 */
export const CONTROLPLANE_DEFAULT_NAMES: readonly string[] = [
  "localhost",
  CONTROLPLANE_CN,
  "127.0.0.1",
  "::1",
];
/** Agent leaf lifetime: 24 hours. */
export const AGENT_LEAF_VALIDITY_MS = 24 * 3600_000;

/** Everything `auth init` mints: a CA, three leaves and the CLI's ES256 signing key. */
export interface TrustSet {
  readonly ca: CertifiedKey;
  /** CN clawker-controlplane, server auth, SANs CONTROLPLANE_DEFAULT_NAMES plus `serverNames`. */
  readonly controlPlaneServer: CertifiedKey;
  /** CN clawker-controlplane, client auth: the CP's identity when it dials clawkerd. */
  readonly controlPlaneClient: CertifiedKey;
  /** CN clawker-cli, client auth. */
  readonly cli: CertifiedKey;
  readonly signingKey: SigningKey;
}

/** Options for mintTrustSet. */
export interface TrustSetOptions {
  /** Extra SANs for the CP server leaf; IP literals become IP SANs, anything else DNS SANs. */
  readonly serverNames?: readonly string[];
  readonly curve?: Curve;
  readonly caValidityMs?: number;
  readonly leafValidityMs?: number;
}

/** Mints a fresh trust set (ECDSA P-256 unless `curve` says P-384). */
export async function mintTrustSet(options: TrustSetOptions = {}): Promise<TrustSet> {
  const curve = options.curve ?? "P-256";
  const validityMs = options.leafValidityMs ?? DEFAULT_LEAF_VALIDITY_MS;
  const ca = await createCa({ curve, validityMs: options.caValidityMs ?? DEFAULT_CA_VALIDITY_MS });
  const names = [...new Set([...CONTROLPLANE_DEFAULT_NAMES, ...(options.serverNames ?? [])])];
  const [controlPlaneServer, controlPlaneClient, cli, signingKey] = await Promise.all([
    issueLeaf(ca, {
      commonName: CONTROLPLANE_CN,
      dnsNames: names.filter((n) => isIP(n) === 0),
      ipAddresses: names.filter((n) => isIP(n) !== 0),
      usage: "server",
      curve,
      validityMs,
    }),
    issueLeaf(ca, { commonName: CONTROLPLANE_CN, usage: "client", curve, validityMs }),
    issueLeaf(ca, { commonName: CLI_CN, usage: "client", curve, validityMs }),
    createSigningKey(),
  ]);
  return { ca, controlPlaneServer, controlPlaneClient, cli, signingKey };
}

/** Options for issueAgentLeaf. */
export interface AgentLeafOptions {
  /** The agent's full name (the container name), e.g. `clawker.myproject.dev`. */
  readonly agentName: string;
  /** The container id, 12 to 64 lowercase hex digits (the full 64 normally). */
  readonly containerId: string;
  readonly curve?: Curve;
  readonly validityMs?: number;
}

/** The URI SAN naming an agent. */
export function agentUri(agentName: string): string {
  return `urn:clawker:agent:${agentName}`;
}

/** The URI SAN naming a container. */
export function containerUri(containerId: string): string {
  return `urn:clawker:container:${containerId}`;
}

/** Issues an agent's 24 h clawkerd leaf (client + server auth, URI SANs for agent and container). */
export async function issueAgentLeaf(ca: CertifiedKey, options: AgentLeafOptions): Promise<CertifiedKey> {
  // Docker's container-name alphabet; keeps the URN free of characters that need escaping.
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$/.test(options.agentName)) {
    throw new TrustError("invalid_argument", `bad agent name: ${JSON.stringify(options.agentName)}`);
  }
  if (!/^[0-9a-f]{12,64}$/.test(options.containerId)) {
    throw new TrustError("invalid_argument", `bad container id: ${JSON.stringify(options.containerId)}`);
  }
  return issueLeaf(ca, {
    commonName: CLAWKERD_CN,
    uris: [agentUri(options.agentName), containerUri(options.containerId)],
    usage: "both",
    validityMs: options.validityMs ?? AGENT_LEAF_VALIDITY_MS,
    ...(options.curve === undefined ? {} : { curve: options.curve }),
  });
}
