// Which auth processes the daemon supervises and how: the embedded authserver by default, or Ory
// Hydra + Kratos + Oathkeeper when configured. Preparing writes their config files (0600). Their
// admin APIs are Unix sockets in 0700 directories of the data dir (auth/admin-sockets.ts).
import { mkdirSync, writeFileSync } from "node:fs";
import { getCompileCacheDir } from "node:module";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import {
  assertPrivateDirectory,
  EMBEDDED_ADMIN_SOCKET,
  HYDRA_ADMIN_SOCKET,
  removeStaleSocket,
} from "./auth/admin-sockets.js";
import type { Config } from "./config.js";
import { unixSocketUrl } from "./http-client.js";
import type { HelperCommand } from "./supervisor/subprocess-manager.js";
import type { TrustMaterial } from "./trust-dir.js";

/** One auth helper: how to run it and the URL (maybe `http+unix:`) that answers 200 once it is healthy. */
export interface AuthHelper {
  readonly name: string;
  readonly command: HelperCommand;
  readonly healthUrl: string;
  /** The nonce its health answer must echo (helpers we build); none for the Ory binaries. */
  readonly instance?: string;
}

/** The variable that hands the embedded authserver its instance nonce (its `ENV_INSTANCE_NONCE`). */
const INSTANCE_NONCE_ENV = "CLAWKER_INSTANCE_NONCE";

/** The auth processes to start, in order, and where their APIs are. */
export interface AuthPlan {
  readonly helpers: readonly AuthHelper[];
  /** Admin API base URL, an `http+unix:` socket URL: client registration and token introspection. */
  readonly adminUrl: string;
  /** Public API base URL: the token endpoint lives at `/oauth2/token`. */
  readonly publicUrl: string;
}

/** Where the auth APIs listen, known before anything starts: the admin API on its socket. */
export function authUrls(config: Config): Pick<AuthPlan, "adminUrl" | "publicUrl"> {
  const adminSocket =
    config.auth.mode === "ory"
      ? join(config.dataDir, "ory", HYDRA_ADMIN_SOCKET)
      : join(config.dataDir, "authserver", EMBEDDED_ADMIN_SOCKET);
  return { adminUrl: unixSocketUrl(adminSocket), publicUrl: issuerOf(config) };
}

/**
 * Writes the helpers' configs under the data dir and returns the plan to start them. `instance` is
 * this daemon start's nonce: the embedded authserver echoes it on its health endpoint.
 */
export async function prepareAuthProcesses(
  config: Config,
  trust: TrustMaterial,
  instance: string,
): Promise<AuthPlan> {
  return config.auth.mode === "ory"
    ? await prepareOry(config, trust)
    : prepareEmbedded(config, trust, instance);
}

function url(host: string, port: number): string {
  return `https://${host.includes(":") ? `[${host}]` : host}:${port}`;
}

/** The issuer origin: `auth.issuer`, else the token endpoint's own address (no trailing slash). */
function issuerOf(config: Config): string {
  const { host, publicHost = host, publicPort, issuer } = config.auth;
  return issuer === undefined ? url(publicHost, publicPort) : new URL(issuer).origin;
}

function prepareEmbedded(config: Config, trust: TrustMaterial, instance: string): AuthPlan {
  const dir = join(config.dataDir, "authserver");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // The authserver refuses an open directory too; saying so here names the fix before a spawn.
  assertPrivateDirectory(dir);
  const { host, publicHost = host, publicPort } = config.auth;
  const urls = authUrls(config);
  const file = join(dir, "authserver.json");
  const authConfig = {
    issuer: urls.publicUrl,
    aliases: config.auth.aliases.map((a) => new URL(a).origin),
    public: { host: publicHost, port: publicPort },
    admin: { socket: join(dir, EMBEDDED_ADMIN_SOCKET) },
    tls: { certFile: trust.paths.serverCert, keyFile: trust.paths.serverKey },
    databaseFile: join(dir, "authserver.db"),
    signingKeyFile: join(dir, "signing-key.jwk"),
    logLevel: config.log.level,
  };
  writeFileSync(file, JSON.stringify(authConfig, null, 2) + "\n", { mode: 0o600 });
  const entry = authserverEntry();
  return {
    helpers: [
      {
        name: "authserver",
        command: {
          file: entry.file,
          args: [...entry.args, "--config", file],
          env: { ...compileCacheEnv(), [INSTANCE_NONCE_ENV]: instance },
          // It exits when we are gone, even after a SIGKILL of ours (issue 10 §2).
          lifeline: true,
        },
        healthUrl: `${urls.adminUrl}/health/ready`,
        instance,
      },
    ],
    ...urls,
  };
}

