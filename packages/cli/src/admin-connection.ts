// Opens the admin client as the CLI: on the control plane's admin Unix socket when there is one
// (its group is the gate; only the CA and the signing key are needed for the token), else over
// mTLS TCP from the stored trust set. The clock is corrected by the control plane's GetSystemTime
// so client assertions are never issued in the server's future.
import { execFile } from "node:child_process";
import { stat } from "node:fs/promises";
import { createConnection } from "node:net";
import { dirname, isAbsolute, join, resolve } from "node:path";
import {
  AdminError,
  isTokenRefusal,
  loadTokenCredentials,
  loadTrustSet,
  openAdminClient,
  openAdminSocketClient,
  type AdminClient,
  type ClockSkew,
} from "@clawker/adminclient";
import { optStr, parseAddress, parseDuration, str, type FlagValues } from "./command-spec.js";
import { defaultAdminAddr, defaultDataDir, defaultTokenEndpoint, defaultTrustDir } from "./defaults.js";
import { CliError, ExitCode } from "./exit-codes.js";
import type { Io } from "./io.js";

/** The system control plane's admin socket (a root daemon configured for its group). */
export const SYSTEM_ADMIN_SOCKET = "/run/clawker/admin.sock";

/**
 * Which admin socket to use: `explicit` (flag or CLAWKER_ADMIN_SOCKET) is used or fails, never
 * falling back; `candidates` are tried in order and the first that answers wins, else TCP.
 */
export type AdminSocketChoice = { readonly explicit: string } | { readonly candidates: readonly string[] };

/** Where the CLI's credentials are and what to dial. */
export interface AdminConnectionOptions {
  readonly trustDir: string;
  readonly admin: string;
  readonly tokenEndpoint: string;
  readonly deadlineMs?: number;
  /** Prefer an admin Unix socket (see AdminSocketChoice); absent: TCP only. */
  readonly socket?: AdminSocketChoice | undefined;
}

/** An open admin connection and the clock skew measured on it. */
export interface AdminConnection {
  readonly client: AdminClient;
  readonly skew: ClockSkew;
  /** `unix:<path>` or the TCP `host:port` it dialed. */
  readonly via: string;
}

/** Skew above which the CLI warns. */
export const SKEW_WARN_MS = 1_000;
/** Skew above which the CLI refuses to go on (tokens and certificates would misbehave). */
export const SKEW_FAIL_MS = 30_000;

/**
 * The socket choice of a command: `--admin-socket` or `$CLAWKER_ADMIN_SOCKET` is explicit; an
 * explicit `--admin` or `$CLAWKER_CP_ADMIN_ADDR` means TCP; otherwise `<data dir>/run/admin.sock`,
 * then the system socket.
 */
export function adminSocketChoice(values: FlagValues, env: NodeJS.ProcessEnv): AdminSocketChoice | undefined {
  const flag = optStr(values, "admin-socket") ?? (env["CLAWKER_ADMIN_SOCKET"] || undefined);
  if (flag !== undefined) return { explicit: isAbsolute(flag) ? flag : resolve(flag) };
  // An address the user named, by flag or variable, is where they want the calls to go: a live
  // socket at a default location may belong to another control plane.
  if (optStr(values, "admin") !== undefined || (env["CLAWKER_CP_ADMIN_ADDR"] ?? "") !== "") return undefined;
  return { candidates: [join(defaultDataDir(env), "run", "admin.sock"), SYSTEM_ADMIN_SOCKET] };
}

/** Dials (socket or TCP), and measures the skew (GetSystemTime, no token). */
export async function connectAdmin(o: AdminConnectionOptions): Promise<AdminConnection> {
  const socketPath = o.socket === undefined ? undefined : await pickSocket(o.socket);
  let offsetMs = 0;
  const now = (): number => Date.now() + offsetMs;
  const deadline = o.deadlineMs === undefined ? {} : { deadlineMs: o.deadlineMs };
  const client =
    socketPath === undefined
      ? openAdminClient({
          trust: await loadTrustSet(o.trustDir),
          target: o.admin,
          tokenEndpoint: o.tokenEndpoint,
          now,
          ...deadline,
        })
      : openAdminSocketClient({
          socketPath,
          credentials: await loadTokenCredentials(o.trustDir),
          tokenEndpoint: o.tokenEndpoint,
          now,
          ...deadline,
        });
  try {
    const skew = await client.clockSkew();
    offsetMs = Math.round(skew.skewMs);
    return { client, skew, via: socketPath === undefined ? o.admin : `unix:${socketPath}` };
  } catch (err) {
    await client.close();
    throw err;
  }
}

/** How a command reaches the admin API through withAdmin. */
export interface WithAdminOptions {
  /** Whether the command has `--admin-socket` and so prefers the admin socket (default true). */
  readonly socket?: boolean;
  /** The default of the command's `--timeout` (each call's deadline); absent: no such flag. */
  readonly timeoutDefault?: string;
}

/**
 * Connects as a command's flags say (`--trust-dir`, `--admin`, `--token-endpoint`, and per
 * `options` `--admin-socket` and `--timeout`), refuses a clock skew above SKEW_FAIL_MS, runs
 * `fn` with the client and always closes it.
 */
