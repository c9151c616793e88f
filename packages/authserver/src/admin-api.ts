// The admin API's routes, with Hydra's paths and shapes: client registration, lookup, replacement
// and deletion, token deletion per client, RFC 7662 introspection and health. No authentication:
// like Hydra's admin port, so it is served only on a Unix socket in a 0700 directory
// (admin-socket.ts): only the daemon's uid can connect.
import type { IncomingMessage, ServerResponse } from "node:http";
import type Provider from "oidc-provider";
import type { ClientMetadata } from "oidc-provider";
import type { Logger } from "pino";
import { validateClient } from "./clients.js";
import { BodyError, mediaType, pathOf, queryOf, readBody, sendError, sendJson } from "./http-io.js";
import { introspect } from "./introspection.js";
import type { AuthStore, StoredClient } from "./store.js";

/** What the admin routes need; `provider()` is undefined until the server is ready. */
export interface AdminApiOptions {
  readonly store: AuthStore;
  readonly issuer: () => string | undefined;
  readonly provider: () => Provider | undefined;
  readonly log: Logger;
  /** The supervisor's instance nonce, echoed by `/health/ready`. */
  readonly instance?: string;
}

const CLIENT_PATH = /^\/admin\/clients\/([^/]+)$/;

/** Builds the admin request handler. */
export function adminHandler(o: AdminApiOptions): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    route(o, req, res).catch((err: unknown) => {
      if (err instanceof BodyError) {
        if (!res.headersSent) sendError(res, err.status, "invalid_request", err.message);
        return;
      }
      o.log.error({ err, event: "admin_request_failed", path: pathOf(req) }, "admin request failed");
      if (!res.headersSent) sendError(res, 500, "server_error", "the server hit an unexpected error");
      else res.destroy();
    });
  };
}

async function route(o: AdminApiOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = pathOf(req);
  const method = req.method ?? "GET";
  if (path === "/health/alive") {
    if (only(method, ["GET"], res)) sendJson(res, 200, { status: "ok" });
    return;
  }
  if (path === "/health/ready") {
    if (!only(method, ["GET"], res)) return;
    if (o.provider() === undefined) return sendJson(res, 503, { errors: { provider: "not ready" } });
    return sendJson(
      res,
      200,
      o.instance === undefined ? { status: "ok" } : { status: "ok", instance: o.instance },
    );
  }
  const provider = o.provider();
  const issuer = o.issuer();
  if (provider === undefined || issuer === undefined) {
    return sendError(res, 503, "temporarily_unavailable", "the server is starting up");
  }
  if (path === "/admin/clients") {
    if (!only(method, ["POST"], res)) return;
    return await createClient(o, provider, req, res);
  }
  if (path === "/admin/oauth2/tokens") {
    if (!only(method, ["DELETE"], res)) return;
    const clientId = new URLSearchParams(queryOf(req)).get("client_id") ?? "";
    if (clientId === "") {
      return sendError(
        res,
        400,
        "invalid_request",
        "Query parameter 'client_id' is not defined but it should have been.",
      );
    }
    const deleted = o.store.deleteClientTokens(clientId);
    o.log.info({ event: "client_tokens_deleted", clientId, deleted }, "client tokens deleted");
    res.writeHead(204).end();
    return;
  }
  const m = CLIENT_PATH.exec(path);
  if (m !== null) {
    if (!only(method, ["GET", "PUT", "DELETE"], res)) return;
    let id: string;
    try {
      id = decodeURIComponent(m[1]!);
    } catch {
      return sendError(
        res,
        400,
        "invalid_request",
        "the client id in the path is not valid percent-encoding",
      );
    }
    if (method === "GET") {
      const client = o.store.getClient(id);
      if (client === undefined)
        return sendError(res, 404, "not_found", "the requested OAuth 2.0 client does not exist");
      return sendJson(res, 200, client.hydra);
    }
    if (method === "PUT") return await replaceClient(o, provider, id, req, res);
    if (!o.store.deleteClient(id)) {
      return sendError(res, 404, "not_found", "the requested OAuth 2.0 client does not exist");
    }
    o.log.info({ event: "client_deleted", clientId: id }, "client deleted");
    res.writeHead(204).end();
    return;
  }
  if (path === "/admin/oauth2/introspect") {
    if (!only(method, ["POST"], res)) return;
    const type = mediaType(req);
    if (type !== "application/x-www-form-urlencoded") {
      await readBody(req);
      return sendError(res, 400, "invalid_request", "the body must be application/x-www-form-urlencoded");
    }
    const form = new URLSearchParams(await readBody(req));
    if (form.size === 0) return sendError(res, 400, "invalid_request", "the POST body can not be empty");
    const answer = await introspect(
      provider,
      o.store,
      issuer,
      form.get("token") ?? "",
      form.get("scope") ?? "",
    );
    return sendJson(res, 200, answer);
  }
  return sendError(res, 404, "not_found", "no such admin endpoint");
}