async function prepareOry(config: Config, trust: TrustMaterial): Promise<AuthPlan> {
  // Loaded on demand: only Ory mode needs yaml, ajv and the upstream schemas.
  const {
    buildOryConfigs,
    loadOrCreateSystemSecret,
    oryAdminSockets,
    oryCommands,
    parseOrySettings,
    writeOryConfigs,
  } = await import("./auth/ory-config.js");
  const dir = join(config.dataDir, "ory");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  assertPrivateDirectory(dir);
  const { host, publicPort, ory } = config.auth;
  const settings = parseOrySettings({
    configDir: dir,
    secretFile: join(dir, "system.secret"),
    host,
    tls: { certFile: trust.paths.serverCert, keyFile: trust.paths.serverKey },
    logLevel: config.log.level === "debug" || config.log.level === "trace" ? "debug" : "info",
    hydra: { publicPort, dsn: ory.dsn },
    kratos: { dsn: ory.dsn, publicPort: ory.kratosPublicPort },
    oathkeeper: { apiPort: ory.oathkeeperApiPort, proxyPort: ory.oathkeeperProxyPort },
  });
  const configs = buildOryConfigs(settings, loadOrCreateSystemSecret(settings.secretFile));
  // The generated configs are checked against the upstream schemas in CI; an operator who names
  // the schemas of the Ory release they run gets the same check at every start. Nothing outside
  // the installed package and the operator's config is read.
  if (ory.schemaDir !== undefined) {
    const { OrySchemaValidator } = await import("./auth/ory-schema-validator.js");
    const validator = OrySchemaValidator.load(ory.schemaDir);
    validator.validate("hydra", configs.hydra);
    validator.validate("kratos", configs.kratos);
    validator.validate("oathkeeper", configs.oathkeeper);
    validator.validateAccessRules(configs.accessRules, configs.oathkeeper);
  }
  const files = writeOryConfigs(settings, configs);
  // Hydra and Kratos cannot bind over a socket file a killed predecessor left behind.
  for (const socket of Object.values(oryAdminSockets(settings))) await removeStaleSocket(socket);
  return {
    helpers: oryCommands(settings, files, ory).map((c) => ({
      name: c.name,
      command: { file: c.file, args: c.args },
      healthUrl: c.healthUrl,
    })),
    ...authUrls(config),
  };
}

/** Shares the daemon's compile cache (see main.ts) with the auth server, when it has one. */
function compileCacheEnv(): Record<string, string> {
  const dir = getCompileCacheDir();
  return dir === undefined ? {} : { NODE_COMPILE_CACHE: dir };
}

/**
 * How to run the embedded authserver: the built `dist/main.js` beside this package, or, when the
 * daemon itself runs from TypeScript sources (tests, development), the sources through tsx.
 */
export function authserverEntry(): { file: string; args: string[] } {
  const fromSource = import.meta.url.endsWith(".ts");
  const packageDir = fileURLToPath(new URL("../../authserver/", import.meta.url));
  if (!fromSource) return { file: process.execPath, args: [join(packageDir, "dist", "main.js")] };
  return {
    file: process.execPath,
    args: ["--import", import.meta.resolve("tsx"), "--conditions=source", join(packageDir, "src", "main.ts")],
  };
}
