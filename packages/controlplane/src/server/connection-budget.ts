// A cap on one kind of live connection (a listener's TLS handshakes, its authenticated peers, the
// /healthz sockets). Over the cap, strangers' connections make room by evicting the oldest one (an
// idle flood then cannot lock out a newcomer such as the CLI), while connections that passed the
// role check are never evicted: a newcomer over their cap is refused instead.
import type { Socket } from "node:net";

/** What happens to a connection over the cap. */
export type Overflow = "evict_oldest" | "refuse_new";

/** Settings of a ConnectionBudget. */
export interface ConnectionBudgetOptions {
  /** Most connections held at once. */
  readonly limit: number;
  readonly overflow: Overflow;
  /** Most connections per key (e.g. per agent certificate); unlimited when absent. */
  readonly perKeyLimit?: number;
  /** Connections busy with a request are not evicted (default: none is busy). */
  readonly isBusy?: (socket: Socket) => boolean;
}

/** The outcome of `admit`. */
export type Admission =
  | { readonly admitted: true; readonly evicted: Socket | undefined }
  | { readonly admitted: false; readonly why: "cap" | "peer_cap" };

/** Live connections of one kind, oldest first, with their per-key counts. */
export class ConnectionBudget {
  readonly limit: number;
  readonly #overflow: Overflow;
  readonly #perKeyLimit: number;
  readonly #isBusy: (socket: Socket) => boolean;
  /** Insertion order is age order: the first entry is the oldest connection. */
  readonly #sockets = new Map<Socket, string | undefined>();
  readonly #perKey = new Map<string, number>();

  constructor(options: ConnectionBudgetOptions) {
    this.limit = options.limit;
    this.#overflow = options.overflow;
    this.#perKeyLimit = options.perKeyLimit ?? Infinity;
    this.#isBusy = options.isBusy ?? (() => false);
  }

  /** Connections held now. */
  get size(): number {
    return this.#sockets.size;
  }

  /**
   * Takes `socket` into the budget (released again on its 'close' or by `release`), evicting the
   * oldest idle connection when full and the policy allows; otherwise says why it was refused.
   * The caller destroys a refused socket; an evicted one is destroyed here.
   */
  admit(socket: Socket, key?: string): Admission {
    if (key !== undefined && (this.#perKey.get(key) ?? 0) >= this.#perKeyLimit)
      return { admitted: false, why: "peer_cap" };
    let evicted: Socket | undefined;
    if (this.#sockets.size >= this.limit) {
      if (this.#overflow === "refuse_new") return { admitted: false, why: "cap" };
      evicted = this.#oldestIdle();
      if (evicted === undefined) return { admitted: false, why: "cap" };
      this.release(evicted);
      evicted.destroy();
    }
    this.#sockets.set(socket, key);
    if (key !== undefined) this.#perKey.set(key, (this.#perKey.get(key) ?? 0) + 1);
    socket.once("close", () => this.release(socket));
    return { admitted: true, evicted };
  }

  /** Removes `socket` from the budget (no-op when it is not in it). */
  release(socket: Socket): void {
    if (!this.#sockets.has(socket)) return;
    const key = this.#sockets.get(socket);
    this.#sockets.delete(socket);
    if (key === undefined) return;
    const n = (this.#perKey.get(key) ?? 1) - 1;
    if (n <= 0) this.#perKey.delete(key);
    else this.#perKey.set(key, n);
  }

  /** Destroys every connection in the budget. */
  destroyAll(): void {
    for (const socket of [...this.#sockets.keys()]) {
      this.release(socket);
      socket.destroy();
    }
  }

  /**
   * Resolves true once every connection held now has closed, or false after `timeoutMs` with some
   * still open.
   */
  async whenClosed(timeoutMs: number): Promise<boolean> {
    const open = [...this.#sockets.keys()].filter((socket) => !socket.closed);
    if (open.length === 0) return true;
    let timer: NodeJS.Timeout | undefined;
    const closed = await Promise.race([
      Promise.all(open.map((socket) => new Promise((resolve) => socket.once("close", resolve)))).then(
        () => true,
      ),
      new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
    ]);
    clearTimeout(timer);
    return closed;
  }

  #oldestIdle(): Socket | undefined {
    for (const socket of this.#sockets.keys()) if (!this.#isBusy(socket)) return socket;
    return undefined;
  }
}
