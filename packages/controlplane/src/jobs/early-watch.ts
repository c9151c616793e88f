// The first watch of a job this control plane just started, opened to clawkerd as the job starts
// (issue 13's first byte): a client that starts a job and then watches it finds the output already
// on its way instead of waiting for its own call to reach clawkerd and the first data to come
// back. The first WatchJobOutput of that job name takes it; it holds what arrived until then (at
// most `maxBytes`) and follows live from there, as a fresh call would from clawkerd's log. Unclaimed
// after `ttlMs`, past `maxBytes`, or failed, it is cancelled and a watcher opens its own call.
import type * as grpc from "@grpc/grpc-js";
import type { jobs } from "@clawker/proto";

/** Bounds of the early watches. */
export interface EarlyWatchOptions {
  /** How long an unclaimed early watch is kept; default 2000 ms. */
  readonly ttlMs?: number;
  /** Output held for a watcher that has not come yet; more cancels it; default 64 KiB. */
  readonly maxBytes?: number;
}

/** A claimed early watch: its stream (events not yet attached) and what it received so far. */
export interface ClaimedWatch {
  readonly stream: grpc.ClientReadableStream<jobs.WatchJobOutputResponse>;
  readonly received: readonly jobs.WatchJobOutputResponse[];
  /** True when clawkerd already ended the stream (the job ended and all was received). */
  readonly hasEnded: boolean;
}

interface Entry {
  readonly stream: grpc.ClientReadableStream<jobs.WatchJobOutputResponse>;
  readonly received: jobs.WatchJobOutputResponse[];
  bytes: number;
  hasEnded: boolean;
  readonly timer: NodeJS.Timeout;
}

/** The early watches, by job name. */
export class EarlyWatches {
  readonly #ttlMs: number;
  readonly #maxBytes: number;
  readonly #entries = new Map<string, Entry>();

  constructor(options: EarlyWatchOptions = {}) {
    this.#ttlMs = options.ttlMs ?? 2000;
    this.#maxBytes = options.maxBytes ?? 64 << 10;
  }

  /** Unclaimed early watches (tests). */
  get size(): number {
    return this.#entries.size;
  }

  /** Opens job `name`'s early watch on `client` (clawkerd's JobService); once per name. */
  open(name: string, client: jobs.JobServiceClient): void {
    if (this.#entries.has(name)) return;
    const stream = client.watchJobOutput({ name });
    const entry: Entry = {
      stream,
      received: [],
      bytes: 0,
      hasEnded: false,
      timer: setTimeout(() => this.#drop(name, entry), this.#ttlMs),
    };
    entry.timer.unref();
    this.#entries.set(name, entry);
    stream.on("data", (m: jobs.WatchJobOutputResponse) => {
      entry.received.push(m);
      entry.bytes += m.data.length;
      if (entry.bytes > this.#maxBytes) this.#drop(name, entry);
    });
    stream.on("end", () => (entry.hasEnded = true));
    // A failed early watch is only dropped: the watcher's own call reports what is wrong.
    stream.on("error", () => this.#drop(name, entry));
  }

  /** Hands job `name`'s early watch to its first watcher, or undefined (none, or gone). */
  claim(name: string): ClaimedWatch | undefined {
    const entry = this.#entries.get(name);
    if (entry === undefined) return undefined;
    this.#entries.delete(name);
    clearTimeout(entry.timer);
    // The claimant attaches its own listeners in this same tick: no event falls between.
    entry.stream.removeAllListeners("data");
    entry.stream.removeAllListeners("end");
    entry.stream.removeAllListeners("error");
    return { stream: entry.stream, received: entry.received, hasEnded: entry.hasEnded };
  }

  /** Cancels every unclaimed early watch. Idempotent. */
  close(): void {
    for (const [name, entry] of this.#entries) this.#drop(name, entry);
  }

  #drop(name: string, entry: Entry): void {
    if (this.#entries.get(name) !== entry) return;
    this.#entries.delete(name);
    clearTimeout(entry.timer);
    entry.stream.removeAllListeners("data");
    // A cancel is reported as an error on the stream: keep one listener so it is not thrown.
    entry.stream.removeAllListeners("error");
    entry.stream.on("error", () => undefined);
    if (!entry.hasEnded) entry.stream.cancel();
  }
}
