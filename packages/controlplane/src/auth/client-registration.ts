// Registers the clawker OAuth2 clients with a Hydra-shaped admin API (`POST /admin/clients`).
// 201 (created) and 409 (already there) are both success, so start-up is idempotent; transport
// errors, 429 and 5xx are retried with exponential backoff inside a time budget; any other status
// is a ClientRegistrationError carrying it.
import { setTimeout as sleep } from "node:timers/promises";
import { AGENT_CLIENT, CLI_CLIENT } from "@clawker/proto";
import type { Agent } from "node:http";
import { agentFor, httpRequest, type TlsClientOptions } from "../http-client.js";

/** Bound on an admin API answer (a client's JSON is a few KiB). */
const MAX_ANSWER_BYTES = 1024 * 1024;

/** A public JWK set (the CLI's ES256 signing key); only public members belong here. */
export interface PublicJwks {
  readonly keys: readonly Record<string, unknown>[];
}

/** One client to register. */
export interface OAuthClientSpec {
  readonly clientId: string;
  readonly scope: string;
  readonly jwks: PublicJwks;
}

/** The two clients clawker needs: the CLI (`admin`) and agents (`agent:self:register`), one key. */
export function clawkerClients(jwks: PublicJwks): OAuthClientSpec[] {
  return [
    { clientId: CLI_CLIENT.clientId, scope: CLI_CLIENT.scope, jwks },
    { clientId: AGENT_CLIENT.clientId, scope: AGENT_CLIENT.scope, jwks },
  ];
}

/** Hydra's client JSON for a client_credentials client authenticating with ES256 private_key_jwt. */
export function hydraClientBody(spec: OAuthClientSpec): Record<string, unknown> {
  return {
    client_id: spec.clientId,
    client_name: spec.clientId,
    grant_types: [CLI_CLIENT.grantType],
    scope: spec.scope,
    token_endpoint_auth_method: CLI_CLIENT.tokenEndpointAuthMethod,
    token_endpoint_auth_signing_alg: CLI_CLIENT.assertionAlg,
    jwks: { keys: spec.jwks.keys },
  };
}

/** Why registration failed. */
export type ClientRegistrationFailure = "http_status" | "budget_exhausted" | "aborted";

/** A failed registration; `httpStatus` is the last status seen, when there was one. */
export class ClientRegistrationError extends Error {
  override readonly name = "ClientRegistrationError";
  constructor(
    readonly reason: ClientRegistrationFailure,
    readonly clientId: string,
    readonly httpStatus: number | undefined,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Settings for registration; `ca` (PEM) signed the admin endpoint's certificate when it is https. */
export interface ClientRegistrationOptions extends Pick<TlsClientOptions, "ca" | "cert" | "key"> {
  /** Admin API base URL: `http+unix://<socket>` (the auth helpers) or `https://host:port`. */
  readonly adminUrl: string;
  /** Total time for all attempts of one client, milliseconds (default 10000). */
  readonly budgetMs?: number;
  /** Per-request timeout, milliseconds (default 2000). */
  readonly requestTimeoutMs?: number;
  /** First backoff step, milliseconds, doubled per attempt up to 1 s (default 100). */
  readonly initialBackoffMs?: number;
  readonly signal?: AbortSignal;
}

/** Outcome of one registration. */
export type ClientRegistrationResult = "created" | "exists";

/** Registers one client; resolves `created` (201) or `exists` (409). */
export async function registerClient(
  spec: OAuthClientSpec,
  options: ClientRegistrationOptions,
): Promise<ClientRegistrationResult> {
  const agent = agentFor(options.adminUrl, options);
  try {
    return await registerWith(agent, spec, options);
  } finally {
    agent?.destroy();
  }
}

/** Registers every client in order over one connection pool. */
export async function registerClients(
  specs: readonly OAuthClientSpec[],
  options: ClientRegistrationOptions,
): Promise<Map<string, ClientRegistrationResult>> {
  const agent = agentFor(options.adminUrl, options);
  const out = new Map<string, ClientRegistrationResult>();
  try {
    for (const spec of specs) out.set(spec.clientId, await registerWith(agent, spec, options));
    return out;
  } finally {
    agent?.destroy();
  }
}

async function registerWith(
  agent: Agent | undefined,
  spec: OAuthClientSpec,
  o: ClientRegistrationOptions,
): Promise<ClientRegistrationResult> {
  const url = new URL("/admin/clients", o.adminUrl);
  const budgetMs = o.budgetMs ?? 10_000;
  const requestTimeoutMs = o.requestTimeoutMs ?? 2000;
  const deadline = Date.now() + budgetMs;
  const body = JSON.stringify(hydraClientBody(spec));
  let backoff = o.initialBackoffMs ?? 100;
  let lastStatus: number | undefined;
  let lastError: unknown;
  for (;;) {
    if (o.signal?.aborted === true) {
      throw new ClientRegistrationError("aborted", spec.clientId, lastStatus, "client registration aborted", {
        cause: o.signal.reason,
      });
    }
    const remaining = deadline - Date.now();
    const timeout = AbortSignal.timeout(Math.max(1, Math.min(requestTimeoutMs, remaining)));
    const signal = o.signal === undefined ? timeout : AbortSignal.any([timeout, o.signal]);
    try {
      const res = await httpRequest(url, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json" },
        body,
        ...(agent === undefined ? {} : { agent }),
        signal,
        maxBodyBytes: MAX_ANSWER_BYTES,
      });
      if (res.status === 201) return "created";
      if (res.status === 409) return "exists";
      lastStatus = res.status;
      if (res.status !== 429 && res.status < 500) {
        throw new ClientRegistrationError(
          "http_status",
          spec.clientId,
          res.status,
          `registering ${spec.clientId}: admin API answered HTTP ${res.status}`,
        );
      }
    } catch (err) {
      if (err instanceof ClientRegistrationError) throw err;
      lastError = err;
    }
    const wait = Math.min(backoff, deadline - Date.now());
    if (wait <= 0) {
      throw new ClientRegistrationError(
        "budget_exhausted",
        spec.clientId,
        lastStatus,
        `registering ${spec.clientId}: gave up after ${budgetMs} ms` +
          (lastStatus === undefined ? "" : ` (last HTTP ${lastStatus})`),
        { cause: lastError },
      );
    }
    try {
      await sleep(wait, undefined, o.signal === undefined ? {} : { signal: o.signal });
    } catch {
      // Aborted while waiting: reported at the top of the loop.
    }
    backoff = Math.min(backoff * 2, 1000);
  }
}
