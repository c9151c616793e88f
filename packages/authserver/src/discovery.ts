// The discovery document trimmed to what this server serves. oidc-provider always advertises the
// authorization endpoint and every grant it implements; here only the token endpoint, the JWKS
// and client_credentials exist, and every other path answers 404.

/** The only grant the token endpoint serves. */
export const GRANT_TYPES_SUPPORTED: readonly string[] = ["client_credentials"];

// Parameters of the authorization endpoint: meaningless once that endpoint is not advertised.
const AUTHORIZATION_ONLY_FIELDS = [
  "authorization_response_iss_parameter_supported",
  "code_challenge_methods_supported",
  "response_modes_supported",
];

/**
 * Removes, in place, every `*_endpoint` and `*_uri` whose path is not in `routedPaths`, the
 * authorization endpoint's parameters when that endpoint goes, and the grants not served.
 */
export function trimDiscovery(doc: Record<string, unknown>, routedPaths: ReadonlySet<string>): void {
  for (const [key, value] of Object.entries(doc)) {
    if (!key.endsWith("_endpoint") && !key.endsWith("_uri")) continue;
    if (typeof value !== "string" || !routedPaths.has(pathOfUrl(value))) delete doc[key];
  }
  if (doc["authorization_endpoint"] === undefined) {
    for (const key of AUTHORIZATION_ONLY_FIELDS) delete doc[key];
  }
  doc["grant_types_supported"] = [...GRANT_TYPES_SUPPORTED];
}

function pathOfUrl(value: string): string {
  try {
    return new URL(value).pathname;
  } catch {
    // Not a URL: not something a client could call, so not something to keep advertising.
    return "";
  }
}
