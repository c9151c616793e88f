// Default locations and addresses. They match the daemon's config defaults
// (packages/controlplane/src/config.ts) and honour the same CLAWKER_CP_* variables.
import { homedir } from "node:os";
import { join } from "node:path";

/** The admin gRPC listener. */
export const DEFAULT_ADMIN_ADDR = "127.0.0.1:7443";
/** The plain-HTTP /healthz listener. */
export const DEFAULT_HEALTH_ADDR = "127.0.0.1:7080";
/** The embedded auth server's token endpoint. */
export const DEFAULT_TOKEN_ENDPOINT = "https://127.0.0.1:4444/oauth2/token";
/** The group whose members may use the admin Unix socket (the daemon's default too). */
export const DEFAULT_ADMIN_GROUP = "clawker-admins";
/** The daemon executable looked up on PATH. */
export const DEFAULT_DAEMON = "clawker-cp";

function xdg(env: NodeJS.ProcessEnv, name: string, fallback: string): string {
  const v = env[name];
  return v !== undefined && v !== "" ? v : join(homedir(), fallback);
}

function nonEmpty(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v === "" ? undefined : v;
}

/** `$CLAWKER_CP_TRUST_DIR`, else `${XDG_CONFIG_HOME:-~/.config}/clawker/trust`. */
export function defaultTrustDir(env: NodeJS.ProcessEnv): string {
  return (
    nonEmpty(env, "CLAWKER_CP_TRUST_DIR") ?? join(xdg(env, "XDG_CONFIG_HOME", ".config"), "clawker", "trust")
  );
}

/** `$CLAWKER_CP_DATA_DIR`, else `${XDG_STATE_HOME:-~/.local/state}/clawker/controlplane`. */
export function defaultDataDir(env: NodeJS.ProcessEnv): string {
  return (
    nonEmpty(env, "CLAWKER_CP_DATA_DIR") ??
    join(xdg(env, "XDG_STATE_HOME", ".local/state"), "clawker", "controlplane")
  );
}

/** `$CLAWKER_CP_ADMIN_ADDR`, else 127.0.0.1:7443. */
export function defaultAdminAddr(env: NodeJS.ProcessEnv): string {
  return nonEmpty(env, "CLAWKER_CP_ADMIN_ADDR") ?? DEFAULT_ADMIN_ADDR;
}

/** `$CLAWKER_CP_HEALTH_ADDR`, else 127.0.0.1:7080. */
export function defaultHealthAddr(env: NodeJS.ProcessEnv): string {
  return nonEmpty(env, "CLAWKER_CP_HEALTH_ADDR") ?? DEFAULT_HEALTH_ADDR;
}

/** `$CLAWKER_TOKEN_ENDPOINT`, else https://127.0.0.1:4444/oauth2/token. */
export function defaultTokenEndpoint(env: NodeJS.ProcessEnv): string {
  return nonEmpty(env, "CLAWKER_TOKEN_ENDPOINT") ?? DEFAULT_TOKEN_ENDPOINT;
}

/** The pid file and the log file inside a data dir. */
export function runtimeFiles(dataDir: string): { pidFile: string; logFile: string } {
  return { pidFile: join(dataDir, "controlplane.pid"), logFile: join(dataDir, "controlplane.log") };
}
