// RFC 7662 introspection with Hydra's response shape, answered from the store in-process.
import type Provider from "oidc-provider";
import type { AuthStore } from "./store.js";

/** Hydra's introspection answer; `{active:false}` alone when inactive. */
export interface IntrospectionResponse {
  readonly active: boolean;
  readonly scope?: string;
  readonly client_id?: string;
  readonly sub?: string;
  readonly exp?: number;
  readonly iat?: number;
  readonly nbf?: number;
  readonly aud?: string[];
  readonly iss?: string;
  readonly token_type?: "Bearer";
  readonly token_use?: "access_token";
}

const INACTIVE: IntrospectionResponse = Object.freeze({ active: false });
/** Opaque tokens here are 43 characters; anything far longer is not ours and not worth a lookup. */
const MAX_TOKEN_LENGTH = 512;

/**
 * Introspects an access token. Inactive when unknown, expired (no tolerance), issued to a client
 * that no longer exists, or when any scope in `scopeParam` was not granted (Hydra's rule).
 */
export async function introspect(
  provider: Provider,
  store: AuthStore,
  issuer: string,
  token: string,
  scopeParam: string,
): Promise<IntrospectionResponse> {
  if (token === "" || token.length > MAX_TOKEN_LENGTH) return INACTIVE;
  const at = await provider.ClientCredentials.find(token);
  if (at === undefined) return INACTIVE;
  const now = Math.floor(Date.now() / 1000);
  const exp = at.exp;
  const iat = at.iat;
  const clientId = at.clientId;
  if (typeof exp !== "number" || exp <= now || typeof iat !== "number" || clientId === undefined)
    return INACTIVE;
  if (store.getClient(clientId) === undefined) return INACTIVE;
  const granted = new Set((at.scope ?? "").split(" ").filter((s) => s !== ""));
  for (const s of scopeParam.split(" ")) {
    if (s !== "" && !granted.has(s)) return INACTIVE;
  }
  const aud = (at as unknown as { aud?: string | string[] }).aud;
  return {
    active: true,
    scope: [...granted].join(" "),
    client_id: clientId,
    sub: clientId,
    exp,
    iat,
    nbf: iat,
    aud: aud === undefined ? [] : Array.isArray(aud) ? aud : [aud],
    iss: issuer,
    token_type: "Bearer",
    token_use: "access_token",
  };
}
