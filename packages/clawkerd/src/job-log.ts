// A job's output on disk (issue 13): an append-only byte log in segment files under the job's own
// directory, bounded by `capacityBytes`. Past the bound the oldest whole segment is deleted and
// its bytes count as dropped, so a watcher that joins late gets everything still kept (preceded by
// how many bytes it missed), then follows live output. Watchers read the files, not a queue of
// ours: a watcher that never reads costs the job and the other watchers nothing (no memory held,
// no pause). Reads and writes are synchronous page-cache I/O of at most one chunk.
import {
  closeSync,
  mkdirSync,
  openSync,
  readdirSync,
  readSync,
  statSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { join } from "node:path";

/** Bounds of a job's output log. */
export interface JobLogOptions {
  /** Output bytes kept; default 8 MiB. */
  readonly capacityBytes?: number;
  /** Size at which a segment is closed and a new one begun; default a quarter of the capacity. */
  readonly segmentBytes?: number;
  /** Largest data event handed to a watcher; default 64 KiB. */
  readonly maxChunkBytes?: number;
}

/** One item a watcher receives: bytes in order, after `dropped` bytes it missed (usually 0). */
export interface LogEvent {
  readonly data: Buffer;
  readonly dropped: number;
}

/** Default bound of a job's kept output. */
export const DEFAULT_LOG_CAPACITY_BYTES = 8 << 20;

const SEGMENT_PREFIX = "output.";

interface Segment {
  readonly start: number;
  readonly path: string;
  readonly fd: number;
  size: number;
}

/** A bounded, append-only output log with any number of watchers. */
export class JobLog {
  readonly #dir: string;
  readonly #capacity: number;
  readonly #segmentBytes: number;
  readonly #maxChunk: number;
  #segments: Segment[] = [];
  #start = 0;
  #end = 0;
  #closed = false;
  readonly #waiters = new Set<() => void>();

  /** Opens (creating, 0700) the job's directory; `existing` reopens what a previous run wrote. */
  constructor(dir: string, options: JobLogOptions = {}, existing = false) {
    this.#dir = dir;
    this.#capacity = options.capacityBytes ?? DEFAULT_LOG_CAPACITY_BYTES;
    this.#segmentBytes = options.segmentBytes ?? Math.max(1, Math.floor(this.#capacity / 4));
    this.#maxChunk = options.maxChunkBytes ?? 64 << 10;
    if (!(this.#capacity > 0 && this.#segmentBytes > 0 && this.#maxChunk > 0)) {
      throw new RangeError("JobLog bounds must be positive");
    }
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (!existing) return;
    const names = readdirSync(dir).filter((n) => n.startsWith(SEGMENT_PREFIX));
    const found = names
      .map((n) => ({ start: Number.parseInt(n.slice(SEGMENT_PREFIX.length), 16), path: join(dir, n) }))
      .filter((s) => Number.isSafeInteger(s.start))
      .sort((a, b) => a.start - b.start);
    for (const s of found) {
      this.#segments.push({ ...s, fd: openSync(s.path, "r"), size: statSync(s.path).size });
    }
    const first = this.#segments[0];
    const last = this.#segments[this.#segments.length - 1];
    this.#start = first?.start ?? 0;
    this.#end = last === undefined ? 0 : last.start + last.size;
    this.#closed = true;
  }

  /** Total bytes ever written. */
  get written(): number {
    return this.#end;
  }

  /** Oldest bytes dropped to stay within the bound. */
  get dropped(): number {
    return this.#start;
  }

  /** True once close() was called: no more bytes will come. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Appends bytes (ignored after close). Throws on a write error (disk full): the caller decides. */
  write(data: Buffer): void {
    if (this.#closed || data.length === 0) return;
    let seg = this.#segments[this.#segments.length - 1];
    if (seg === undefined || seg.size >= this.#segmentBytes) seg = this.#newSegment();
    let off = 0;
    while (off < data.length) off += writeSync(seg.fd, data, off, data.length - off, seg.size + off);
    seg.size += data.length;
    this.#end += data.length;
    this.#trim();
    this.#wake();
  }

  /** Ends the output: watchers finish after what is kept. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#wake();
  }

  /** Closes the files (after close(); watchers then end). Idempotent. */
  release(): void {
    this.close();
    for (const s of this.#segments) closeQuietly(s.fd);
    this.#segments = [];
    this.#start = this.#end;
    this.#wake();
  }

  /** A watcher from the oldest byte still kept. */
  watch(): LogWatcher {
    return new LogWatcher(this, this.#start);
  }

  /** @internal The next event at `cursor` (and the new cursor), or undefined when none yet. */
  _read(cursor: number): { event: LogEvent; cursor: number } | undefined {
    let dropped = 0;
    if (cursor < this.#start) {
      dropped = this.#start - cursor;
      cursor = this.#start;
    }
    if (cursor >= this.#end) {
      return dropped === 0 ? undefined : { event: { data: Buffer.alloc(0), dropped }, cursor };
    }
    const seg = this.#segmentAt(cursor);
    const from = cursor - seg.start;
    const size = Math.min(seg.size - from, this.#maxChunk);
    const data = Buffer.allocUnsafe(size);
    let got = 0;
    while (got < size) {
      const n = readSync(seg.fd, data, got, size - got, from + got);
      if (n === 0) break;
      got += n;
    }
    return { event: { data: got === size ? data : data.subarray(0, got), dropped }, cursor: cursor + got };
  }

  /** @internal Resolves at the next write or close. */
  _wait(): Promise<void> {
    return new Promise((resolve) => this.#waiters.add(resolve));
  }

  #newSegment(): Segment {
    const path = join(this.#dir, SEGMENT_PREFIX + this.#end.toString(16).padStart(16, "0"));
    const seg: Segment = { start: this.#end, path, fd: openSync(path, "wx+", 0o600), size: 0 };
    this.#segments.push(seg);
    return seg;
  }

  // Drops whole segments from the front while over capacity, never the one being written.
  #trim(): void {
    while (this.#segments.length > 1 && this.#end - this.#start > this.#capacity) {
      const old = this.#segments.shift()!;
      closeQuietly(old.fd);
      try {
        unlinkSync(old.path);
      } catch {
        // already gone: the bytes are dropped either way
      }
      this.#start = this.#segments[0]!.start;
    }
  }

  #segmentAt(offset: number): Segment {
    let lo = 0;
    let hi = this.#segments.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.#segments[mid]!.start <= offset) lo = mid;
      else hi = mid - 1;
    }
    return this.#segments[lo]!;
  }

  #wake(): void {
    if (this.#waiters.size === 0) return;
    const waiters = [...this.#waiters];
    this.#waiters.clear();
    for (const w of waiters) w();
  }
}

/** One reader of a JobLog: an async iterator of LogEvents. */
export class LogWatcher implements AsyncIterableIterator<LogEvent> {
  #done = false;

  constructor(
    private readonly log: JobLog,
    /** Absolute offset of the next byte this watcher reads. */
    public cursor: number,
  ) {}

  /** Bytes written that this watcher has not read yet. */
  get lag(): number {
    return this.log.written - this.cursor;
  }

  async next(): Promise<IteratorResult<LogEvent, undefined>> {
    for (;;) {
      if (this.#done) return { done: true, value: undefined };
      const r = this.log._read(this.cursor);
      if (r !== undefined) {
        this.cursor = r.cursor;
        return { done: false, value: r.event };
      }
      if (this.log.closed) {
        this.#done = true;
        return { done: true, value: undefined };
      }
      await this.log._wait();
    }
  }

  /** Resolves at the log's next write or close. */
  changed(): Promise<void> {
    return this.log._wait();
  }

  /** Stops watching. */
  return(): Promise<IteratorResult<LogEvent, undefined>> {
    this.#done = true;
    return Promise.resolve({ done: true, value: undefined });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}
