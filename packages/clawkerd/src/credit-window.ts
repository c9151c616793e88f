// The output credit of one flow-controlled shell (our extension, clawkerd.proto CommandFlowControl):
// bytes and OutputChunk messages clawkerd may still send. Each chunk spends its length and one
// message; the control plane's OutputCredit adds to both as its reader takes output. clawkerd never
// overdraws: a chunk larger than the byte credit is split, and with no credit left the sender
// waits, which leaves the command's output unread so its pipes fill and its processes block.

/** Bytes and messages a flow-controlled shell may still send; `wait()` until `add()` brings more. */
export class CreditWindow {
  #bytes: number;
  #chunks: number;
  #closed = false;
  readonly #waiters = new Set<() => void>();

  /** Starts at the shell's windows; `windowChunks` 0 means messages are not limited. */
  constructor(windowBytes: number, windowChunks: number) {
    if (!(Number.isInteger(windowBytes) && windowBytes > 0)) {
      throw new RangeError("the output window must be a positive number of bytes");
    }
    this.#bytes = windowBytes;
    this.#chunks = windowChunks === 0 ? Number.POSITIVE_INFINITY : windowChunks;
  }

  /** Byte credit left. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Message credit left (Infinity when not limited). */
  get chunks(): number {
    return this.#chunks;
  }

  /** True when no chunk may go until add(): no bytes or no messages left. */
  get exhausted(): boolean {
    return this.#bytes <= 0 || this.#chunks < 1;
  }

  /** True once close() was called: waiting is over for good. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Spends credit for (a first part of) a chunk of `length` bytes: returns how many bytes may go
   * now, one message included; 0 when there is no credit (then `wait()`).
   */
  spend(length: number): number {
    if (this.#bytes <= 0 || this.#chunks < 1 || length <= 0) return 0;
    const n = Math.min(length, this.#bytes);
    this.#bytes -= n;
    this.#chunks -= 1;
    return n;
  }

  /** Adds credit (an OutputCredit) and wakes a waiting sender. */
  add(bytes: number, chunks: number): void {
    if (this.#closed) return;
    this.#bytes += bytes;
    this.#chunks += chunks;
    this.#wake();
  }

  /** Resolves at the next add() or close(). */
  wait(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.add(resolve));
  }

  /** Ends every wait (the Session closed). Idempotent. */
  close(): void {
    this.#closed = true;
    this.#wake();
  }

  #wake(): void {
    if (this.#waiters.size === 0) return;
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const w of waiters) w();
  }
}
