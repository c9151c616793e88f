// OAuth2 client_credentials with private_key_jwt: one access token, cached until shortly before
// it expires, fetched by at most one request at a time whatever the number of callers.
import { Agent, request, type Dispatcher } from "undici";
import type { CryptoKey, JWK } from "jose";
import { CLI_CLIENT } from "@clawker/proto";
import { CLIENT_ASSERTION_TYPE, importSigningKey, signClientAssertion } from "./client-assertion.js";
import { TokenError } from "./errors.js";

/** The embedded auth server's (and Hydra's) default public token endpoint. */
export const DEFAULT_TOKEN_ENDPOINT = "https://127.0.0.1:4444/oauth2/token";
/** A token is refreshed this long before it expires. */
export const DEFAULT_REFRESH_WINDOW_MS = 30_000;
/** Budget of one token request, connection included. */
export const DEFAULT_TOKEN_TIMEOUT_MS = 10_000;

/** How to reach the token endpoint and what to authenticate with. */
export interface TokenSourceOptions {
  /** Full URL of the token endpoint (`<issuer>/oauth2/token`); also the assertion's audience. */
  readonly tokenEndpoint?: string;
  /** PEM CA the token endpoint's certificate must chain to (the trust CA). */
  readonly ca: string;
  /** The client's ES256 private JWK (its `kid` goes into the assertion header). */
  readonly signingKey: JWK;
  readonly clientId?: string;
  /** Space-separated scopes to request. */
  readonly scope?: string;
  readonly refreshWindowMs?: number;
  readonly timeoutMs?: number;
  /** The current time in ms since the epoch; pass a skew-corrected clock to match the server's. */
  readonly now?: () => number;
}

/** A fetched access token and when it expires (ms since the epoch, by `now()`). */
export interface AccessToken {
  readonly accessToken: string;
  readonly expiresAtMs: number;
  readonly scope: string | undefined;
}

/**
 * Fetches and caches access tokens. Concurrent `token()` calls share one in-flight request; a
 * caller's abort stops that caller's wait but never the request, whose result still fills the
 * cache. Call `close()` to release the HTTPS connection pool.
 */
export class TokenSource {
  readonly tokenEndpoint: string;
  readonly clientId: string;
  readonly scope: string;
  readonly #options: TokenSourceOptions;
  readonly #dispatcher: Dispatcher;
  readonly #now: () => number;
  #key: Promise<CryptoKey> | undefined;
  #cached: { token: AccessToken; refreshAtMs: number } | undefined;
  #inflight: Promise<AccessToken> | undefined;
  #closed = false;
  #requests = 0;

  constructor(options: TokenSourceOptions) {
    this.#options = options;
    this.tokenEndpoint = options.tokenEndpoint ?? DEFAULT_TOKEN_ENDPOINT;
    if (!URL.canParse(this.tokenEndpoint) || new URL(this.tokenEndpoint).protocol !== "https:") {
      throw new TypeError(`token endpoint must be an https URL, got ${JSON.stringify(this.tokenEndpoint)}`);
    }
    this.clientId = options.clientId ?? CLI_CLIENT.clientId;
    this.scope = options.scope ?? CLI_CLIENT.scope;
    this.#now = options.now ?? Date.now;
    this.#dispatcher = new Agent({ connect: { ca: options.ca, minVersion: "TLSv1.3" } });
  }

  /** How many token requests were started so far (for tests and stats). */
  get requestCount(): number {
    return this.#requests;
  }

  /** A valid access token string, from the cache or a (shared) new request. */
  async token(options: { signal?: AbortSignal } = {}): Promise<string> {
    return (await this.accessToken(options)).accessToken;
  }

  /** Like token(), with the expiry. Throws TokenError, or the signal's reason on abort. */
  async accessToken(options: { signal?: AbortSignal } = {}): Promise<AccessToken> {
    const { signal } = options;
    signal?.throwIfAborted();
    if (this.#closed) throw new TokenError("unreachable", "the token source is closed");
    const cached = this.#cached;
    if (cached !== undefined && this.#now() < cached.refreshAtMs) return cached.token;
    this.#inflight ??= this.#fetch().finally(() => {
      this.#inflight = undefined;
    });
    return signal === undefined ? this.#inflight : raceAbort(this.#inflight, signal);
  }

