// The identity gate behind AgentService.Register (ARCHITECTURE.md "Agent identity"): the caller's
// leaf certificate, its network address, the container that owns that address and the container's
// labels must all name the same agent. Every identity failure is one PERMISSION_DENIED text and
// one wire reason (`identity_denied`); the log line says which check failed.
import { createHash } from "node:crypto";
import type { PeerCertificate } from "node:tls";
import { CLAWKERD_CN, ClawkerError, LABELS, agentFullName, type AgentReason } from "@clawker/proto";
import { isAgentLabels, type AgentEvent, type Topic } from "@clawker/overseer";
import type { Logger } from "../logging.js";
import type { ContainerAddressIndex, ContainerRecord } from "./address-index.js";
import type { Registry } from "./registry.js";

/** The one text every identity refusal carries (API.md §5: one uniform message). */
export const IDENTITY_DENIED_MESSAGE = "agent identity not accepted";

/** Which identity check failed (logged, never sent). */
export type IdentityDenial =
  | "no_peer_certificate"
  | "wrong_common_name"
  | "agent_san_count"
  | "container_san_count"
  | "unknown_address"
  | "ambiguous_address"
  | "not_agent_container"
  | "agent_name_mismatch"
  | "container_id_mismatch"
  | "request_mismatch"
  | "thumbprint_mismatch"
  | "not_registered";

/** Reasons of a GateError: an identity denial, a malformed request, or an internal failure. */
export type GateReason = IdentityDenial | "invalid_argument" | "internal";

/** A refused Register; `reason` is stable (logged), `message` is what the caller may see. */
export class GateError extends ClawkerError<GateReason> {
  override readonly name = "GateError";
}

/**
 * The agent listener's reason for every gate reason (exhaustive): each identity check is the one
 * `identity_denied`, so neither the text nor the ErrorInfo tells a caller which check failed.
 */
export const GATE_WIRE_REASON = {
  no_peer_certificate: "identity_denied",
  wrong_common_name: "identity_denied",
  agent_san_count: "identity_denied",
  container_san_count: "identity_denied",
  unknown_address: "identity_denied",
  ambiguous_address: "identity_denied",
  not_agent_container: "identity_denied",
  agent_name_mismatch: "identity_denied",
  container_id_mismatch: "identity_denied",
  request_mismatch: "identity_denied",
  thumbprint_mismatch: "identity_denied",
  not_registered: "identity_denied",
  invalid_argument: "invalid_argument",
  internal: "internal",
} as const satisfies Record<GateReason, AgentReason>;

/** What the gate reads from a leaf certificate. */
export interface CertIdentity {
  /** Lowercase hex SHA-256 of the DER. */
  readonly thumbprint: string;
  readonly commonName: string;
  /** Values after `urn:clawker:agent:` of every such URI SAN. */
  readonly agentNames: readonly string[];
  /** Values after `urn:clawker:container:` of every such URI SAN. */
  readonly containerIds: readonly string[];
}

/** A Register request's fields (RegisterRequest). */
export interface RegisterFields {
  readonly agentName: string;
  readonly project: string;
}

/** An accepted registration. */
export interface Admission {
  readonly containerId: string;
  readonly agentName: string;
  readonly project: string;
  readonly fullName: string;
  readonly thumbprint: string;
  readonly outcome: "created" | "unchanged";
}

/** Options of an IdentityGate. */
export interface IdentityGateOptions {
  readonly index: Pick<ContainerAddressIndex, "lookup" | "settled">;
  readonly registry: Pick<Registry, "register" | "get">;
  readonly agents?: Pick<Topic<AgentEvent>, "publish">;
  readonly log: Logger;
  /** Clock in milliseconds. */
  readonly now?: () => number;
}

const AGENT_URN = "urn:clawker:agent:";
const CONTAINER_URN = "urn:clawker:container:";
/** Agent and project names: Docker label values we accept (no dot, so full names are unambiguous). */
const NAME = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;
/** Longest agent or project name accepted. */
export const MAX_NAME_LENGTH = 64;
const FULL_CONTAINER_ID = /^[0-9a-f]{64}$/;
const CACHE_LIMIT = 256;

/** Lowercase hex SHA-256 of a DER certificate. */
export function thumbprintOf(der: Uint8Array): string {
  return createHash("sha256").update(der).digest("hex");
}

/**
 * Splits node's `subjectaltname` string ("URI:a, DNS:b", values with special characters quoted as
 * JSON strings since Node 17) into [type, value] pairs without splitting inside a quoted value.
 */