/**
 * Reads and validates a client JSON body (`idFromPath` overrides its client_id, as Hydra's PUT
 * does); answers 400 itself and returns undefined when the body is not acceptable.
 */
async function readClient(
  provider: Provider,
  req: IncomingMessage,
  res: ServerResponse,
  idFromPath?: string,
): Promise<StoredClient | undefined> {
  if (mediaType(req) !== "application/json") {
    await readBody(req);
    sendError(res, 400, "invalid_request", "the body must be application/json");
    return undefined;
  }
  let body: unknown;
  try {
    body = JSON.parse(await readBody(req));
  } catch (err) {
    if (err instanceof BodyError) throw err;
    sendError(res, 400, "invalid_request", `the body is not valid JSON: ${(err as Error).message}`);
    return undefined;
  }
  if (idFromPath !== undefined && typeof body === "object" && body !== null && !Array.isArray(body)) {
    body = { ...body, client_id: idFromPath };
  }
  const v = validateClient(body);
  if (!v.ok) {
    sendError(res, 400, "invalid_client_metadata", v.problems.join("; "));
    return undefined;
  }
  try {
    // oidc-provider's own metadata validation (key usability and the like) must agree.
    await provider.Client.validate(v.client.oidc as unknown as ClientMetadata);
  } catch (err) {
    const e = err as { error_description?: string; message?: string };
    sendError(
      res,
      400,
      "invalid_client_metadata",
      e.error_description ?? e.message ?? "invalid client metadata",
    );
    return undefined;
  }
  return v.client;
}

/** Hydra's setOAuth2Client: the whole client is replaced; 200 with it, 404 when absent. */
async function replaceClient(
  o: AdminApiOptions,
  provider: Provider,
  id: string,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const client = await readClient(provider, req, res, id);
  if (client === undefined) return;
  const stored = o.store.replaceClient(client);
  if (stored === undefined) {
    return sendError(res, 404, "not_found", "the requested OAuth 2.0 client does not exist");
  }
  o.log.info({ event: "client_replaced", clientId: id, scope: stored.hydra["scope"] }, "client replaced");
  sendJson(res, 200, stored.hydra);
}

async function createClient(
  o: AdminApiOptions,
  provider: Provider,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const client = await readClient(provider, req, res);
  if (client === undefined) return;
  if (!o.store.insertClient(client)) {
    return sendError(res, 409, "conflict", `an OAuth 2.0 client with id '${client.id}' already exists`);
  }
  o.log.info(
    { event: "client_created", clientId: client.id, scope: client.hydra["scope"] },
    "client created",
  );
  sendJson(res, 201, client.hydra);
}

/** True when `method` is allowed; otherwise answers 405 with Allow and returns false. */
function only(method: string, allowed: readonly string[], res: ServerResponse): boolean {
  if (allowed.includes(method)) return true;
  sendError(res, 405, "method_not_allowed", `use ${allowed.join(" or ")}`, { allow: allowed.join(", ") });
  return false;
}
