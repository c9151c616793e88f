// The output of one command, kept in a bounded buffer so more than one reader can watch it with
// backfill from the first byte (the Telehandler discipline in seeds/001): a watcher that joins
// late gets everything still buffered, then live output. Memory is bounded: once `capacityBytes`
// is exceeded the oldest bytes are dropped, and a watcher that fell behind them is told how many
// bytes it missed. A *blocking* watcher (the Session that started the command) is never skipped:
// when it lags more than `highWaterBytes`, the producer is paused until it catches up, so a fast
// command cannot make clawkerd buffer without bound and the primary reader loses nothing.

/** One item a watcher receives: bytes in order, or how many bytes it missed. */
export type OutputEvent =
  { readonly type: "data"; readonly data: Buffer } | { readonly type: "gap"; readonly missed: number };

/** Bounds of an OutputBuffer. */
export interface OutputBufferOptions {
  /** Bytes kept for backfill; default 1 MiB. */
  readonly capacityBytes?: number;
  /** Unread bytes of a blocking watcher at which the producer is paused; default 256 KiB. */
  readonly highWaterBytes?: number;
  /** Largest data event handed to a watcher; default 64 KiB (the Session's chunk limit). */
  readonly maxChunkBytes?: number;
}

/** Called when the producer should stop (pause) or may continue (resume) writing. */
export interface FlowControl {
  pause(): void;
  resume(): void;
}

/** Options of one watcher. */
export interface WatchOptions {
  /** A blocking watcher pauses the producer instead of missing bytes. Default false. */
  readonly blocking?: boolean;
}

/** Default capacity: 1 MiB per command. */
export const DEFAULT_CAPACITY_BYTES = 1 << 20;
/** Default high-water mark of a blocking watcher. */
export const DEFAULT_HIGH_WATER_BYTES = 256 << 10;
/**
 * Default (and the Session's maximum) data event size: one read of a command's pipe (Node reads
 * 64 KiB at a time), so a read goes out whole. Half the messages of the former 32 KiB on every hop
 * to the CLI (issue 15: CPU per MiB down in clawkerd, the control plane and the reader).
 */
export const DEFAULT_MAX_CHUNK_BYTES = 64 << 10;

/** A bounded, append-only byte log with many watchers. */
export class OutputBuffer {
  readonly #capacity: number;
  readonly #highWater: number;
  readonly #maxChunk: number;
  #chunks: Buffer[] = [];
  #starts: number[] = [];
  #head = 0;
  #start = 0;
  #end = 0;
  #closed = false;
  #paused = false;
  #flow: FlowControl | undefined;
  readonly #waiters = new Set<() => void>();
  readonly #blocking = new Set<Watcher>();

