// AdminService's Unix socket: only our uid and one group can connect. The kernel's permission
// check is the boundary (no TLS on it): the directory is ours and the group's, mode 0750 (members
// may enter, not create or unlink), the socket 0660. Tokens and scopes still decide every call; the
// group only gates who can connect. A group that does not exist fails closed: directory 0700,
// socket 0600, our uid alone.
import { execFile } from "node:child_process";
import { chmodSync, chownSync, lstatSync, mkdirSync, unlinkSync, type Stats } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { dirname } from "node:path";
import { AdminSocketError, removeStaleSocket } from "../auth/admin-sockets.js";
import type { Logger } from "../logging.js";

/** Mode of the socket's directory when a group may connect: the group enters, nobody else. */
export const GROUP_DIR_MODE = 0o750;
/** Mode of the socket when a group may connect (connect(2) needs write permission on it). */
export const GROUP_SOCKET_MODE = 0o660;
/** Modes when the group does not exist (or cannot be given the socket): our uid alone. */
export const PRIVATE_DIR_MODE = 0o700;
/** See PRIVATE_DIR_MODE. */
export const PRIVATE_SOCKET_MODE = 0o600;

/** Why the group socket could not be served. */
export type GroupSocketReason = "directory_insecure" | "path_taken" | "bind_failed";

