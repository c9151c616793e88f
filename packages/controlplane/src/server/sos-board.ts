// The one pending recoverable start-up failure (an "SOS") that `WatchSOS` streams to the CLI, e.g.
// "bpffs is not delegated to this container". At most one is pending; clearing it or reaching
// ready ends every watcher's stream cleanly.

/** What kind of recoverable failure is pending (mirrors the wire enum's meaningful values). */
export type SosKind = "bpffs_delegation";

/** A pending recoverable failure. */
export interface Sos {
  readonly message: string;
  readonly kind: SosKind;
}

/** Holds at most one pending SOS and lets any number of watchers follow it. */
export class SosBoard {
  #pending: Sos | undefined;
  #finished = false;
  readonly #waiters = new Set<() => void>();

  /** Raises (or replaces) the pending SOS. Ignored once ready. */
  raise(sos: Sos): void {
    if (this.#finished) return;
    this.#pending = sos;
    this.#wake();
  }

  /** Clears the pending SOS; watchers that saw it end their streams. */
  clear(): void {
    this.#pending = undefined;
    this.#wake();
  }

  /** The control plane is ready: nothing more will be reported, every stream ends. Terminal. */
  finish(): void {
    this.#finished = true;
    this.#pending = undefined;
    this.#wake();
  }

  /** The pending SOS, if any. */
  get pending(): Sos | undefined {
    return this.#pending;
  }

  /**
   * Yields the pending SOS at most once, then returns when it is cleared, when the board
   * finishes, or when `signal` aborts. With nothing pending it waits for one, or for the finish.
   */
  async *watch(signal: AbortSignal): AsyncGenerator<Sos, void, undefined> {
    let sent: Sos | undefined;
    while (!signal.aborted) {
      if (this.#finished) return;
      const current = this.#pending;
      if (sent !== undefined && current !== sent) return;
      if (sent === undefined && current !== undefined) {
        sent = current;
        yield current;
        continue;
      }
      await this.#changed(signal);
    }
  }

  #changed(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.#waiters.delete(done);
        signal.removeEventListener("abort", done);
        resolve();
      };
      this.#waiters.add(done);
      signal.addEventListener("abort", done, { once: true });
    });
  }

  #wake(): void {
    for (const waiter of [...this.#waiters]) waiter();
  }
}
