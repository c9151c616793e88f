// Registers the clawker OAuth2 clients with a Hydra-shaped admin API and makes sure the registered
// clients are ours. `POST /admin/clients`: 201 is "created". 409 means a client with that id
// exists, which is not proof that it is ours (a local user could have registered it first with
// their own key): we GET it and compare what decides who may get which token (the public keys by
// RFC 7638 thumbprint, jwks_uri, grant types, scope, auth method, signing alg, audience). Equal is
// "exists"; different is replaced with ours (`PUT`, Hydra's setOAuth2Client) and every token
// issued to that client is deleted (`DELETE /admin/oauth2/tokens?client_id=`), so a squatter's
// token dies with its key: "replaced". Transport errors, 429 and 5xx are retried with exponential
// backoff inside a time budget; any other answer is a ClientRegistrationError (start-up fails).
import { setTimeout as sleep } from "node:timers/promises";
import type { Agent } from "node:http";
import { AGENT_CLIENT, CLI_CLIENT } from "@clawker/proto";
import { agentFor, httpRequest, type TlsClientOptions } from "../http-client.js";
import { jwkThumbprint } from "./jwk-thumbprint.js";

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

/** The two clients clawker needs: the CLI (`admin`) and agents (`agent:self:register agent:self:request`), one key. */
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
export type ClientRegistrationFailure = "http_status" | "malformed_answer" | "budget_exhausted" | "aborted";

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
  /** Total time for all requests of one client, milliseconds (default 10000). */
  readonly budgetMs?: number;
  /** Per-request timeout, milliseconds (default 2000). */
  readonly requestTimeoutMs?: number;
  /** First backoff step, milliseconds, doubled per attempt up to 1 s (default 100). */
  readonly initialBackoffMs?: number;
  readonly signal?: AbortSignal;
}

/** What registration did with one client. */
export type ClientRegistrationOutcome = "created" | "exists" | "replaced";

/** Outcome of one registration; `differences` names the fields that differed (never their values). */
export interface ClientRegistrationResult {
  readonly outcome: ClientRegistrationOutcome;
  readonly differences: readonly string[];
}

/** Registers one client: created, found equal to ours, or replaced by ours (see the file comment). */
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

/**
 * The fields in which a registered client (Hydra's JSON) differs from `spec`, in a fixed order.
 * Only what decides who can get which token is compared; Hydra's own additions (timestamps,
 * metadata, defaults such as response_types) are not.
 */
export function clientDifferences(spec: OAuthClientSpec, registered: Record<string, unknown>): string[] {
  const ours = hydraClientBody(spec);
  const out: string[] = [];
  if (!sameSet(thumbprints(spec.jwks.keys), thumbprints(keysOf(registered["jwks"])))) out.push("jwks");
  const jwksUri = registered["jwks_uri"];
  if (jwksUri !== undefined && jwksUri !== null && jwksUri !== "") out.push("jwks_uri");
  if (!sameSet(words(ours["grant_types"]), words(registered["grant_types"]))) out.push("grant_types");
  if (!sameSet(words(ours["scope"]), words(registered["scope"]))) out.push("scope");
  for (const field of ["token_endpoint_auth_method", "token_endpoint_auth_signing_alg"]) {
    if (registered[field] !== ours[field]) out.push(field);
  }
  if (!sameSet([], words(registered["audience"]))) out.push("audience");
  return out;
}

function keysOf(jwks: unknown): unknown[] {
  const keys = typeof jwks === "object" && jwks !== null ? (jwks as { keys?: unknown }).keys : undefined;
  return Array.isArray(keys) ? keys : [];
}

/** RFC 7638 thumbprints; a key that has none (malformed) gets a marker that matches nothing of ours. */
function thumbprints(keys: readonly unknown[]): string[] {
  return keys.map((k, i) => {
    try {
      return jwkThumbprint(k);
    } catch {
      return `unusable key #${i}`;
    }
  });
}

/** The members of a space-separated string or an array of strings; absent is empty. */
function words(v: unknown): string[] {
  if (typeof v === "string") return v.split(" ").filter((w) => w !== "");
  if (Array.isArray(v)) return v.map(String);
  return [];
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  const sa = new Set(a);
  const sb = new Set(b);
  return sa.size === sb.size && [...sa].every((x) => sb.has(x));
}

type Request = { method: "GET" | "POST" | "PUT" | "DELETE"; url: URL; body?: string };

async function registerWith(
  agent: Agent | undefined,
  spec: OAuthClientSpec,
  o: ClientRegistrationOptions,
): Promise<ClientRegistrationResult> {
  const budgetMs = o.budgetMs ?? 10_000;
  const deadline = Date.now() + budgetMs;
  const send = (r: Request, expect: readonly number[]) => sendWithRetry(agent, spec, o, deadline, r, expect);
  const body = JSON.stringify(hydraClientBody(spec));
  const clientUrl = new URL(`/admin/clients/${encodeURIComponent(spec.clientId)}`, o.adminUrl);

  const created = await send(
    { method: "POST", url: new URL("/admin/clients", o.adminUrl), body },
    [201, 409],
  );
  if (created.status === 201) return { outcome: "created", differences: [] };

  const existing = await send({ method: "GET", url: clientUrl }, [200]);
  let registered: unknown;
  try {
    registered = JSON.parse(existing.body);
  } catch (err) {
    throw new ClientRegistrationError(
      "malformed_answer",
      spec.clientId,
      200,
      `registering ${spec.clientId}: the registered client is not JSON`,
      { cause: err },
    );
  }
  if (typeof registered !== "object" || registered === null || Array.isArray(registered)) {
    throw new ClientRegistrationError(
      "malformed_answer",
      spec.clientId,
      200,
      `registering ${spec.clientId}: the registered client is not a JSON object`,
    );
  }
  const differences = clientDifferences(spec, registered as Record<string, unknown>);
  if (differences.length === 0) return { outcome: "exists", differences };

  await send({ method: "PUT", url: clientUrl, body }, [200]);
  // Tokens issued under the replaced registration (a squatter's) must not outlive it.
  const tokens = new URL("/admin/oauth2/tokens", o.adminUrl);
  tokens.searchParams.set("client_id", spec.clientId);
  await send({ method: "DELETE", url: tokens }, [204]);
  return { outcome: "replaced", differences };
}

/**
 * Sends `r` until it answers one of `expect`: transport errors, 429 and 5xx are retried with
 * backoff until `deadline`; any other status is a ClientRegistrationError at once.
 */
async function sendWithRetry(
  agent: Agent | undefined,
  spec: OAuthClientSpec,
  o: ClientRegistrationOptions,
  deadline: number,
  r: Request,
  expect: readonly number[],
): Promise<{ status: number; body: string }> {
  const requestTimeoutMs = o.requestTimeoutMs ?? 2000;
  const what = `registering ${spec.clientId}: ${r.method} ${r.url.pathname}`;
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
      const res = await httpRequest(r.url, {
        method: r.method,
        headers: {
          accept: "application/json",
          ...(r.body === undefined ? {} : { "content-type": "application/json" }),
        },
        ...(r.body === undefined ? {} : { body: r.body }),
        ...(agent === undefined ? {} : { agent }),
        signal,
        maxBodyBytes: MAX_ANSWER_BYTES,
      });
      if (expect.includes(res.status)) return res;
      lastStatus = res.status;
      if (res.status !== 429 && res.status < 500) {
        throw new ClientRegistrationError(
          "http_status",
          spec.clientId,
          res.status,
          `${what}: admin API answered HTTP ${res.status}`,
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
        `${what}: gave up after ${o.budgetMs ?? 10_000} ms` +
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
