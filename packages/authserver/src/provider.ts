// oidc-provider 9 configured as a client_credentials-only authorization server that behaves like
// the Hydra subset clawker uses: private_key_jwt (ES256) with the token endpoint URL as the only
// accepted assertion audience, atomic jti replay rejection, exact scope checks against the client's
// registered scope, opaque access tokens with one fixed audience, stored in sqlite.
import { createHash, randomBytes } from "node:crypto";
import Provider, { errors, type Configuration, type KoaContextWithOIDC } from "oidc-provider";
import type { Logger } from "pino";
import { registeredScopes } from "./clients.js";
import type { SigningJwk } from "./signing-key.js";
import type { AuthStore } from "./store.js";

/** What the provider needs: the issuer, its token endpoint URL, the key, the store and policy numbers. */
export interface ProviderOptions {
  readonly issuer: string;
  readonly tokenEndpoint: string;
  readonly audience: string;
  readonly accessTokenTtlSeconds: number;
  readonly key: SigningJwk;
  readonly store: AuthStore;
  readonly log: Logger;
}

/** Seconds of clock skew tolerated on client assertions (exp/iat/nbf). */
export const CLOCK_TOLERANCE_SECONDS = 5;

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
      // Hydra (fosite) accepts only the token endpoint URL as audience; oidc-provider would also
      // take the issuer. The signature and exp have been verified before this runs.
      const aud = claims["aud"];
      const ok = Array.isArray(aud) ? aud.includes(o.tokenEndpoint) : aud === o.tokenEndpoint;
      if (!ok) throw new errors.InvalidClientAuth("audience (aud) must be the token endpoint URL");
      const iss = JSON.stringify(claims["iss"]);
      const jti = JSON.stringify(claims["jti"]);
      const exp = Number(claims["exp"]);
      const key = createHash("sha256").update(iss).update("\0").update(jti).digest("base64url");
      if (!o.store.claimAssertionJti(key, (exp + CLOCK_TOLERANCE_SECONDS) * 1000)) {
        throw new errors.InvalidClientAuth("client assertion tokens must only be used once");
      }
    },
    // Errors are always JSON ({error, error_description}), even for a client that prefers HTML.
    renderError: (ctx, out) => {
      ctx.type = "application/json";
      ctx.body = out;
    },
  };
  const provider = new Provider(o.issuer, configuration);
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