  constructor(options: OutputBufferOptions = {}) {
    this.#capacity = options.capacityBytes ?? DEFAULT_CAPACITY_BYTES;
    this.#highWater = options.highWaterBytes ?? DEFAULT_HIGH_WATER_BYTES;
    this.#maxChunk = options.maxChunkBytes ?? DEFAULT_MAX_CHUNK_BYTES;
    if (!(this.#capacity > 0 && this.#highWater > 0 && this.#maxChunk > 0)) {
      throw new RangeError("OutputBuffer bounds must be positive");
    }
  }

  /** Total bytes ever written. */
  get written(): number {
    return this.#end;
  }

  /** Bytes currently held. */
  get retained(): number {
    return this.#end - this.#start;
  }

  /** True once close() was called: no more bytes will come. */
  get closed(): boolean {
    return this.#closed;
  }

  /** True while the producer is asked to pause. */
  get paused(): boolean {
    return this.#paused;
  }

  /** Installs the producer's pause/resume hooks. */
  setFlowControl(flow: FlowControl): void {
    this.#flow = flow;
    if (this.#paused) flow.pause();
  }

  /** Appends bytes (ignored after close). Returns false when the producer should pause. */
  write(data: Buffer): boolean {
    if (this.#closed || data.length === 0) return !this.#paused;
    this.#chunks.push(data);
    this.#starts.push(this.#end);
    this.#end += data.length;
    this.#trim();
    this.#wake();
    if (!this.#paused && this.#maxLag() > this.#highWater) {
      this.#paused = true;
      this.#flow?.pause();
    }
    return !this.#paused;
  }

  /** Ends the output: watchers finish after what is buffered. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#setResumed();
    this.#wake();
  }

  /**
   * A new watcher: everything still buffered (preceded by a gap event when the start was
   * already dropped), then live output until close(). End it early with `return()`.
   */
  watch(options: WatchOptions = {}): Watcher {
    const w = new Watcher(this, options.blocking === true);
    if (w.blocking) this.#blocking.add(w);
    return w;
  }

  /** @internal The next event for `w`, or undefined when there is none yet / any more. */
  _take(w: Watcher): OutputEvent | undefined {
    if (w.cursor < this.#start) {
      const missed = this.#start - w.cursor;
      w.cursor = this.#start;
      return { type: "gap", missed };
    }
    if (w.cursor >= this.#end) return undefined;
    let i = this.#indexOf(w.cursor);
    const parts: Buffer[] = [];
    let size = 0;
    while (i < this.#chunks.length && size < this.#maxChunk) {
      const chunk = this.#chunks[i]!;
      const from = w.cursor + size - this.#starts[i]!;
      const take = Math.min(chunk.length - from, this.#maxChunk - size);
      parts.push(from === 0 && take === chunk.length ? chunk : chunk.subarray(from, from + take));
      size += take;
      i++;
    }
    w.cursor += size;
    if (w.blocking) this.#afterBlockingRead();
    return { type: "data", data: parts.length === 1 ? parts[0]! : Buffer.concat(parts, size) };
  }

  /** @internal Waits until something new happens. */
  _wait(): Promise<void> {
    return new Promise((resolve) => this.#waiters.add(resolve));
  }

  /** @internal Unregisters a watcher. */
  _detach(w: Watcher): void {
    if (this.#blocking.delete(w)) this.#afterBlockingRead();
    this.#wake();
  }

  #afterBlockingRead(): void {
    this.#trim();
    if (this.#paused && this.#maxLag() <= this.#highWater / 2) this.#setResumed();
  }

  #setResumed(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#flow?.resume();
  }

  #maxLag(): number {
    let lag = 0;
    for (const w of this.#blocking) lag = Math.max(lag, this.#end - w.cursor);
    return lag;
  }

  // Drops whole chunks from the front while over capacity, never past a blocking watcher.
  #trim(): void {
    let floor = this.#end;
    for (const w of this.#blocking) floor = Math.min(floor, w.cursor);
    while (this.#head < this.#chunks.length && this.#end - this.#start > this.#capacity) {
      const chunk = this.#chunks[this.#head]!;
      const chunkEnd = this.#starts[this.#head]! + chunk.length;
      if (chunkEnd > floor) break;
      this.#start = chunkEnd;
      this.#head++;
    }
    if (this.#head > 64 && this.#head * 2 > this.#chunks.length) {
      this.#chunks = this.#chunks.slice(this.#head);
      this.#starts = this.#starts.slice(this.#head);
      this.#head = 0;
    }
  }

  #indexOf(offset: number): number {
    let lo = this.#head;
    let hi = this.#chunks.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.#starts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }

  #wake(): void {
    if (this.#waiters.size === 0) return;
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const w of waiters) w();
  }
}

/** One reader of an OutputBuffer: an async iterator of OutputEvents. */
export class Watcher implements AsyncIterableIterator<OutputEvent> {
  /** @internal Absolute offset of the next byte this watcher reads. */
  cursor = 0;
  #done = false;

  constructor(
    private readonly buffer: OutputBuffer,
    /** Whether this watcher holds the producer back instead of missing bytes. */
    readonly blocking: boolean,
  ) {}

  async next(): Promise<IteratorResult<OutputEvent, undefined>> {
    for (;;) {
      if (this.#done) return { done: true, value: undefined };
      const event = this.buffer._take(this);
      if (event !== undefined) return { done: false, value: event };
      if (this.buffer.closed) {
        this.#finish();
        return { done: true, value: undefined };
      }
      await this.buffer._wait();
    }
  }

  /** True when next() would end: the buffer is closed and this watcher has read all of it. */
  get atEnd(): boolean {
    return this.#done || (this.buffer.closed && this.cursor >= this.buffer.written);
  }

  /** Resolves at the buffer's next write or close. */
  changed(): Promise<void> {
    return this.buffer._wait();
  }

  /** Stops watching (also what `break` in a for-await calls). A pending next() ends. */
  return(): Promise<IteratorResult<OutputEvent, undefined>> {
    this.#finish();
    return Promise.resolve({ done: true, value: undefined });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  #finish(): void {
    if (this.#done) return;
    this.#done = true;
    this.buffer._detach(this);
  }
}
