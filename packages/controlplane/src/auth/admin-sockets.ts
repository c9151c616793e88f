// Where the auth helpers' admin APIs listen: Unix sockets in 0700 state directories. Those APIs
// (client registration, introspection) have no authentication, and loopback TCP is reachable by
// every local user; a socket in a directory only our uid can enter is reachable by us alone.
import { lstatSync, statSync, unlinkSync } from "node:fs";
import { createConnection } from "node:net";

/** The embedded authserver's admin socket, in `<dataDir>/authserver/`. */
export const EMBEDDED_ADMIN_SOCKET = "admin.sock";
/** Hydra's admin socket in Ory mode, in `<dataDir>/ory/`. */
export const HYDRA_ADMIN_SOCKET = "hydra-admin.sock";
/** Kratos' admin socket in Ory mode, in `<dataDir>/ory/`. */
export const KRATOS_ADMIN_SOCKET = "kratos-admin.sock";
/** Mode of the Ory sockets (configx `serve.*.socket.mode`): only the owner may connect. */
export const ADMIN_SOCKET_MODE = 0o600;

/** A state directory or socket path that is unsafe or unusable for an admin socket. */
export class AdminSocketError extends Error {
  override readonly name = "AdminSocketError";
  constructor(
    readonly reason: "directory_not_private" | "path_taken",
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/**
 * Throws unless `dir` is a directory owned by our uid that group and others cannot enter (0700):
 * the socket's only protection is the path to it.
 */
export function assertPrivateDirectory(dir: string): void {
  const st = statSync(dir);
  const uid = process.getuid?.();
  const mode = st.mode & 0o777;
  if (!st.isDirectory() || (uid !== undefined && st.uid !== uid) || (mode & 0o077) !== 0) {
    throw new AdminSocketError(
      "directory_not_private",
      `${dir} holds an auth admin socket and must be a directory owned by uid ${uid ?? "?"} with mode 700; it is owned by uid ${st.uid} with mode ${mode.toString(8)}`,
    );
  }
}

/**
 * Unlinks `path` when it is a socket nobody accepts on (left by a helper that was killed: Go's
 * listener removes its socket only on a clean close, and a bind on an existing file fails).
 * A live socket or a file that is not a socket is an AdminSocketError and stays as it is.
 */
export async function removeStaleSocket(path: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw err;
  }
  if (!isSocket) throw new AdminSocketError("path_taken", `${path} exists and is not a socket`);
  if (await accepts(path)) throw new AdminSocketError("path_taken", `something is listening on ${path}`);
  try {
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
}

function accepts(path: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const sock = createConnection({ path });
    sock.once("connect", () => {
      sock.destroy();
      resolve(true);
    });
    sock.once("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "ECONNREFUSED" || err.code === "ENOENT") resolve(false);
      else reject(err);
    });
  });
}
