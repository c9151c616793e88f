// Which party a verified client certificate speaks for. Every leaf chains to the same CLI-minted CA,
// so the chain alone does not separate the CLI from an agent; the certificate's names do
// (adminclient's trust/bootstrap.ts mints them): the CLI's leaf is CN clawker-cli, an agent's is CN
// clawker-clawkerd with one agent and one container URI SAN, the control plane's own client leaf
// is CN clawker-controlplane. Listeners check this once per connection, right after the handshake.
import type { PeerCertificate } from "node:tls";
import { CLAWKERD_CN, CONTROLPLANE_CN } from "@clawker/proto";
import { certIdentity } from "../agents/identity-gate.js";

/** CN of the CLI's client leaf (adminclient's `CLI_CN`; the control plane may not import it). */
export const CLI_CN = "clawker-cli";

/** The roles a client certificate can have. */
export type PeerRole = "cli" | "agent" | "controlplane";

/** A classified peer: its role and the key per-peer caps count by (the leaf's SHA-256). */
export interface Peer {
  readonly role: PeerRole;
  readonly thumbprint: string;
}

/**
 * The role of a client certificate the TLS layer already verified, or undefined when its names fit
 * no role (a leaf from the CA with another CN, an agent leaf without exactly one agent and one
 * container SAN, a CLI or control-plane leaf carrying agent SANs).
 */
export function peerOf(cert: Pick<PeerCertificate, "raw" | "subject" | "subjectaltname">): Peer | undefined {
  if (cert.raw === undefined || cert.raw.length === 0) return undefined;
  const id = certIdentity(cert);
  const hasAgentNames = id.agentNames.length > 0 || id.containerIds.length > 0;
  let role: PeerRole | undefined;
  if (id.commonName === CLI_CN && !hasAgentNames) role = "cli";
  else if (id.commonName === CONTROLPLANE_CN && !hasAgentNames) role = "controlplane";
  else if (id.commonName === CLAWKERD_CN && id.agentNames.length === 1 && id.containerIds.length === 1)
    role = "agent";
  return role === undefined ? undefined : { role, thumbprint: id.thumbprint };
}
