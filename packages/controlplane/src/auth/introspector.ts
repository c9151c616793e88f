// RFC 7662 token introspection against a Hydra-shaped admin endpoint
// (`POST <adminUrl>/admin/oauth2/introspect`, form `token` [+ `scope`]): through the auth
// helper's Unix socket (`http+unix:`), or over TLS to the CP's CA, with a keep-alive pool and a
// hard per-request timeout. Transport and protocol failures are IntrospectionErrors.
import type { Agent } from "node:http";
import { agentFor, httpRequest, ResponseTooLargeError, type TlsClientOptions } from "../http-client.js";
import { IntrospectionError } from "./errors.js";

/** The fields of an RFC 7662 response that authorization uses. */
export interface IntrospectionResult {
  readonly active: boolean;
  /** Space-separated granted scopes (RFC 7662 §2.2). */
  readonly scope: string;
  readonly clientId: string;
  readonly sub: string;
  /** Expiry, seconds since the epoch; undefined when the server did not say. */
  readonly exp: number | undefined;
  /** Hydra's `token_use` (`access_token`, `refresh_token`), when present. */
  readonly tokenUse: string | undefined;
}

/** Per-call options: the scope to send along (the server answers inactive without it) and a cancel signal. */
export interface IntrospectOptions {
  readonly scope?: string;
  readonly signal?: AbortSignal;
}

/** Validates a bearer token; implementations are safe for concurrent use. */
export interface Introspector {
  introspect(token: string, options?: IntrospectOptions): Promise<IntrospectionResult>;
  /** A fresh answer available without I/O (a cache hit), else undefined; lets callers stay synchronous. */
  peek?(token: string): IntrospectionResult | undefined;
  /** True when an answer for `token` is already on its way: a call that joins it costs no request. */
  inFlight?(token: string): boolean;
}

/**
 * Settings of the HTTP introspector. TLS (https URLs only): `ca` is the bundle that signed the
 * auth server's certificate (the CP's CA); `cert` + `key` only for an admin endpoint that wants mTLS.
 */
export interface HttpIntrospectorOptions extends Pick<TlsClientOptions, "ca" | "cert" | "key"> {
  /** Base URL of the admin API: `http+unix://<socket>` (the auth helpers) or `https://host:port`. */
  readonly adminUrl: string;
  /** Hard timeout per request, milliseconds (default 2000). */
  readonly timeoutMs?: number;
}

/** Default hard timeout for one introspection request. */
export const DEFAULT_INTROSPECTION_TIMEOUT_MS = 2000;
const MAX_RESPONSE_BYTES = 64 * 1024;

/** Introspects over HTTP(S); keeps one keep-alive pool to the admin endpoint. */
export class HttpIntrospector implements Introspector {
  readonly #url: URL;
  readonly #timeoutMs: number;
  readonly #agent: Agent | undefined;
  #closed = false;

  constructor(options: HttpIntrospectorOptions) {
    this.#url = new URL("/admin/oauth2/introspect", options.adminUrl);
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_INTROSPECTION_TIMEOUT_MS;
    this.#agent = agentFor(this.#url, options);
  }

  /** Asks the server about `token`; resolves with its answer or rejects with an IntrospectionError. */
  async introspect(token: string, options: IntrospectOptions = {}): Promise<IntrospectionResult> {
    const form = new URLSearchParams({ token });
    if (options.scope !== undefined) form.set("scope", options.scope);
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    const signal = options.signal === undefined ? timeout : AbortSignal.any([timeout, options.signal]);
    let body: unknown;
    try {
      if (this.#closed) throw new Error("introspector closed");
      const res = await httpRequest(this.#url, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" },
        body: form.toString(),
        ...(this.#agent === undefined ? {} : { agent: this.#agent }),
        signal,
        maxBodyBytes: MAX_RESPONSE_BYTES,
      });
      if (res.status !== 200) {
        throw new IntrospectionError("http_status", `introspection answered HTTP ${res.status}`, {
          httpStatus: res.status,
        });
      }
      body = JSON.parse(res.body);
    } catch (err) {
      if (err instanceof IntrospectionError) throw err;
      if (timeout.aborted) throw new IntrospectionError("timeout", "introspection timed out", { cause: err });
      if (err instanceof ResponseTooLargeError)
        throw new IntrospectionError("malformed_response", "introspection answer too large", { cause: err });
      if (err instanceof SyntaxError) {
        throw new IntrospectionError("malformed_response", "introspection answered invalid JSON", {
          cause: err,
        });
      }
      throw new IntrospectionError("unavailable", "introspection endpoint unavailable", { cause: err });
    }
    return parseIntrospection(body);
  }

  /** Closes the connection pool; later calls fail as unavailable. Idempotent. */
  close(): Promise<void> {
    this.#closed = true;
    this.#agent?.destroy();
    return Promise.resolve();
  }
}

/** Validates an RFC 7662 JSON body into an IntrospectionResult (throws `malformed_response`). */
export function parseIntrospection(body: unknown): IntrospectionResult {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new IntrospectionError("malformed_response", "introspection answer is not an object");
  }
  const o = body as Record<string, unknown>;
  if (typeof o["active"] !== "boolean") {
    throw new IntrospectionError("malformed_response", "introspection answer lacks a boolean active");
  }
  const str = (k: string): string | undefined => {
    const v = o[k];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "string")
      throw new IntrospectionError("malformed_response", `introspection ${k} is not a string`);
    return v;
  };
  const exp = o["exp"];
  if (exp !== undefined && exp !== null && (typeof exp !== "number" || !Number.isFinite(exp))) {
    throw new IntrospectionError("malformed_response", "introspection exp is not a number");
  }
  return {
    active: o["active"],
    scope: str("scope") ?? "",
    clientId: str("client_id") ?? "",
    sub: str("sub") ?? "",
    exp: typeof exp === "number" ? exp : undefined,
    tokenUse: str("token_use"),
  };
}