/** The socket's directory is unsafe, its path is taken, or binding failed; start-up stops. */
export class GroupSocketError extends Error {
  override readonly name = "GroupSocketError";
  constructor(
    readonly reason: GroupSocketReason,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/** Options of a GroupSocket. */
export interface GroupSocketOptions {
  /** The socket's path; its directory is created or checked. */
  readonly path: string;
  /** A group name (looked up) or a gid (a container that knows only the number). */
  readonly group: string | number;
  readonly log: Logger;
  /** Every accepted connection (the admin GrpcListener's `serveLocal`). */
  readonly onConnection: (socket: Socket) => void;
  /** Resolves a group name to its gid, undefined when there is none; default `getent group`. */
  readonly lookupGroup?: (name: string) => Promise<number | undefined>;
}

/** What the socket was bound with (the log line and tests read it). */
export interface GroupSocketState {
  readonly path: string;
  /** The gid that may connect, or undefined when only our uid can (fail closed). */
  readonly gid: number | undefined;
  readonly socketMode: number;
}

/**
 * The gid of group `name` through NSS (`getent group`, so LDAP/sssd groups count, which a read of
 * /etc/group would miss); undefined when it does not exist. Other failures throw.
 */
export function getentGroup(name: string): Promise<number | undefined> {
  return new Promise((resolve, reject) => {
    execFile("getent", ["group", name], { timeout: 5_000 }, (err, stdout) => {
      // getent exits 2 when the key is not found; an image without getent knows no groups either.
      if (err !== null && (err.code === 2 || err.code === "ENOENT")) return resolve(undefined);
      if (err !== null) return reject(new Error(`getent group ${name} failed`, { cause: err }));
      const gid = Number(stdout.split(":")[2]);
      if (!Number.isInteger(gid)) return reject(new Error(`getent group ${name}: unexpected answer`));
      resolve(gid);
    });
  });
}

/** A Unix socket only our uid and one group can connect to; `start` binds, `close` unlinks. */
export class GroupSocket {
  readonly #opts: GroupSocketOptions;
  #server: Server | undefined;
  #bound: Stats | undefined;
  #state: GroupSocketState | undefined;

  constructor(opts: GroupSocketOptions) {
    this.#opts = opts;
  }

  /** What the socket was bound with (after start). */
  get state(): GroupSocketState | undefined {
    return this.#state;
  }

  /**
   * Resolves the group, creates or checks the directory, replaces a stale socket (never a live
   * one), binds with no moment of wider permissions, and serves. Rejects with GroupSocketError.
   */
  async start(signal?: AbortSignal): Promise<GroupSocketState> {
    const { path, group, log } = this.#opts;
    const wanted = typeof group === "number" ? group : await (this.#opts.lookupGroup ?? getentGroup)(group);
    if (wanted === undefined) {
      log.warn(
        { event: "admin_socket_group_missing", group, path },
        "admin socket group not found: the socket is for this uid only (0600)",
      );
    }
    const gid = this.#prepareDirectory(dirname(path), wanted);
    try {
      await removeStaleSocket(path);
    } catch (err) {
      if (err instanceof AdminSocketError)
        throw new GroupSocketError("path_taken", `admin socket ${path}: ${err.message}`, { cause: err });
      throw new GroupSocketError("bind_failed", `admin socket ${path}: cannot inspect it`, { cause: err });
    }
    const server = createServer({ pauseOnConnect: false });
    server.on("connection", (socket: Socket) => this.#opts.onConnection(socket));
    await this.#bind(server, path);
    this.#server = server;
    this.#bound = lstatSync(path);
    // The socket is 0600 from its first moment; the group gets it only now, so there is no moment
    // in which it is wider than meant. Not a member (no CAP_CHOWN): it stays ours alone.
    let socketGid = gid;
    if (socketGid !== undefined) {
      try {
        chownSync(path, -1, socketGid);
        chmodSync(path, GROUP_SOCKET_MODE);
      } catch (err) {
        log.warn(
          { event: "admin_socket_group_missing", group, gid: socketGid, path, err },
          "cannot give the admin socket to its group: the socket is for this uid only (0600)",
        );
        socketGid = undefined;
      }
    }
    const socketMode = socketGid === undefined ? PRIVATE_SOCKET_MODE : GROUP_SOCKET_MODE;
    const st = lstatSync(path);
    if ((st.mode & 0o777) !== socketMode || (socketGid !== undefined && st.gid !== socketGid)) {
      await this.close();
      throw new GroupSocketError(
        "bind_failed",
        `admin socket ${path} has mode ${(st.mode & 0o777).toString(8)} gid ${st.gid} after binding, want ${socketMode.toString(8)}`,
      );
    }
    this.#state = { path, gid: socketGid, socketMode };
    signal?.addEventListener("abort", () => void this.close(), { once: true });
    log.info(
      { event: "admin_socket_serving", path, group, gid: socketGid ?? null, mode: socketMode.toString(8) },
      "serving",
    );
    return this.#state;
  }

  /** Stops accepting and unlinks the socket if it is still the one we bound. Idempotent. */
  close(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    if (server === undefined) return Promise.resolve();
    // Stops accepting now. Not awaited: its callback waits for every connection, and those were
    // handed to the gRPC listener, which closes them in its own graceful way.
    server.close();
    // libuv unlinks the path as it closes the handle; if not, unlink it, if it is still ours.
    try {
      const st = lstatSync(this.#opts.path);
      if (this.#bound !== undefined && st.ino === this.#bound.ino && st.dev === this.#bound.dev)
        unlinkSync(this.#opts.path);
    } catch {
      // Gone already: what close is for.
    }
    return Promise.resolve();
  }

  /**
   * Creates the directory (0750 ours:group, or 0700 without a group) or checks the one there:
   * ours, no write for the group, nothing for others, and the group's. Never changes a directory
   * it did not create. Returns the gid the socket may be given, or undefined (fail closed).
   */
  #prepareDirectory(dir: string, gid: number | undefined): number | undefined {
    const uid = process.getuid?.() ?? 0;
    let st: Stats | undefined;
    try {
      st = lstatSync(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT")
        throw new GroupSocketError("directory_insecure", `cannot inspect ${dir}`, { cause: err });
    }
    if (st === undefined) return this.#createDirectory(dir, gid);
    const mode = st.mode & 0o777;
    // Whose group it is matters only when its group may enter it.
    const groupOk = gid === undefined || st.gid === gid || (mode & 0o070) === 0;
    if (!st.isDirectory() || st.uid !== uid || (mode & 0o027) !== 0 || !groupOk) {
      const want =
        gid === undefined
          ? `owned by uid ${uid}, mode 700 or 750`
          : `owned by uid ${uid} and gid ${gid} (${String(this.#opts.group)}), mode 750`;
      throw new GroupSocketError(
        "directory_insecure",
        `admin socket directory ${dir} must be a directory ${want} (the group may enter, not write; others nothing); it is ${st.isDirectory() ? "a directory" : "not a directory"} owned by uid ${st.uid} gid ${st.gid} with mode ${mode.toString(8)}. Fix or remove it: the control plane does not change a directory it did not create`,
      );
    }
    if (gid !== undefined && (mode & 0o010) === 0) {
      // Made while the group was missing (or by hand 0700): the socket stays ours alone until an
      // administrator gives the directory to the group (or removes it; /run is cleared at boot).
      this.#opts.log.warn(
        { event: "admin_socket_group_missing", group: this.#opts.group, gid, dir, mode: mode.toString(8) },
        "admin socket directory is private (0700): the socket is for this uid only (0600)",
      );
      return undefined;
    }
    return gid;
  }

  #createDirectory(dir: string, gid: number | undefined): number | undefined {
    try {
      // Ancestors are only a way through; the directory itself is the gate.
      mkdirSync(dirname(dir), { recursive: true, mode: 0o755 });
      mkdirSync(dir, { mode: PRIVATE_DIR_MODE });
    } catch (err) {
      throw new GroupSocketError("bind_failed", `cannot create the admin socket directory ${dir}`, {
        cause: err,
      });
    }
    if (gid === undefined) return undefined;
    try {
      // Made 0700 first, widened to the group only once it is the group's.
      chownSync(dir, -1, gid);
      chmodSync(dir, GROUP_DIR_MODE);
      return gid;
    } catch (err) {
      this.#opts.log.warn(
        { event: "admin_socket_group_missing", group: this.#opts.group, gid, dir, err },
        "cannot give the admin socket directory to its group: the socket is for this uid only (0600)",
      );
      return undefined;
    }
  }

  async #bind(server: Server, path: string): Promise<void> {
    // Bind under a umask that leaves the socket 0600 from its first moment (the pattern of the
    // authserver's admin.sock): the bind is synchronous inside listen(), so the umask is restored
    // right after.
    const previous = process.umask(0o177);
    const listening = new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void =>
        reject(new GroupSocketError("bind_failed", `cannot listen on ${path}`, { cause: err }));
      server.once("error", onError);
      server.once("listening", () => {
        server.off("error", onError);
        server.on("error", (err) =>
          this.#opts.log.error({ err, event: "admin_socket_error", path }, "admin socket error"),
        );
        resolve();
      });
    });
    try {
      server.listen({ path, exclusive: true });
    } finally {
      process.umask(previous);
    }
    await listening;
  }
}
