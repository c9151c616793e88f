// The idle timeout of a listener's served connections: one with no call open for `idleMs` is
// closed (GOAWAY once it has an HTTP/2 session, else the socket), and so is one that never sends
// the HTTP/2 preface or a call. grpc-js's own (`grpc.max_connection_idle_ms`) put a second 'close'
// listener on every stream (its once-wrapper, the listener array, a copy of it on emit: ~1 µs and
// ~400 B per call, issue 15); the call guard sees every call begin and end, so it counts them here
// instead, and each connection has one timer that no call touches.
import type { Socket } from "node:net";
import { performance } from "node:perf_hooks";

/** The socket property a tracked connection's state hangs on (the call guard finds it from a call). */
const IDLE: unique symbol = Symbol("clawker idle connection");

/** What an HTTP/2 session offers here: its socket (a proxy to ours) and a graceful close. */
interface SessionLike {
  readonly socket?: unknown;
  close(): void;
}

/** The state `track` hung on a session's socket; undefined for an untracked or unbound session. */
function trackedOf(session: SessionLike): IdleConnection | undefined {
  try {
    // Once per connection: the session's socket is a proxy that reads through to our socket (and
    // throws once the session has let go of it).
    return (session.socket as { [IDLE]?: IdleConnection } | undefined)?.[IDLE];
  } catch {
    return undefined;
  }
}

/** One served connection: its open calls and since when it has had none. */
export interface IdleConnection {
  /** Calls begun and not yet ended. */
  open: number;
  /** When `open` last dropped to 0 (or the connection was served), performance.now() ms. */
  idleSince: number;
  readonly socket: Socket;
  /** Its HTTP/2 session, once a call named it. */
  session: SessionLike | undefined;
  timer: NodeJS.Timeout | undefined;
  /** Its session was told to close (GOAWAY); the socket goes at the next expiry if still open. */
  closing: boolean;
}

/** The served connections of one listener and their idle timers. */
export class IdleConnections {
  readonly #idleMs: number;
  readonly #now: () => number;
  readonly #bySession = new WeakMap<object, IdleConnection>();

  constructor(idleMs: number, now: () => number = () => performance.now()) {
    this.#idleMs = idleMs;
    this.#now = now;
  }

  /** Starts the idle clock of a connection about to be served (before grpc-js gets the socket). */
  track(socket: Socket): void {
    const conn: IdleConnection = {
      open: 0,
      idleSince: this.#now(),
      socket,
      session: undefined,
      timer: undefined,
      closing: false,
    };
    Object.defineProperty(socket, IDLE, { value: conn });
    this.#arm(conn, this.#idleMs);
    socket.once("close", () => clearTimeout(conn.timer));
  }

  /**
   * A call began on `session` (grpc-js's HTTP/2 session of the call's stream); the connection to
   * `end` it on, or undefined when the session is not one of this listener's tracked connections.
   */
  begin(session: unknown): IdleConnection | undefined {
    if (typeof session !== "object" || session === null) return undefined;
    let conn = this.#bySession.get(session);
    if (conn === undefined) {
      conn = trackedOf(session as SessionLike);
      if (conn === undefined) return undefined;
      conn.session = session as SessionLike;
      this.#bySession.set(session, conn);
    }
    conn.open++;
    return conn;
  }

  /** A call `begin` counted has ended (once per call). */
  end(conn: IdleConnection): void {
    if (--conn.open === 0) conn.idleSince = this.#now();
  }

  #arm(conn: IdleConnection, ms: number): void {
    // Unref'd: the connection's socket keeps the process up, never its idle timer.
    conn.timer = setTimeout(() => this.#expire(conn), ms).unref();
  }

  /** The timer fired: close the connection if it has been idle long enough, else look again then. */
  #expire(conn: IdleConnection): void {
    conn.timer = undefined;
    if (conn.socket.destroyed) return;
    if (conn.closing) {
      conn.socket.destroy();
      return;
    }
    if (conn.open > 0) {
      // Busy now: it cannot be idle long enough before a full timeout from now.
      this.#arm(conn, this.#idleMs);
      return;
    }
    const left = conn.idleSince + this.#idleMs - this.#now();
    if (left > 0) {
      this.#arm(conn, left);
      return;
    }
    if (conn.session === undefined) {
      // No call ever named its session (no preface, or no call): nothing to say goodbye to.
      conn.socket.destroy();
      return;
    }
    // GOAWAY: the peer opens no new call here and reconnects for its next one. A peer that does
    // not let the session finish closing loses the socket one more timeout later.
    conn.closing = true;
    conn.session.close();
    this.#arm(conn, this.#idleMs);
  }
}