export function parseSubjectAltName(san: string): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  let i = 0;
  while (i < san.length) {
    const colon = san.indexOf(":", i);
    if (colon < 0) break;
    const type = san.slice(i, colon).trim();
    let j = colon + 1;
    let value: string;
    if (san[j] === '"') {
      let k = j + 1;
      while (k < san.length && san[k] !== '"') k += san[k] === "\\" ? 2 : 1;
      value = JSON.parse(san.slice(j, k + 1)) as string;
      j = k + 1;
    } else {
      const comma = san.indexOf(", ", j);
      const end = comma < 0 ? san.length : comma;
      value = san.slice(j, end);
      j = end;
    }
    out.push([type, value]);
    i = san.indexOf(", ", j) < 0 ? san.length : san.indexOf(", ", j) + 2;
  }
  return out;
}

/** Reads the identity fields of a peer certificate (as node's getPeerCertificate returns it). */
export function certIdentity(
  cert: Pick<PeerCertificate, "raw" | "subject" | "subjectaltname">,
): CertIdentity {
  const agentNames: string[] = [];
  const containerIds: string[] = [];
  for (const [type, value] of parseSubjectAltName(cert.subjectaltname ?? "")) {
    if (type !== "URI") continue;
    if (value.startsWith(AGENT_URN)) agentNames.push(value.slice(AGENT_URN.length));
    else if (value.startsWith(CONTAINER_URN)) containerIds.push(value.slice(CONTAINER_URN.length));
  }
  const cn = cert.subject?.CN;
  return {
    thumbprint: thumbprintOf(cert.raw),
    commonName: Array.isArray(cn) ? "" : (cn ?? ""),
    agentNames,
    containerIds,
  };
}

/** Checks the shape of a request's fields; throws GateError("invalid_argument") with a precise message. */
export function checkRegisterFields(fields: RegisterFields): void {
  checkName("agent_name", fields.agentName, false);
  checkName("project", fields.project, true);
}

function checkName(field: string, value: string, mayBeEmpty: boolean): void {
  if (value === "") {
    if (mayBeEmpty) return;
    throw new GateError("invalid_argument", `${field} is empty`);
  }
  if (value.length > MAX_NAME_LENGTH) {
    throw new GateError("invalid_argument", `${field} is longer than ${MAX_NAME_LENGTH} characters`);
  }
  if (!NAME.test(value)) {
    throw new GateError(
      "invalid_argument",
      `${field} must start with a letter or digit and contain only letters, digits, '_' and '-'`,
    );
  }
}

/** Decides Register calls: identity checks, then the registry write and the agent.registered event. */
export class IdentityGate {
  readonly #index: IdentityGateOptions["index"];
  readonly #registry: IdentityGateOptions["registry"];
  readonly #agents: IdentityGateOptions["agents"];
  readonly #log: Logger;
  readonly #now: () => number;
  /** Parsed identities by DER bytes (as latin1), so a repeated certificate is parsed once. */
  readonly #certs = new Map<string, CertIdentity>();

  constructor(options: IdentityGateOptions) {
    this.#index = options.index;
    this.#registry = options.registry;
    this.#agents = options.agents;
    this.#log = options.log;
    this.#now = options.now ?? Date.now;
  }

