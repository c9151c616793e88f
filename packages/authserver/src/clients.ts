// OAuth2 client registration in Hydra's JSON shape (the subset clawker uses): validation, and the
// mapping to oidc-provider client metadata. Only client_credentials + private_key_jwt (ES256) exist.
import * as z from "zod";
import type { StoredClient } from "./store.js";

/** RFC 6749 §3.3 scope-token: one or more NQCHAR (%x21 / %x23-5B / %x5D-7E). */
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;
const CLIENT_ID = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;
const PRIVATE_JWK_MEMBERS = ["d", "p", "q", "dp", "dq", "qi", "k", "oth"] as const;

const b64url = z.string().regex(/^[A-Za-z0-9_-]+$/, { message: "must be base64url" });

const publicEcJwk = z
  .looseObject({
    kty: z.literal("EC", { message: 'must be "EC" (ES256 keys only)' }),
    crv: z.literal("P-256", { message: 'must be "P-256" (ES256 keys only)' }),
    x: b64url.length(43, { message: "must be a 32-byte base64url coordinate" }),
    y: b64url.length(43, { message: "must be a 32-byte base64url coordinate" }),
    kid: z.string().min(1).max(256).optional(),
    alg: z.literal("ES256", { message: 'must be "ES256" when present' }).optional(),
    use: z.literal("sig", { message: 'must be "sig" when present' }).optional(),
  })
  .superRefine((k, ctx) => {
    for (const m of PRIVATE_JWK_MEMBERS) {
      if (m in k)
        ctx.addIssue({ code: "custom", path: [m], message: "private key material is not accepted" });
    }
  });

const clientSchema = z.strictObject({
  client_id: z.string().regex(CLIENT_ID, {
    message: "must be 1-128 characters of [A-Za-z0-9._:@-], starting with a letter or digit",
  }),
  client_name: z.string().max(256).optional(),
  grant_types: z
    .array(z.string())
    .refine((g) => g.length === 1 && g[0] === "client_credentials", {
      message: 'must be ["client_credentials"] (the only grant this server supports)',
    })
    .default(["client_credentials"]),
  response_types: z
    .array(z.string())
    .refine((r) => r.length === 0 || (r.length === 1 && r[0] === "token"), {
      message: 'must be [] or ["token"] (no authorization endpoint flows)',
    })
    .default([]),
  scope: z
    .string()
    .refine((s) => s === "" || s.split(" ").every((t) => SCOPE_TOKEN.test(t)), {
      message: "must be space-separated RFC 6749 scope tokens (single spaces, no quotes or backslashes)",
    })
    .default(""),
  audience: z
    .array(z.string())
    .max(0, { message: "must be empty: the token audience is fixed by the server configuration" })
    .default([]),
  token_endpoint_auth_method: z.literal("private_key_jwt", {
    message: 'must be "private_key_jwt" (the only client authentication this server supports)',
  }),
  token_endpoint_auth_signing_alg: z.literal("ES256", { message: 'must be "ES256"' }).default("ES256"),
  jwks: z.strictObject({
    keys: z
      .array(publicEcJwk)
      .min(1, { message: "must hold at least one public key" })
      .max(10, { message: "must hold at most 10 keys" }),
  }),
  metadata: z.record(z.string(), z.unknown()).optional(),
});

/** A client registration request as Hydra's `POST /admin/clients` takes it (the supported subset). */
export type HydraClientInput = z.input<typeof clientSchema>;

/** Result of validating a registration body: the client to store, or every problem found. */
export type ClientValidation =
  | { readonly ok: true; readonly client: StoredClient }
  | { readonly ok: false; readonly problems: readonly string[] };

/** Validates a parsed JSON body into a client (Hydra JSON + oidc-provider metadata), listing every problem. */
export function validateClient(body: unknown, now = new Date()): ClientValidation {
  const r = clientSchema.safeParse(body);
  if (!r.success) {
    return {
      ok: false,
      problems: r.error.issues.map(
        (i) => `${i.path.length === 0 ? "(body)" : i.path.join(".")}: ${i.message}`,
      ),
    };
  }
  const c = r.data;
  const stamp = now.toISOString();
  const hydra: Record<string, unknown> = {
    client_id: c.client_id,
    client_name: c.client_name ?? "",
    grant_types: c.grant_types,
    response_types: c.response_types,
    redirect_uris: [],
    scope: c.scope,
    audience: c.audience,
    token_endpoint_auth_method: c.token_endpoint_auth_method,
    token_endpoint_auth_signing_alg: c.token_endpoint_auth_signing_alg,
    jwks: c.jwks,
    subject_type: "public",
    client_secret_expires_at: 0,
    metadata: c.metadata ?? {},
    created_at: stamp,
    updated_at: stamp,
  };
  // Scope is deliberately not given to oidc-provider (it only knows its static scope list); the
  // token endpoint checks requested scopes against the stored Hydra `scope` instead.
  const oidc: Record<string, unknown> = {
    client_id: c.client_id,
    grant_types: ["client_credentials"],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: "private_key_jwt",
    token_endpoint_auth_signing_alg: "ES256",
    id_token_signed_response_alg: "ES256",
    jwks: c.jwks,
  };
  return { ok: true, client: { id: c.client_id, hydra, oidc } };
}

/** The client's registered scopes (empty set when none). */
export function registeredScopes(client: StoredClient): Set<string> {
  const s = client.hydra["scope"];
  return new Set(typeof s === "string" && s !== "" ? s.split(" ") : []);
}
