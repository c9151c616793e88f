// The public listener: oidc-provider serves the token endpoint, discovery and JWKS at Hydra's
// paths; health is answered here; every other path is 404 (no authorization endpoint, no userinfo).
import type { IncomingMessage, ServerResponse } from "node:http";
import type Provider from "oidc-provider";
import { pathOf, sendError, sendJson } from "./http-io.js";

/** The paths handed to oidc-provider, each with the methods it answers. */
export const PROVIDER_ROUTES: ReadonlyMap<string, readonly string[]> = new Map([
  ["/oauth2/token", ["POST"]],
  ["/.well-known/openid-configuration", ["GET", "HEAD"]],
  ["/.well-known/jwks.json", ["GET", "HEAD"]],
]);

/** The paths handed to oidc-provider; discovery advertises no endpoint outside them. */
export const PROVIDER_PATHS: ReadonlySet<string> = new Set(PROVIDER_ROUTES.keys());

/** What the public routes need; `provider()` is undefined until the server is ready. */
export interface PublicApiOptions {
  readonly provider: () =>
    | { readonly callback: (req: IncomingMessage, res: ServerResponse) => unknown; readonly host: string }
    | undefined;
}

/** Builds the public request handler. */
export function publicHandler(o: PublicApiOptions): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const path = pathOf(req);
    if (path === "/health/alive" && req.method === "GET") return sendJson(res, 200, { status: "ok" });
    const p = o.provider();
    if (path === "/health/ready" && req.method === "GET") {
      return p === undefined
        ? sendJson(res, 503, { errors: { provider: "not ready" } })
        : sendJson(res, 200, { status: "ok" });
    }
    const methods = PROVIDER_ROUTES.get(path);
    if (methods === undefined) return sendError(res, 404, "not_found", "no such endpoint");
    // oidc-provider answers a wrong method with a plain-text 404, as if the advertised endpoint
    // did not exist; Hydra answers 405.
    if (!methods.includes(req.method ?? "")) {
      return sendError(res, 405, "method_not_allowed", `use ${methods.join(" or ")}`, {
        allow: methods.join(", "),
      });
    }
    if (p === undefined) return sendError(res, 503, "temporarily_unavailable", "the server is starting up");
    // oidc-provider derives endpoint URLs (discovery, accepted assertion audiences) from the Host
    // header; pin it to the issuer's so they never depend on what a client sent.
    req.headers.host = p.host;
    void p.callback(req, res);
  };
}

/** Wraps a provider for publicHandler. */
export function providerEntry(provider: Provider, issuer: string) {
  return { callback: provider.callback(), host: new URL(issuer).host };
}
