// Ory mode: typed settings -> hydra.yaml, kratos.yaml, oathkeeper.yaml (+ access rules), the
// system secret (generated once, 0600, reused), and the command lines that start each binary.
// Everything is validated against the upstream schemas by ory-schema-validator.ts before use.
// Hydra's and Kratos' admin APIs listen on Unix sockets (0600) in the 0700 config dir, never on
// TCP (ory/x configx: `serve.admin.host: unix:<path>`, `serve.admin.socket.mode`).
import { createHmac, randomBytes } from "node:crypto";
import {
  constants,
  openSync,
  readFileSync,
  statSync,
  writeFileSync,
  closeSync,
  writeSync,
  mkdirSync,
} from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { stringify } from "yaml";
import * as z from "zod";
import { unixSocketUrl } from "../http-client.js";
import { ADMIN_SOCKET_MODE, HYDRA_ADMIN_SOCKET, KRATOS_ADMIN_SOCKET } from "./admin-sockets.js";

const port = z.number().int().min(1).max(65535);
const dsn = z
  .string()
  .refine((v) => v === "memory" || v.startsWith("postgres://") || v.startsWith("postgresql://"), {
    message: 'DSN must be "memory" or a postgres:// URL',
  });

/**
 * Settings for Ory mode; defaults are ARCHITECTURE.md's ports on loopback, in-memory storage. The
 * admin APIs have no port: they are sockets in `configDir` (see oryAdminSockets).
 */
export const OrySettingsSchema = z.strictObject({
  /** Directory (0700) the generated configs, the access rules and the admin sockets live in. */
  configDir: z.string().min(1),
  /** File holding the system secret; created 0600 on first use. */
  secretFile: z.string().min(1),
  /** Interface every Ory listener binds (never 0.0.0.0 by default). */
  host: z.string().min(1).default("127.0.0.1"),
  tls: z.strictObject({ certFile: z.string().min(1), keyFile: z.string().min(1) }),
  logLevel: z.enum(["debug", "info", "warn", "error"]).default("info"),
  hydra: z
    .strictObject({
      publicPort: port.default(4444),
      /** Token issuer; defaults to the public URL. */
      issuer: z.url().optional(),
      dsn: dsn.default("memory"),
      accessTokenTtl: z
        .string()
        .regex(/^[0-9]+(ms|s|m|h)$/)
        .default("1h"),
    })
    .prefault({}),
  kratos: z
    .strictObject({
      publicPort: port.default(4433),
      dsn: dsn.default("memory"),
      /** Identity schema file; defaults to the repo's ory/identity.schema.json. */
      identitySchemaFile: z.string().min(1).optional(),
    })
    .prefault({}),
  oathkeeper: z
    .strictObject({
      apiPort: port.default(4456),
      proxyPort: port.default(4457),
    })
    .prefault({}),
});

/** Parsed Ory settings (defaults applied). */
export type OrySettings = z.infer<typeof OrySettingsSchema>;
/** Ory settings as a caller writes them (defaults optional). */
export type OrySettingsInput = z.input<typeof OrySettingsSchema>;

/** Parses and freezes Ory settings; throws a ZodError listing every problem. */
export function parseOrySettings(input: OrySettingsInput): Readonly<OrySettings> {
  return Object.freeze(OrySettingsSchema.parse(input));
}

/** The repo's `ory/` folder (identity schema, access rules), from this file's location. */
export function oryAssetsDir(): string {
  // src/auth/ or dist/auth/ inside packages/controlplane: four levels up is the repo root.
  return resolve(import.meta.dirname, "../../../../ory");
}

/** A problem with the system secret file. */
export class OrySecretError extends Error {
  override readonly name = "OrySecretError";
  constructor(
    readonly reason: "insecure_permissions" | "too_short",
    message: string,
  ) {
    super(message);
  }
}

const SECRET_BYTES = 32;

/**
 * Returns the system secret, creating it on first use: 32 random bytes, base64url, written with
 * mode 0600 by an exclusive create (two starters never write two secrets). A file readable by
 * group or others, or a short one, is refused rather than used.
 */
