// oidc-provider 9 configured as a client_credentials-only authorization server that behaves like
// the Hydra subset clawker uses: private_key_jwt (ES256) with the token endpoint URL as the only
// accepted assertion audience, iat required, exp bounded, atomic jti replay rejection across
// clients, exact scope checks against the client's registered scope, opaque access tokens with one
// fixed audience, stored in sqlite; discovery lists only what is routed.
import { randomBytes } from "node:crypto";
import Provider, { errors, type Configuration, type KoaContextWithOIDC } from "oidc-provider";
import type { Logger } from "pino";
import { assertionReplayKey, checkAssertionClaims, CLOCK_TOLERANCE_SECONDS } from "./assertion-claims.js";
import { registeredScopes } from "./clients.js";
import { trimDiscovery } from "./discovery.js";
import { PROVIDER_PATHS } from "./public-api.js";
import type { SigningJwk } from "./signing-key.js";
import type { AuthStore } from "./store.js";

/** What the provider needs: the issuer, its token endpoint URL, the key, the store and policy numbers. */
export interface ProviderOptions {
  readonly issuer: string;
  readonly tokenEndpoint: string;
  /** The same endpoint's URL at each configured alias origin, also accepted as assertion `aud`. */
  readonly aliasTokenEndpoints: readonly string[];
  readonly audience: string;
  readonly accessTokenTtlSeconds: number;
  readonly key: SigningJwk;
  readonly store: AuthStore;
  readonly log: Logger;
}

/** Builds the oidc-provider instance. The caller routes only token, discovery and JWKS to it. */
export function createProvider(o: ProviderOptions): Provider {
  const configuration: Configuration = {
    adapter: o.store.adapterFor,
    jwks: { keys: [o.key] },
    clientAuthMethods: ["private_key_jwt"],
    enabledJWA: {
      clientAuthSigningAlgValues: ["ES256"],
      // With only an EC key the default (RS256) cannot sign, and client validation fails without this.
      idTokenSigningAlgValues: ["ES256"],
    },
    clientDefaults: {
      grant_types: ["client_credentials"],
      response_types: [],
      token_endpoint_auth_method: "private_key_jwt",
      id_token_signed_response_alg: "ES256",
    },
    clockTolerance: CLOCK_TOLERANCE_SECONDS,
    routes: { token: "/oauth2/token", jwks: "/.well-known/jwks.json" },
    // Nothing uses sessions or cookies; the keys only keep oidc-provider from complaining.
    cookies: { keys: [randomBytes(32).toString("base64url")] },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      // Introspection is served on the admin listener (Hydra's path), not by oidc-provider.
      introspection: { enabled: false },
      revocation: { enabled: false },
      registration: { enabled: false },
      userinfo: { enabled: false },
      // Bearer tokens only, no browser flows: keep discovery from advertising what is not routed.
      dPoP: { enabled: false },
      pushedAuthorizationRequests: { enabled: false },
      rpInitiatedLogout: { enabled: false },
      // RFC 8707 is on by default in oidc-provider 9; without a resource, client_credentials tokens
      // carry no audience. Every token gets the one configured audience, opaque, with our TTL.
      resourceIndicators: {
        enabled: true,
        defaultResource: () => o.audience,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource, client) => {
          if (resource !== o.audience) throw new errors.InvalidTarget("unknown resource indicator");
          const stored = o.store.getClient(client.clientId);
          if (stored === undefined) throw new errors.InvalidClient("client authentication failed");
          const allowed = registeredScopes(stored);
          const requested = requestedScopes(ctx);
          for (const s of requested) {
            if (!allowed.has(s)) {
              throw new errors.InvalidScope(`the client is not allowed to request scope '${s}'`, s);
            }
          }
          return {
            scope: [...allowed].join(" "),
            audience: o.audience,
            accessTokenFormat: "opaque",
            accessTokenTTL: o.accessTokenTtlSeconds,
          };
        },
      },
    },
    ttl: { ClientCredentials: o.accessTokenTtlSeconds },
    assertJwtClientAuthClaimsAndHeader: (_ctx, claims) => {
      const checked = checkAssertionClaims(claims, {
        tokenEndpoints: [o.tokenEndpoint, ...o.aliasTokenEndpoints],
        nowSeconds: Date.now() / 1000,
      });
      // The refusal becomes error_detail: logged with token_denied, never in the response body,
      // which is always invalid_client / "client authentication failed".
      if (typeof checked === "string") throw new errors.InvalidClientAuth(checked);
      // Claimed atomically in sqlite, so two racing uses cannot both pass; oidc-provider's own
      // per-client replay check runs after this one.
      const expiresAtMs = (checked.exp + CLOCK_TOLERANCE_SECONDS) * 1000;
      if (!o.store.claimAssertionJti(assertionReplayKey(checked.jti), expiresAtMs)) {
        throw new errors.InvalidClientAuth("jti_replayed");
      }
    },
    // Errors are always JSON ({error, error_description}), even for a client that prefers HTML.
    renderError: (ctx, out) => {
      ctx.type = "application/json";
      ctx.body = out;
    },
  };
  const provider = new Provider(o.issuer, configuration);
  // oidc-provider checks aud against {issuer, token URL} before our hook runs, with the URL derived
  // from the Host header pinned to the issuer's: the aliases' URLs are added to that set, for this
  // provider only (its context class is its own), and our hook still requires a token URL.
  if (o.aliasTokenEndpoints.length > 0) {
    const context = provider.OIDCContext.prototype as {
      clientJwtAuthExpectedAudience: (this: object) => Set<string>;
    };
    const expected = context.clientJwtAuthExpectedAudience;
    context.clientJwtAuthExpectedAudience = function (this: object): Set<string> {
      const accepted = expected.call(this);
      for (const url of o.aliasTokenEndpoints) accepted.add(url);
      return accepted;
    };
  }
  // oidc-provider's documented post-middleware: the document it builds always names the
  // authorization endpoint and every grant it implements, routed by us or not.
  provider.use(async (ctx, next) => {
    await next();
    const route = (ctx as Partial<KoaContextWithOIDC>).oidc?.route;
    if (route === "discovery" && isRecord(ctx.body)) trimDiscovery(ctx.body, PROVIDER_PATHS);
  });
  const log = o.log;
  provider.on("server_error", (_ctx: KoaContextWithOIDC, err: Error) => {
    log.error({ err, event: "provider_server_error" }, "oidc-provider server error");
  });
  provider.on("grant.error", (ctx: KoaContextWithOIDC, err: errors.OIDCProviderError) => {
    log.info(
      {
        event: "token_denied",
        error: err.error,
        detail: err.error_detail,
        clientId: ctx.oidc.client?.clientId,
      },
      "token request denied",
    );
  });
  provider.on("grant.success", (ctx: KoaContextWithOIDC) => {
    log.debug({ event: "token_issued", clientId: ctx.oidc.client?.clientId }, "token issued");
  });
  return provider;
}

function requestedScopes(ctx: KoaContextWithOIDC): string[] {
  const raw = ctx.oidc.params?.["scope"];
  return typeof raw === "string" ? raw.split(" ").filter((s) => s !== "") : [];
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
