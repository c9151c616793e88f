// FAKE Hydra, for tests only (the real binary cannot be installed here). Run as
// `tsx test/fakes/fake-hydra.ts serve all --config hydra.yaml`. Listens as Hydra does: `serve.tls`
// on TCP listeners, plain HTTP on a `unix:` one (cmd/server/handler.go serves a socket without
// TLS). Follows Hydra's HTTP API for the parts clawker uses: `/health/alive|ready`; admin
// `POST /admin/clients` (201, 409, 400), `GET|DELETE /admin/clients/{id}` (200/204, 404),
// `PUT /admin/clients/{id}` (setOAuth2Client: the path's id, full replacement, 200, 404),
// `DELETE /admin/oauth2/tokens?client_id=` (204, 400 without client_id),
// `POST /admin/oauth2/introspect` (RFC 7662, `active:false` when a requested scope is missing);
// public `POST /oauth2/token` (client_credentials with an ES256 private_key_jwt assertion,
// audience = the token URL, jti replay refused, scope limited to the client's) and discovery.
// State lives in memory.
import { randomBytes } from "node:crypto";
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from "jose";
import {
  addressOf,
  at,
  isUnixHost,
  readConfigFromArgv,
  sendJson,
  serveFake,
  tlsOf,
  type FakeHandler,
} from "./fake-ory-server.js";

interface Client {
  readonly body: Record<string, unknown>;
  readonly scope: string[];
  readonly jwks: JSONWebKeySet;
}
interface Token {
  readonly clientId: string;
  readonly scope: string[];
  readonly iat: number;
  readonly exp: number;
}

const config = readConfigFromArgv("hydra", ["serve", "all"]);
const publicAddress = addressOf(config, "serve.public", 4444);
const adminAddress = addressOf(config, "serve.admin", 4445);
const issuer =
  (at(config, "urls.self.issuer") as string | undefined) ??
  `https://${publicAddress.host}:${publicAddress.port}/`;
const publicBase = issuer.replace(/\/$/, "");
const tokenUrl = `${publicBase}/oauth2/token`;
const ttlSeconds = parseTtl((at(config, "ttl.access_token") as string | undefined) ?? "1h");
// Hydra's serve.tls covers both listeners, but a socket is served without TLS.
const tls = tlsOf(config, "serve.tls");
const tlsFor = (host: string) => (isUnixHost(host) ? undefined : tls);

const clients = new Map<string, Client>();
const tokens = new Map<string, Token>();
const seenJti = new Map<string, number>();

/** Decodes and validates a client body as Hydra does for POST and PUT; answers 400 itself. */
function readClient(body: Buffer, res: Parameters<FakeHandler>[1]): Record<string, unknown> | undefined {
  let c: Record<string, unknown>;
  try {
    c = JSON.parse(body.toString("utf8")) as Record<string, unknown>;
  } catch {
    sendJson(res, 400, {
      error: "invalid_request",
      error_description: "The request body is not valid JSON",
    });
    return undefined;
  }
  const jwks = c["jwks"] as JSONWebKeySet | undefined;
  if (
    c["token_endpoint_auth_method"] === "private_key_jwt" &&
    (jwks === undefined || !Array.isArray(jwks.keys))
  ) {
    sendJson(res, 400, {
      error: "invalid_client_metadata",
      error_description: "private_key_jwt requires jwks or jwks_uri",
    });
    return undefined;
  }
  return c;
}

function store(id: string, c: Record<string, unknown>, createdAt: string): Record<string, unknown> {
  const stored = { ...c, client_id: id, created_at: createdAt, updated_at: new Date().toISOString() };
  clients.set(id, {
    body: stored,
    scope: (typeof c["scope"] === "string" ? c["scope"] : "").split(" ").filter(Boolean),
    jwks: (c["jwks"] as JSONWebKeySet | undefined) ?? { keys: [] },
  });
  return stored;
}