export function loadOrCreateSystemSecret(file: string): string {
  try {
    const fd = openSync(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
    try {
      writeSync(fd, randomBytes(SECRET_BYTES).toString("base64url") + "\n");
    } finally {
      closeSync(fd);
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
  }
  const mode = statSync(file).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new OrySecretError(
      "insecure_permissions",
      `secret file ${file} has mode ${mode.toString(8)}, want 600`,
    );
  }
  const secret = readFileSync(file, "utf8").trim();
  if (Buffer.byteLength(secret) < 32)
    throw new OrySecretError("too_short", `secret file ${file} is too short`);
  return secret;
}

/** A purpose-specific secret derived from the system secret, so no two uses share one value. */
function derive(secret: string, purpose: string): string {
  return createHmac("sha256", secret).update(purpose).digest("base64url");
}

const hydraLogLevel = { debug: "debug", info: "info", warn: "warn", error: "error" } as const;
const kratosLogLevel = { debug: "debug", info: "info", warn: "warning", error: "error" } as const;

/** The Unix sockets of Hydra's and Kratos' admin APIs for these settings. */
export function oryAdminSockets(s: OrySettings): { readonly hydra: string; readonly kratos: string } {
  return { hydra: join(s.configDir, HYDRA_ADMIN_SOCKET), kratos: join(s.configDir, KRATOS_ADMIN_SOCKET) };
}

/** URLs derived from the settings (what the CP and the clients talk to); admin ones are `http+unix:`. */
export interface OryUrls {
  readonly hydraPublic: string;
  readonly hydraAdmin: string;
  readonly issuer: string;
  readonly kratosPublic: string;
  readonly kratosAdmin: string;
  readonly oathkeeperApi: string;
  readonly oathkeeperProxy: string;
}

/** The URLs of every Ory listener for these settings. */
export function oryUrls(s: OrySettings): OryUrls {
  const base = (p: number): string => `https://${s.host.includes(":") ? `[${s.host}]` : s.host}:${p}`;
  const hydraPublic = base(s.hydra.publicPort);
  const sockets = oryAdminSockets(s);
  return {
    hydraPublic,
    hydraAdmin: unixSocketUrl(sockets.hydra),
    issuer: s.hydra.issuer ?? `${hydraPublic}/`,
    kratosPublic: base(s.kratos.publicPort),
    kratosAdmin: unixSocketUrl(sockets.kratos),
    oathkeeperApi: base(s.oathkeeper.apiPort),
    oathkeeperProxy: base(s.oathkeeper.proxyPort),
  };
}

/**
 * An admin API on a socket (configx: a `unix:` host; the port is then ignored). No TLS on it, as
 * Hydra and Kratos serve plain HTTP there; only our uid can reach the 0700 directory.
 */
function socketListener(path: string): Record<string, unknown> {
  return { host: `unix:${path}`, socket: { mode: ADMIN_SOCKET_MODE } };
}

function tlsFiles(s: OrySettings): { cert: { path: string }; key: { path: string } } {
  return { cert: { path: resolve(s.tls.certFile) }, key: { path: resolve(s.tls.keyFile) } };
}

/**
 * Hydra's config: TLS on the public listener, the admin API on its socket (Hydra serves plain HTTP
 * on a `unix:` address even with `serve.tls` on), exact scope matching, opaque tokens.
 */
export function hydraConfig(s: OrySettings, secret: string): Record<string, unknown> {
  const urls = oryUrls(s);
  return {
    dsn: s.hydra.dsn,
    serve: {
      public: { host: s.host, port: s.hydra.publicPort },
      admin: socketListener(oryAdminSockets(s).hydra),
      tls: { enabled: true, ...tlsFiles(s) },
    },
    urls: { self: { issuer: urls.issuer, public: `${urls.hydraPublic}/` } },
    secrets: { system: [derive(secret, "hydra.system")] },
    strategies: { scope: "exact", access_token: "opaque" },
    ttl: { access_token: s.hydra.accessTokenTtl },
    log: { level: hydraLogLevel[s.logLevel], format: "json", leak_sensitive_values: false },
  };
}

/**
 * Kratos's config: identity schema from ory/, self-service returning to its own public URL, the
 * admin API on its socket without TLS (Kratos would speak TLS on the socket if given files).
 */
export function kratosConfig(s: OrySettings, secret: string): Record<string, unknown> {
  const urls = oryUrls(s);
  const schemaFile = resolve(s.kratos.identitySchemaFile ?? join(oryAssetsDir(), "identity.schema.json"));
  return {
    dsn: s.kratos.dsn,
    serve: {
      public: {
        host: s.host,
        port: s.kratos.publicPort,
        base_url: `${urls.kratosPublic}/`,
        tls: tlsFiles(s),
      },
      // base_url must be a URI; nothing reaches the admin API by it (only through the socket).
      admin: { ...socketListener(oryAdminSockets(s).kratos), base_url: "http://localhost/" },
    },
    identity: {
      default_schema_id: "clawker-operator",
      schemas: [{ id: "clawker-operator", url: pathToFileURL(schemaFile).href }],
    },
    selfservice: { default_browser_return_url: `${urls.kratosPublic}/` },
    secrets: { default: [derive(secret, "kratos.default")], cookie: [derive(secret, "kratos.cookie")] },
    log: { level: kratosLogLevel[s.logLevel], format: "json", leak_sensitive_values: false },
  };
}

/**
 * Oathkeeper's config: TLS listeners on `host`, rules from the generated rules file, JSON errors.
 * Its API stays on TCP: Oathkeeper cannot listen on a Unix socket (cmd/server uses ListenAndServe),
 * and that API only reads rules and judges requests; it cannot register clients or mint tokens.
 */
export function oathkeeperConfig(s: OrySettings, accessRulesFile: string): Record<string, unknown> {
  return {
    serve: {
      api: { host: s.host, port: s.oathkeeper.apiPort, tls: tlsFiles(s) },
      proxy: { host: s.host, port: s.oathkeeper.proxyPort, tls: tlsFiles(s) },
    },
    access_rules: { repositories: [pathToFileURL(resolve(accessRulesFile)).href], matching_strategy: "glob" },
    errors: { fallback: ["json"], handlers: { json: { enabled: true, config: { verbose: false } } } },
    log: { level: hydraLogLevel[s.logLevel], format: "json", leak_sensitive_values: false },
  };
}

/**
 * Oathkeeper access rules: none. The one there was (Kratos' admin API behind the proxy for
 * `admin` tokens) needed Hydra's introspection and Kratos' admin API over TCP; both are Unix
 * sockets now, which Oathkeeper cannot dial (its upstreams and introspection URL are TCP URLs), so
 * Kratos' admin API is the daemon's alone.
 */
export function accessRules(): unknown[] {
  return [];
}

/** Paths of the written files. */
export interface OryConfigFiles {
  readonly hydra: string;
  readonly kratos: string;
  readonly oathkeeper: string;
  readonly accessRules: string;
}

/** The three configs (plus the access rules) as objects, before writing. */
export interface OryConfigs {
  readonly hydra: Record<string, unknown>;
  readonly kratos: Record<string, unknown>;
  readonly oathkeeper: Record<string, unknown>;
  readonly accessRules: unknown[];
}

/** Builds every config from settings and the system secret (pure). */
export function buildOryConfigs(s: OrySettings, secret: string): OryConfigs {
  return {
    hydra: hydraConfig(s, secret),
    kratos: kratosConfig(s, secret),
    oathkeeper: oathkeeperConfig(s, join(s.configDir, "access-rules.json")),
    accessRules: accessRules(),
  };
}

/**
 * Writes the configs (mode 0600: they hold secrets) into `configDir`, overwriting earlier ones so
 * they always match this binary. Validate `configs` first (OrySchemaValidator).
 */
export function writeOryConfigs(s: OrySettings, configs: OryConfigs): OryConfigFiles {
  mkdirSync(s.configDir, { recursive: true, mode: 0o700 });
  const files: OryConfigFiles = {
    hydra: join(s.configDir, "hydra.yaml"),
    kratos: join(s.configDir, "kratos.yaml"),
    oathkeeper: join(s.configDir, "oathkeeper.yaml"),
    accessRules: join(s.configDir, "access-rules.json"),
  };
  writeFileSync(files.hydra, stringify(configs.hydra), { mode: 0o600 });
  writeFileSync(files.kratos, stringify(configs.kratos), { mode: 0o600 });
  writeFileSync(files.oathkeeper, stringify(configs.oathkeeper), { mode: 0o600 });
  writeFileSync(files.accessRules, JSON.stringify(configs.accessRules, null, 2) + "\n", { mode: 0o600 });
  return files;
}

/** One Ory process to supervise: its name, binary and argv (the real binaries' CLI shapes). */
export interface OryCommand {
  readonly name: "hydra" | "kratos" | "oathkeeper";
  readonly file: string;
  readonly args: readonly string[];
  /** Liveness URL to poll until 200: `/health/alive` on Hydra's and Kratos' admin sockets, Oathkeeper's API. */
  readonly healthUrl: string;
}

/** The commands starting Hydra, Kratos and Oathkeeper, in start order. */
export function oryCommands(
  s: OrySettings,
  files: OryConfigFiles,
  binaries: { readonly hydra?: string; readonly kratos?: string; readonly oathkeeper?: string } = {},
): OryCommand[] {
  const urls = oryUrls(s);
  return [
    {
      name: "hydra",
      file: binaries.hydra ?? "hydra",
      args: ["serve", "all", "--config", files.hydra],
      healthUrl: `${urls.hydraAdmin}/health/alive`,
    },
    {
      name: "kratos",
      file: binaries.kratos ?? "kratos",
      args: ["serve", "--config", files.kratos],
      healthUrl: `${urls.kratosAdmin}/health/alive`,
    },
    {
      name: "oathkeeper",
      file: binaries.oathkeeper ?? "oathkeeper",
      args: ["serve", "--config", files.oathkeeper],
      healthUrl: `${urls.oathkeeperApi}/health/alive`,
    },
  ];
}
