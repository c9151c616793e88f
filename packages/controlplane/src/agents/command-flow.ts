// Per-command flow control on a clawkerd Session, control-plane side (our extension to
// clawkerd.proto: CommandFlowControl, OutputCredit, StdinCredit). Output: clawkerd may send a
// command at most the window's bytes and messages beyond what this side has credited back, and
// this side credits only what the command's reader has taken, so a slow reader holds back its own
// command and nothing else. Stdin: this side keeps a command's unacknowledged stdin within the
// window clawkerd offered, so a fast writer waits instead of filling clawkerd's memory.

/** A per-command output window: bytes and OutputChunk messages. */
export interface OutputWindow {
  readonly bytes: number;
  readonly chunks: number;
}

/** Default output window: 1 MiB or 256 messages, whichever runs out first. */
export const DEFAULT_OUTPUT_WINDOW: OutputWindow = Object.freeze({ bytes: 1 << 20, chunks: 256 });

/** A credit to send back (OutputCredit). */
export interface Grant {
  readonly bytes: number;
  readonly chunks: number;
}

/**
 * Output credit of one command: what clawkerd may still send (as far as this side granted it) and
 * what the reader has taken since the last grant. Grants are batched to a quarter of the window,
 * which leaves clawkerd at least three quarters while the credit travels.
 */
export class OutputFlow {
  readonly window: OutputWindow;
  #creditBytes: number;
  #creditChunks: number;
  #takenBytes = 0;
  #takenChunks = 0;

  constructor(window: OutputWindow) {
    if (!(Number.isInteger(window.bytes) && window.bytes > 0 && Number.isInteger(window.chunks))) {
      throw new RangeError("an output window needs a positive byte count and an integer message count");
    }
    if (window.chunks < 1) throw new RangeError("an output window needs at least one message");
    this.window = window;
    this.#creditBytes = window.bytes;
    this.#creditChunks = window.chunks;
  }

  /** An OutputChunk of `bytes` arrived. False: clawkerd sent more than its credit (a protocol violation). */
  received(bytes: number): boolean {
    this.#creditBytes -= bytes;
    this.#creditChunks -= 1;
    return this.#creditBytes >= 0 && this.#creditChunks >= 0;
  }

  /** The reader took (or dropped) an OutputChunk of `bytes`; returns a credit to send, if one is due. */
  taken(bytes: number): Grant | undefined {
    this.#takenBytes += bytes;
    this.#takenChunks += 1;
    if (this.#takenBytes * 4 < this.window.bytes && this.#takenChunks * 4 < this.window.chunks)
      return undefined;
    const grant = { bytes: this.#takenBytes, chunks: this.#takenChunks };
    this.#creditBytes += grant.bytes;
    this.#creditChunks += grant.chunks;
    this.#takenBytes = 0;
    this.#takenChunks = 0;
    return grant;
  }
}

/**
 * The stdin window of one command: bytes sent and not yet acknowledged by StdinCredit stay within
 * what clawkerd offered. `room()` says how much may go now; `wait()` until a credit or the end.
 */
export class StdinFlow {
  readonly window: number;
  #inFlight = 0;
  #ended = false;
  readonly #waiters = new Set<() => void>();

  constructor(window: number) {
    if (!(Number.isInteger(window) && window > 0)) throw new RangeError("a stdin window must be positive");
    this.window = window;
  }

  /** Bytes sent and not yet credited. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** True once the command ended or its session closed: nothing more will be sent. */
  get ended(): boolean {
    return this.#ended;
  }

  /** Bytes that may be sent now. */
  room(): number {
    return Math.max(0, this.window - this.#inFlight);
  }

  /** Records bytes just sent (initial_stdin included, which may exceed the window). */
  sent(bytes: number): void {
    this.#inFlight += bytes;
  }

  /** A StdinCredit: clawkerd handed these bytes on. */
  credited(bytes: number): void {
    this.#inFlight = Math.max(0, this.#inFlight - bytes);
    this.#wake();
  }

  /** Resolves at the next credit or end. */
  wait(): Promise<void> {
    if (this.#ended) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.add(resolve));
  }

  /** The command ended or the session closed: wakes every writer for good. Idempotent. */
  end(): void {
    this.#ended = true;
    this.#wake();
  }

  #wake(): void {
    if (this.#waiters.size === 0) return;
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const w of waiters) w();
  }
}
