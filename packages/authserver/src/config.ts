// The auth server's configuration: one zod schema, parsed once, frozen. Every problem is listed in
// one ConfigError before anything binds.
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { dirname, isAbsolute, join, resolve } from "node:path";
import * as z from "zod";
import { AuthServerError, ConfigError } from "./errors.js";

/** Default public (token, discovery, JWKS) listener, as Hydra's public port. */
export const DEFAULT_PUBLIC_PORT = 4444;
/** File name of the admin API's Unix socket, beside the database unless `admin.socket` says otherwise. */
export const DEFAULT_ADMIN_SOCKET_NAME = "admin.sock";
/** Default access token lifetime in seconds (1 h, as Hydra's default). */
export const DEFAULT_ACCESS_TOKEN_TTL_SECONDS = 3600;
/** Default audience (RFC 8707 resource) stamped on every access token. */
export const DEFAULT_AUDIENCE = "urn:clawker:controlplane";

/** sun_path holds 108 bytes on Linux, the terminating NUL included. */
const MAX_SOCKET_PATH_BYTES = 107;

const ipLiteral = z.string().refine((h) => isIP(h) !== 0, { message: "must be an IP address literal" });
const port = z.int().min(0).max(65535);
const path = z.string().min(1, { message: "must be a non-empty file path" });
// The admin API has no authentication, so it listens only on a Unix socket in a 0700 directory:
// loopback TCP is reachable by every local user. Old configs that still name a TCP address get this.
const noTcpAdmin = z
  .never({
    error:
      "the admin API listens only on a Unix socket now (admin.socket): loopback TCP is open to every local user; remove admin.host and admin.port",
  })
  .optional();

const httpsOrigin = z.url({ protocol: /^https$/, message: "must be an https URL" }).refine(
  (u) => {
    const url = new URL(u);
    return (url.pathname === "/" || url.pathname === "") && url.search === "" && url.hash === "";
  },
  { message: "must be an https origin without path, query or fragment" },
);

const schema = z
  .strictObject({
    /** Issuer identifier (https origin). Defaults to https://<public host>:<bound public port>. */
    issuer: httpsOrigin.optional(),
    /**
     * Other https origins the public listener is reached at (a container's address on a second
     * network): `<alias>/oauth2/token` is accepted as a client assertion's `aud` besides the
     * issuer's token endpoint URL. Exactly these; never whatever a client dialed.
     */
    aliases: z.array(httpsOrigin).max(8).default([]),
    public: z
      .strictObject({ host: ipLiteral.default("127.0.0.1"), port: port.default(DEFAULT_PUBLIC_PORT) })
      .prefault({}),
    admin: z
      .strictObject({
        /** The admin API's Unix socket (default: admin.sock beside databaseFile). */
        socket: path.optional(),
        host: noTcpAdmin,
        port: noTcpAdmin,
      })
      .prefault({}),
    tls: z.strictObject({
      /** PEM certificate (chain) served by the public listener: the CP's server leaf. */
      certFile: path,
      /** PEM private key of certFile. */
      keyFile: path,
      /** Optional PEM CA bundle appended to the served chain. */
      caFile: path.optional(),
    }),
    /** sqlite database (created, WAL). */
    databaseFile: path,
    /** EC P-256 private JWK; generated with mode 0600 when absent. */
    signingKeyFile: path,
    accessTokenTtlSeconds: z.int().min(1).max(86_400).default(DEFAULT_ACCESS_TOKEN_TTL_SECONDS),
    /** Audience of every access token (an absolute URI, as RFC 8707 resource indicators). */
    audience: z
      .string()
      .refine((a) => URL.canParse(a) && !a.includes("#"), {
        message: "must be an absolute URI without fragment",
      })
      .default(DEFAULT_AUDIENCE),
    /** How often expired tokens and replay records are deleted. */
    gcIntervalSeconds: z.int().min(1).max(86_400).default(60),
    logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  })
  .superRefine((c, ctx) => {
    if (c.issuer === undefined && (c.public.host === "0.0.0.0" || c.public.host === "::")) {
      ctx.addIssue({
        code: "custom",
        path: ["issuer"],
        message: "is required when the public listener binds a wildcard address",
      });
    }
  });

/** What a config file may contain (defaults not yet applied): what a supervisor writes. */
export type AuthServerConfigInput = z.input<typeof schema>;
/** The parsed, defaulted, frozen configuration; every path is absolute. */
export type AuthServerConfig = Readonly<
  Omit<z.output<typeof schema>, "admin"> & { readonly admin: { readonly socket: string } }
>;

/** Environment variables that override the file. */
export const ENV_LOG_LEVEL = "CLAWKER_AUTHSERVER_LOG_LEVEL";

/**
 * Validates `raw` (a parsed JSON value) plus env overrides into a frozen config. Relative file paths
 * resolve against `baseDir`. Throws ConfigError listing every problem.
 */
export function parseConfig(
  raw: unknown,
  { env = process.env, baseDir = process.cwd() }: { env?: NodeJS.ProcessEnv; baseDir?: string } = {},
): AuthServerConfig {
  let input = raw;
  const level = env[ENV_LOG_LEVEL];
  if (level !== undefined && level !== "" && typeof raw === "object" && raw !== null && !Array.isArray(raw)) {
    input = { ...(raw as Record<string, unknown>), logLevel: level };
  }
  // Parsed once per process: zod's eval-compiled fast path pays off only for repeated parses, and
  // compiling it was start-up time on the supervising daemon's critical path.
  const result = schema.safeParse(input, { jitless: true });
  if (!result.success) {
    throw new ConfigError(
      result.error.issues.map((i) => `${i.path.length === 0 ? "(root)" : i.path.join(".")}: ${i.message}`),
    );
  }
  const c = result.data;
  const abs = (p: string): string => (isAbsolute(p) ? p : resolve(baseDir, p));
  const databaseFile = abs(c.databaseFile);
  const socket = abs(c.admin.socket ?? join(dirname(databaseFile), DEFAULT_ADMIN_SOCKET_NAME));
  if (Buffer.byteLength(socket) > MAX_SOCKET_PATH_BYTES) {
    throw new ConfigError([
      `admin.socket: ${socket} is ${Buffer.byteLength(socket)} bytes; a Unix socket path holds at most ${MAX_SOCKET_PATH_BYTES}`,
    ]);
  }
  return deepFreeze({
    ...c,
    admin: { socket },
    tls: {
      certFile: abs(c.tls.certFile),
      keyFile: abs(c.tls.keyFile),
      ...(c.tls.caFile === undefined ? {} : { caFile: abs(c.tls.caFile) }),
    },
    databaseFile,
    signingKeyFile: abs(c.signingKeyFile),
  });
}

/** Reads and validates a JSON config file; relative paths in it resolve against its directory. */
export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): AuthServerConfig {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new AuthServerError("config_unreadable", `cannot read config file ${file}`, { cause: err });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigError([`(file): not valid JSON: ${(err as Error).message}`], { cause: err });
  }
  return parseConfig(raw, { env, baseDir: dirname(resolve(file)) });
}

function deepFreeze<T>(o: T): T {
  if (typeof o === "object" && o !== null) {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}