export async function withAdmin<T>(
  values: FlagValues,
  io: Io,
  fn: (client: AdminClient) => Promise<T>,
  options: WithAdminOptions = {},
): Promise<T> {
  const tokenEndpoint = str(values, "token-endpoint", defaultTokenEndpoint(io.env));
  // The admin socket when there is one, as every admin command with the flag (the group is the gate).
  const socket = options.socket === false ? undefined : adminSocketChoice(values, io.env);
  const { client, skew, via } = await connectAdmin({
    trustDir: str(values, "trust-dir", defaultTrustDir(io.env)),
    admin: parseAddress("admin", str(values, "admin", defaultAdminAddr(io.env))).text,
    tokenEndpoint,
    ...(socket === undefined ? {} : { socket }),
    ...(options.timeoutDefault === undefined
      ? {}
      : { deadlineMs: parseDuration("timeout", str(values, "timeout", options.timeoutDefault)) }),
  });
  if (values["debug"] === true)
    io.stderr.write(`clawker: debug: admin calls via ${via}, tokens from ${tokenEndpoint}\n`);
  try {
    if (skewVerdict(skew.skewMs) === "fail") {
      throw new CliError(
        ExitCode.error,
        `clock skew with the control plane is ${Math.round(skew.skewMs)} ms: fix the clock first`,
      );
    }
    return await fn(client);
  } catch (err) {
    // A socket found at a default location may be another control plane's (one in a container
    // as root binds /run/clawker/admin.sock): its refusal of our token must not look like ours.
    if (
      err instanceof AdminError &&
      isTokenRefusal(err) &&
      socket !== undefined &&
      "candidates" in socket &&
      via.startsWith("unix:")
    ) {
      io.stderr.write(
        `clawker: note: the call went to the admin socket ${via.slice("unix:".length)} (found at a default location), whose control plane refused the token from ${tokenEndpoint}; if it is not the one you meant, pass --admin HOST:PORT or --admin-socket PATH\n`,
      );
    }
    throw err;
  } finally {
    await client.close();
  }
}

/** The socket to dial, or undefined for TCP. A socket we may not connect to is a clear error. */
async function pickSocket(choice: AdminSocketChoice): Promise<string | undefined> {
  if ("explicit" in choice) {
    const path = choice.explicit;
    const found = await probeSocket(path);
    if (found === "denied") throw await permissionDenied(path);
    if (found === "absent") {
      throw new CliError(
        ExitCode.notRunning,
        `nothing answers on the admin socket ${path} (is the control plane running? try: clawker controlplane status)`,
      );
    }
    return path;
  }
  for (const path of choice.candidates) {
    const found = await probeSocket(path);
    if (found === "denied") throw await permissionDenied(path);
    if (found === "ok") return path;
  }
  return undefined;
}

/** Connects once: `ok`, `denied` (the kernel refused us), or `absent` (no socket or nobody listening). */
function probeSocket(path: string): Promise<"ok" | "denied" | "absent"> {
  return new Promise((resolvePromise, reject) => {
    const sock = createConnection({ path });
    sock.once("connect", () => {
      sock.destroy();
      resolvePromise("ok");
    });
    sock.once("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "EACCES" || err.code === "EPERM") resolvePromise("denied");
      else if (err.code === "ENOENT" || err.code === "ECONNREFUSED" || err.code === "ENOTDIR")
        resolvePromise("absent");
      else reject(new CliError(ExitCode.error, `cannot connect to ${path}: ${err.message}`, { cause: err }));
    });
  });
}

/** The error for a socket the kernel does not let us reach, naming the group that would. */
async function permissionDenied(path: string): Promise<CliError> {
  const group = await gatingGroup(path);
  const fix =
    group === undefined
      ? "ask the control plane's administrator for access"
      : `add yourself to group ${group} (sudo usermod -aG ${group} $USER, then log in again)`;
  return new CliError(ExitCode.auth, `permission denied on ${path}: ${fix}`);
}

/** The name of the group whose members may enter the socket's directory (the gate), if any. */
async function gatingGroup(path: string): Promise<string | undefined> {
  let gid: number;
  try {
    const st = await stat(dirname(path));
    // A directory its group cannot enter (0700: the daemon found no group) admits its owner alone.
    if ((st.mode & 0o010) === 0) return undefined;
    gid = st.gid;
  } catch {
    return undefined;
  }
  return await new Promise((resolvePromise) => {
    execFile("getent", ["group", String(gid)], { timeout: 5_000 }, (err, stdout) => {
      const name = stdout.split(":")[0];
      resolvePromise(err === null && name !== undefined && name !== "" ? name : `gid ${gid}`);
    });
  });
}

/** What a measured skew means: fine, worth a warning, or too large to go on. */
export function skewVerdict(skewMs: number): "ok" | "warn" | "fail" {
  const abs = Math.abs(skewMs);
  return abs > SKEW_FAIL_MS ? "fail" : abs > SKEW_WARN_MS ? "warn" : "ok";
}

/** `+1.234s` style rendering of a skew. */
export function formatSkew(skewMs: number): string {
  return `${skewMs >= 0 ? "+" : "-"}${(Math.abs(skewMs) / 1000).toFixed(3)}s`;
}