  /** Drops the cached token (e.g. after the server said UNAUTHENTICATED). */
  invalidate(): void {
    this.#cached = undefined;
  }

  /** Releases the connection pool; idempotent. An in-flight request is left to finish. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#cached = undefined;
    await this.#inflight?.catch(() => undefined);
    await this.#dispatcher.close();
  }

  async #fetch(): Promise<AccessToken> {
    this.#requests++;
    this.#key ??= importSigningKey(this.#options.signingKey);
    const key = await this.#key.catch((err: unknown) => {
      this.#key = undefined;
      throw err;
    });
    const startedMs = this.#now();
    const assertion = await signClientAssertion(key, this.#options.signingKey.kid, {
      clientId: this.clientId,
      audience: this.tokenEndpoint,
      issuedAt: Math.floor(startedMs / 1000),
    });
    const body = new URLSearchParams({
      grant_type: "client_credentials",
      scope: this.scope,
      client_assertion_type: CLIENT_ASSERTION_TYPE,
      client_assertion: assertion,
    }).toString();
    let statusCode: number;
    let text: string;
    try {
      // The request has its own timeout and never the caller's signal: once sent, it completes
      // (the assertion's jti is spent either way) and its token serves the next caller.
      const res = await request(this.tokenEndpoint, {
        method: "POST",
        dispatcher: this.#dispatcher,
        headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" },
        body,
        signal: AbortSignal.timeout(this.#options.timeoutMs ?? DEFAULT_TOKEN_TIMEOUT_MS),
      });
      statusCode = res.statusCode;
      text = await res.body.text();
    } catch (err) {
      throw new TokenError(
        "unreachable",
        `token endpoint ${this.tokenEndpoint} unreachable: ${describe(err)}`,
        {
          cause: err,
        },
      );
    }
    const json = parseJsonObject(text);
    if (statusCode < 200 || statusCode >= 300) {
      const oauthError = typeof json?.["error"] === "string" ? json["error"] : undefined;
      const description =
        typeof json?.["error_description"] === "string" ? `: ${json["error_description"]}` : "";
      throw new TokenError(
        "token_request_failed",
        `token request failed with HTTP ${statusCode}${oauthError === undefined ? "" : ` (${oauthError}${description})`}`,
        { status: statusCode, ...(oauthError === undefined ? {} : { oauthError }) },
      );
    }
    const accessToken = json?.["access_token"];
    const expiresIn = json?.["expires_in"];
    const tokenType = json?.["token_type"];
    if (typeof accessToken !== "string" || accessToken === "") {
      throw new TokenError("invalid_response", "token endpoint answered without an access_token", {
        status: statusCode,
      });
    }
    if (typeof tokenType === "string" && tokenType.toLowerCase() !== "bearer") {
      throw new TokenError("invalid_response", `unsupported token_type ${JSON.stringify(tokenType)}`, {
        status: statusCode,
      });
    }
    if (typeof expiresIn !== "number" || !Number.isFinite(expiresIn) || expiresIn <= 0) {
      throw new TokenError("invalid_response", "token endpoint answered without a positive expires_in", {
        status: statusCode,
      });
    }
    // Lifetimes count from when the request started, so network time never stretches them.
    const lifetimeMs = expiresIn * 1000;
    const token: AccessToken = {
      accessToken,
      expiresAtMs: startedMs + lifetimeMs,
      scope: typeof json?.["scope"] === "string" ? json["scope"] : undefined,
    };
    // A token shorter-lived than twice the window is reused for half its life instead.
    const window = Math.min(this.#options.refreshWindowMs ?? DEFAULT_REFRESH_WINDOW_MS, lifetimeMs / 2);
    if (!this.#closed) this.#cached = { token, refreshAtMs: token.expiresAtMs - window };
    return token;
  }
}

function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (err: Error) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}

function parseJsonObject(text: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === "object" && v !== null && !Array.isArray(v)
      ? (v as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    const cause = err.cause instanceof Error ? `: ${err.cause.message}` : "";
    return `${code === undefined ? "" : `${code} `}${err.message}${cause}`;
  }
  return String(err);
}
