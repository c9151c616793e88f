// The admin API's listening socket: a Unix socket in a directory only our uid can enter, created
// 0600. The admin API has no authentication (like Hydra's admin port), so the file system is its
// boundary; loopback TCP would be reachable by every local user.
import { chmodSync, lstatSync, statSync, unlinkSync } from "node:fs";
import type { Server } from "node:http";
import { createConnection } from "node:net";
import { dirname } from "node:path";
import { AuthServerError } from "./errors.js";

/** Mode of the socket file: only the owner may connect (connect(2) needs write permission). */
const SOCKET_MODE = 0o600;

/**
 * Binds `server` to the Unix socket `path`. Refuses (AuthServerError `admin_socket_insecure`) when
 * the socket's directory is not ours or group/others may enter it; replaces a stale socket left
 * by an earlier run, but never a live one (`listen_failed`) or a file that is not a socket.
 */
export async function listenOnAdminSocket(server: Server, path: string): Promise<void> {
  checkDirectory(dirname(path));
  await removeStaleSocket(path);
  // Bind under a umask that leaves the socket 0600 from its first moment: a chmod after listen()
  // would leave a window in which the umask's mode applies. The bind itself is synchronous inside
  // listen() (a pipe handle binds before listen() returns), so the umask is restored right after.
  const previous = process.umask(0o177);
  const listening = new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => {
      reject(new AuthServerError("listen_failed", `cannot listen on ${path} (admin)`, { cause: err }));
    };
    server.once("error", onError);
    server.once("listening", () => {
      server.off("error", onError);
      resolve();
    });
  });
  try {
    server.listen({ path, exclusive: true });
  } finally {
    process.umask(previous);
  }
  await listening;
  // Belt and braces: whatever the bind did, the mode is ours before the first request is served.
  chmodSync(path, SOCKET_MODE);
  const mode = lstatSync(path).mode & 0o777;
  if (mode !== SOCKET_MODE) {
    throw new AuthServerError(
      "admin_socket_insecure",
      `admin socket ${path} has mode ${mode.toString(8)} after chmod, want 600`,
    );
  }
}

function checkDirectory(dir: string): void {
  let st;
  try {
    st = statSync(dir);
  } catch (err) {
    throw new AuthServerError("listen_failed", `cannot use the admin socket's directory ${dir}`, {
      cause: err,
    });
  }
  const uid = process.getuid?.();
  const mode = st.mode & 0o777;
  if (!st.isDirectory() || (uid !== undefined && st.uid !== uid) || (mode & 0o077) !== 0) {
    throw new AuthServerError(
      "admin_socket_insecure",
      `the admin socket's directory ${dir} must be a directory owned by uid ${uid ?? "?"} that group and others cannot access (mode 700); it is owned by uid ${st.uid} with mode ${mode.toString(8)}`,
    );
  }
}

/** Unlinks `path` when it is a socket nobody listens on; refuses a live socket or another file. */
async function removeStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
    throw new AuthServerError("listen_failed", `cannot inspect ${path}`, { cause: err });
  }
  if (!st.isSocket()) {
    throw new AuthServerError("listen_failed", `${path} exists and is not a socket; refusing to replace it`);
  }
  if (await answers(path)) {
    throw new AuthServerError("listen_failed", `another server is listening on ${path}`);
  }
  try {
    unlinkSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
      throw new AuthServerError("listen_failed", `cannot remove the stale socket ${path}`, { cause: err });
    }
  }
}

/** True when something accepts connections on the socket (a refused connect means it is stale). */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const sock = createConnection({ path });
    sock.once("connect", () => {
      sock.destroy();
      resolve(true);
    });
    sock.once("error", (err: NodeJS.ErrnoException) => {
      if (err.code === "ECONNREFUSED" || err.code === "ENOENT") resolve(false);
      else reject(new AuthServerError("listen_failed", `cannot probe ${path}`, { cause: err }));
    });
  });
}