const admin: FakeHandler = (req, res, body) => {
  const url = new URL(req.url ?? "/", "https://fake");
  const path = url.pathname;
  if (req.method === "POST" && path === "/admin/clients") {
    const c = readClient(body, res);
    if (c === undefined) return true;
    const id =
      typeof c["client_id"] === "string" && c["client_id"] !== ""
        ? c["client_id"]
        : randomBytes(16).toString("hex");
    if (clients.has(id)) {
      sendJson(res, 409, {
        error: "Unable to insert or update resource because a resource with that value exists already",
      });
      return true;
    }
    sendJson(res, 201, store(id, c, new Date().toISOString()));
    return true;
  }
  if (req.method === "DELETE" && path === "/admin/oauth2/tokens") {
    const clientId = url.searchParams.get("client_id") ?? "";
    if (clientId === "") {
      sendJson(res, 400, {
        error: "invalid_request",
        error_description: "Query parameter 'client_id' is not defined but it should have been.",
      });
      return true;
    }
    for (const [t, v] of tokens) if (v.clientId === clientId) tokens.delete(t);
    res.writeHead(204).end();
    return true;
  }
  const m = /^\/admin\/clients\/([^/]+)$/.exec(path);
  if (m !== null) {
    const id = decodeURIComponent(m[1]!);
    const client = clients.get(id);
    if (req.method === "GET") {
      if (client === undefined) sendJson(res, 404, { error: "Unable to locate the resource" });
      else sendJson(res, 200, client.body);
      return true;
    }
    if (req.method === "PUT") {
      // setOAuth2Client: the body is the whole client, its id comes from the path.
      const c = readClient(body, res);
      if (c === undefined) return true;
      if (client === undefined) sendJson(res, 404, { error: "Unable to locate the resource" });
      else sendJson(res, 200, store(id, c, String(client.body["created_at"])));
      return true;
    }
    if (req.method === "DELETE") {
      if (client === undefined) sendJson(res, 404, { error: "Unable to locate the resource" });
      else {
        clients.delete(id);
        res.writeHead(204).end();
      }
      return true;
    }
  }
  if (req.method === "POST" && path === "/admin/oauth2/introspect") {
    const form = new URLSearchParams(body.toString("utf8"));
    const raw = form.get("token");
    if (raw === null || raw === "") {
      sendJson(res, 400, { error: "invalid_request", error_description: "token is required" });
      return true;
    }
    const t = tokens.get(raw);
    const now = Math.floor(Date.now() / 1000);
    const wanted = (form.get("scope") ?? "").split(" ").filter(Boolean);
    if (t === undefined || t.exp <= now || !wanted.every((s) => t.scope.includes(s))) {
      sendJson(res, 200, { active: false });
      return true;
    }
    sendJson(res, 200, {
      active: true,
      scope: t.scope.join(" "),
      client_id: t.clientId,
      sub: t.clientId,
      exp: t.exp,
      iat: t.iat,
      nbf: t.iat,
      aud: [],
      iss: issuer,
      token_type: "Bearer",
      token_use: "access_token",
    });
    return true;
  }
  return false;
};

const publicApi: FakeHandler = async (req, res, body) => {
  const path = new URL(req.url ?? "/", "https://fake").pathname;
  if (req.method === "GET" && path === "/.well-known/openid-configuration") {
    sendJson(res, 200, {
      issuer,
      token_endpoint: tokenUrl,
      jwks_uri: `${publicBase}/.well-known/jwks.json`,
      grant_types_supported: ["client_credentials"],
      token_endpoint_auth_methods_supported: ["private_key_jwt"],
    });
    return true;
  }
  if (req.method !== "POST" || path !== "/oauth2/token") return false;
  const form = new URLSearchParams(body.toString("utf8"));
  const deny = (status: number, error: string, description: string): true => {
    sendJson(res, status, { error, error_description: description });
    return true;
  };
  if (form.get("grant_type") !== "client_credentials")
    return deny(400, "unsupported_grant_type", "only client_credentials");
  if (form.get("client_assertion_type") !== "urn:ietf:params:oauth:client-assertion-type:jwt-bearer") {
    return deny(401, "invalid_client", "client assertion required");
  }
  const assertion = form.get("client_assertion") ?? "";
  const iss = decodeIss(assertion);
  const client = iss === undefined ? undefined : clients.get(iss);
  if (client === undefined || iss === undefined) return deny(401, "invalid_client", "unknown client");
  let payload;
  try {
    ({ payload } = await jwtVerify(assertion, createLocalJWKSet(client.jwks), {
      algorithms: ["ES256"],
      issuer: iss,
      subject: iss,
      audience: tokenUrl,
    }));
  } catch {
    return deny(401, "invalid_client", "client assertion rejected");
  }
  const now = Math.floor(Date.now() / 1000);
  for (const [j, exp] of seenJti) if (exp < now) seenJti.delete(j);
  if (typeof payload.jti !== "string" || seenJti.has(payload.jti)) {
    return deny(401, "invalid_client", "client assertion jti missing or replayed");
  }
  seenJti.set(payload.jti, payload.exp ?? now + 3600);
  const requested = (form.get("scope") ?? "").split(" ").filter(Boolean);
  if (!requested.every((s) => client.scope.includes(s)))
    return deny(400, "invalid_scope", "scope not allowed");
  const token = `ory_at_${randomBytes(32).toString("base64url")}`;
  tokens.set(token, { clientId: iss, scope: requested, iat: now, exp: now + ttlSeconds });
  sendJson(res, 200, {
    access_token: token,
    token_type: "bearer",
    expires_in: ttlSeconds,
    scope: requested.join(" "),
  });
  return true;
};

function decodeIss(jwt: string): string | undefined {
  try {
    const payload = JSON.parse(Buffer.from(jwt.split(".")[1] ?? "", "base64url").toString("utf8")) as {
      iss?: unknown;
    };
    return typeof payload.iss === "string" ? payload.iss : undefined;
  } catch {
    return undefined;
  }
}

function parseTtl(v: string): number {
  const m = /^([0-9]+)(ms|s|m|h)$/.exec(v);
  if (m === null) return 3600;
  const n = Number(m[1]);
  return Math.max(
    1,
    Math.floor({ ms: n / 1000, s: n, m: n * 60, h: n * 3600 }[m[2] as "ms" | "s" | "m" | "h"]),
  );
}

await serveFake("hydra", [
  { ...publicAddress, tls: tlsFor(publicAddress.host), handler: publicApi },
  { ...adminAddress, tls: tlsFor(adminAddress.host), handler: admin },
]);