  /** The identity of a peer certificate, parsed once per distinct certificate. */
  identityOf(cert: Pick<PeerCertificate, "raw" | "subject" | "subjectaltname">): CertIdentity {
    const key = cert.raw.toString("latin1");
    let id = this.#certs.get(key);
    if (id === undefined) {
      id = certIdentity(cert);
      if (this.#certs.size >= CACHE_LIMIT) this.#certs.delete(this.#certs.keys().next().value!);
      this.#certs.set(key, id);
    }
    return id;
  }

  /**
   * Admits or refuses a Register. `peer` is grpc-js `call.getPeer()`; `cert` the caller's leaf
   * (undefined when none). Throws GateError; identity refusals carry IDENTITY_DENIED_MESSAGE.
   */
  async admit(
    peer: string,
    cert: Pick<PeerCertificate, "raw" | "subject" | "subjectaltname"> | undefined,
    fields: RegisterFields,
  ): Promise<Admission> {
    checkRegisterFields(fields);
    const deny = denial(this.#log, "register_denied", "register refused", peer);
    const { id, record, labelAgent, labelProject, fullName, ctx } = await this.#check(peer, cert, deny);
    if (fields.agentName !== labelAgent || fields.project !== labelProject) {
      throw deny("request_mismatch", { ...ctx, agentName: fields.agentName, project: fields.project });
    }

    const nowMs = this.#now();
    const outcome = this.#registry.register(
      { containerId: record.id, agentName: labelAgent, project: labelProject, certThumbprint: id.thumbprint },
      Math.floor(nowMs / 1000),
    );
    if (outcome === "thumbprint_mismatch") throw deny("thumbprint_mismatch", ctx);
    this.#log.info(
      {
        event: "agent_registered",
        outcome,
        containerId: record.id,
        agent: fullName,
        thumbprint: id.thumbprint,
      },
      "agent registered",
    );
    // Published for "unchanged" too: a repeated Register after a CP restart re-announces the row.
    this.#agents?.publish({
      type: "agent.registered",
      containerId: record.id,
      agentName: fullName,
      project: labelProject,
      thumbprint: id.thumbprint,
      time: nowMs,
    });
    return {
      containerId: record.id,
      agentName: labelAgent,
      project: labelProject,
      fullName,
      thumbprint: id.thumbprint,
      outcome,
    };
  }

  /**
   * The registered agent calling another agent-listener RPC (AgentEgressService): the same checks
   * as Register (certificate, address -> container -> labels -> SANs), and the registry row of
   * that container bound to this certificate. Nothing the caller sends is consulted. Throws
   * GateError with IDENTITY_DENIED_MESSAGE; `event` names the refusal in the log.
   */
  async identify(
    peer: string,
    cert: Pick<PeerCertificate, "raw" | "subject" | "subjectaltname"> | undefined,
    event = "agent_call_denied",
  ): Promise<Omit<Admission, "outcome">> {
    const deny = denial(this.#log, event, "agent call refused", peer);
    const { id, record, labelAgent, labelProject, fullName, ctx } = await this.#check(peer, cert, deny);
    const row = this.#registry.get(record.id);
    if (row === undefined || row.certThumbprint !== id.thumbprint) {
      throw deny(row === undefined ? "not_registered" : "thumbprint_mismatch", ctx);
    }
    return {
      containerId: record.id,
      agentName: labelAgent,
      project: labelProject,
      fullName,
      thumbprint: id.thumbprint,
    };
  }

  /** The checks Register and every other agent call share: certificate, address, labels, SANs. */
  async #check(
    peer: string,
    cert: Pick<PeerCertificate, "raw" | "subject" | "subjectaltname"> | undefined,
    deny: (reason: IdentityDenial, detail?: Record<string, unknown>) => GateError,
  ): Promise<{
    id: CertIdentity;
    record: ContainerRecord;
    labelAgent: string;
    labelProject: string;
    fullName: string;
    ctx: Record<string, unknown>;
  }> {
    if (cert?.raw === undefined || cert.raw.length === 0) throw deny("no_peer_certificate");
    const id = this.identityOf(cert);
    const at = { thumbprint: id.thumbprint };
    if (id.commonName !== CLAWKERD_CN) throw deny("wrong_common_name", { ...at, cn: id.commonName });
    if (id.agentNames.length !== 1) throw deny("agent_san_count", { ...at, count: id.agentNames.length });
    if (id.containerIds.length !== 1)
      throw deny("container_san_count", { ...at, count: id.containerIds.length });
    const certAgent = id.agentNames[0]!;
    const certContainer = id.containerIds[0]!;

    let found = this.#index.lookup(peer);
    if (found.kind === "none") {
      // The started event may still be inspecting this container: wait for that once, no Docker call.
      await this.#index.settled();
      found = this.#index.lookup(peer);
    }
    if (found.kind === "none") throw deny("unknown_address", at);
    if (found.kind === "ambiguous")
      throw deny("ambiguous_address", { ...at, containerIds: found.containerIds });
    const record = found.record;
    const ctx = { ...at, containerId: record.id };
    if (!isAgentLabels(record.labels)) throw deny("not_agent_container", ctx);
    const labelAgent = record.labels[LABELS.agent] ?? "";
    const labelProject = record.labels[LABELS.project] ?? "";
    const fullName = agentFullName(labelProject, labelAgent);
    if (labelAgent === "" || fullName !== certAgent) {
      throw deny("agent_name_mismatch", { ...ctx, certAgent, labelAgent: fullName });
    }
    // The CLI writes the full 64-hex id; a short id (a prefix) is refused rather than prefix-matched.
    if (!FULL_CONTAINER_ID.test(certContainer) || certContainer !== record.id) {
      throw deny("container_id_mismatch", { ...ctx, certContainer });
    }
    return { id, record, labelAgent, labelProject, fullName, ctx };
  }
}

/** A refusal builder: logs which check failed (never sent) and returns the uniform GateError. */
function denial(
  log: Logger,
  event: string,
  message: string,
  peer: string,
): (reason: IdentityDenial, detail?: Record<string, unknown>) => GateError {
  return (reason, detail = {}) => {
    log.warn({ event, reason, peer, ...detail }, message);
    return new GateError(reason, IDENTITY_DENIED_MESSAGE);
  };
}
