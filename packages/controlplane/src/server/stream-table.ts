// The tables of a served HTTP/2 session's streams, in place of the Map and the Set Node keeps.
//
// Node's http2 core keeps a session's open streams in a Map keyed by stream id and the streams
// being set up in a Set: a stream is added to the Set and moved to the Map as it opens, and deleted
// from the Map when it is destroyed. V8 rebuilds a Map's or a Set's hash table as entries come and
// go, and leaves each replaced table pointing at its successor, still holding what it held (so
// that live iterators can follow). Once one of those tables sits in the old generation, the chain
// from it keeps every later table, and what they held, alive through each scavenge: under many
// concurrent streams the object graphs of finished calls are copied and promoted, and only a full
// collection frees them. On a bare node:http2 server with 64 streams in flight on one session,
// 22-30 % of what the server allocated survived each scavenge; with both tables replaced, 1.3 %
// in 5 runs of 5; with only the Map replaced, runs flipped between 1.5 % and 24 % (README, "What
// an authorized call costs beyond a bare grpc-js call").
//
// Both replacements keep the operations Node's core calls on them, in storage that is cleared as
// entries leave and never linked to its replacement. Open streams live in an open-addressing hash
// table: stream ids in an Int32Array, streams in a plain array beside it, linear probing and
// backward-shift deletion (no tombstones); faster than a Map here too, its hash one multiply by
// a random odd number drawn at start-up (a peer picks its stream ids, so it must not be able to
// pick ids that all land in one probe run).
// Streams being set up live in a short array (a server session holds at most one, for the few
// statements between a stream's construction and its id being assigned).

import { getRandomValues } from "node:crypto";

/** An odd 32-bit multiplier, random per process (Fibonacci-style hashing of stream ids). */
const HASH_MULTIPLIER = (getRandomValues(new Uint32Array(1))[0]! | 1) >>> 0;

/** A session's open streams by id, with the Map operations node:http2 uses on its own table. */
export class StreamTable<V> {
  static readonly #INITIAL_CAPACITY = 16;
  #ids = new Int32Array(StreamTable.#INITIAL_CAPACITY);
  #streams: Array<V | undefined> = new Array<V | undefined>(StreamTable.#INITIAL_CAPACITY).fill(undefined);
  #mask = StreamTable.#INITIAL_CAPACITY - 1;
  readonly #multiplier: number;
  /** 32 - log2(capacity): the hash is the multiply's top bits. */
  #shift = 32 - Math.log2(StreamTable.#INITIAL_CAPACITY);
  #size = 0;

  /** `multiplier` (odd) replaces the process's random one: tests replay a run with it. */
  constructor(options: { readonly multiplier?: number } = {}) {
    this.#multiplier = options.multiplier ?? HASH_MULTIPLIER;
    if (!Number.isInteger(this.#multiplier) || this.#multiplier % 2 === 0)
      throw new RangeError("the hash multiplier must be an odd integer");
  }

  /** Open streams. */
  get size(): number {
    return this.#size;
  }

  /** The stream with `id`, or undefined. */
  get(id: number): V | undefined {
    const at = this.#find(id);
    return at < 0 ? undefined : this.#streams[at];
  }

  /** Whether a stream with `id` is open. */
  has(id: number): boolean {
    return this.#find(id) >= 0;
  }

  /** Records `stream` under `id` (a positive 32-bit stream id, as HTTP/2 numbers them). */
  set(id: number, stream: V): this {
    if (!Number.isInteger(id) || id <= 0 || id > 0x7fffffff)
      throw new RangeError(`not an HTTP/2 stream id: ${id}`);
    const ids = this.#ids;
    let at = this.#home(id);
    while (ids[at] !== 0 && ids[at] !== id) at = (at + 1) & this.#mask;
    if (ids[at] === 0) {
      ids[at] = id;
      this.#size++;
    }
    this.#streams[at] = stream;
    if (this.#size * 2 > ids.length) this.#resize(ids.length * 2);
    return this;
  }

  /** Forgets `id`; false when it was not there. */
  delete(id: number): boolean {
    let hole = this.#find(id);
    if (hole < 0) return false;
    const ids = this.#ids;
    const streams = this.#streams;
    const mask = this.#mask;
    ids[hole] = 0;
    streams[hole] = undefined;
    this.#size--;
    // Backward shift: pull later entries of the probe run into the hole when their home slot
    // does not lie (cyclically) between the hole and where they sit.
    for (let at = (hole + 1) & mask; ids[at] !== 0; at = (at + 1) & mask) {
      const home = this.#home(ids[at]!);
      const stays = hole <= at ? hole < home && home <= at : hole < home || home <= at;
      if (stays) continue;
      ids[hole] = ids[at]!;
      streams[hole] = streams[at];
      ids[at] = 0;
      streams[at] = undefined;
      hole = at;
    }
    return true;
  }

  /** Calls `fn` for each open stream in id order; a stream deleted before its turn is skipped. */
  forEach(fn: (stream: V, id: number, table: this) => void): void {
    const open: Array<[number, V]> = [];
    for (let at = 0; at < this.#ids.length; at++)
      if (this.#ids[at] !== 0) open.push([this.#ids[at]!, this.#streams[at]!]);
    open.sort((a, b) => a[0] - b[0]);
    for (const [id, stream] of open) if (this.get(id) === stream) fn(stream, id, this);
  }

  /** The slot `id` hashes to. */
  #home(id: number): number {
    return Math.imul(id, this.#multiplier) >>> this.#shift;
  }

  /** The slot holding `id`, or -1. */
  #find(id: number): number {
    if (!(id > 0 && id <= 0x7fffffff)) return -1;
    const ids = this.#ids;
    for (let at = this.#home(id); ids[at] !== 0; at = (at + 1) & this.#mask) if (ids[at] === id) return at;
    return -1;
  }

  /**
   * Moves every entry into fresh storage of `capacity` slots (a power of two). Only ever grows: a
   * session's peak is bounded by its stream limit (SETTINGS_MAX_CONCURRENT_STREAMS), and one that
   * drops to no stream between bursts would otherwise shrink and grow again every burst.
   */
  #resize(capacity: number): void {
    const ids = this.#ids;
    const streams = this.#streams;
    this.#ids = new Int32Array(capacity);
    this.#streams = new Array<V | undefined>(capacity).fill(undefined);
    this.#mask = capacity - 1;
    this.#shift = 32 - Math.log2(capacity);
    for (let at = 0; at < ids.length; at++) {
      const id = ids[at]!;
      if (id === 0) continue;
      let to = this.#home(id);
      while (this.#ids[to] !== 0) to = (to + 1) & this.#mask;
      this.#ids[to] = id;
      this.#streams[to] = streams[at];
    }
  }
}

/** Streams not yet given an id, with the Set operations node:http2 uses on its own. */
export class PendingStreams<V> {
  readonly #streams: V[] = [];

  /** Streams waiting. */
  get size(): number {
    return this.#streams.length;
  }

  /** Whether `stream` is waiting. */
  has(stream: V): boolean {
    return this.#streams.includes(stream);
  }

  /** Adds `stream` (once). */
  add(stream: V): this {
    if (!this.#streams.includes(stream)) this.#streams.push(stream);
    return this;
  }

  /** Removes `stream`; false when it was not there. */
  delete(stream: V): boolean {
    const at = this.#streams.indexOf(stream);
    if (at < 0) return false;
    this.#streams.splice(at, 1);
    return true;
  }

  /** Calls `fn` for each waiting stream in the order added; one removed before its turn is skipped. */
  forEach(fn: (stream: V, same: V, set: this) => void): void {
    for (const stream of [...this.#streams]) if (this.#streams.includes(stream)) fn(stream, stream, this);
  }
}

/** Node's symbols by description, once found: the same for every socket and session. */
const symbolKeys = new Map<string, symbol>();

/**
 * The value under the own symbol property of `obj` described as `description`, if any. The key
 * found is remembered, so a connection's lookup among the server's sessions costs a property read
 * per session, not a scan of each one's symbols.
 */
function bySymbol(obj: unknown, description: string): unknown {
  if (typeof obj !== "object" || obj === null) return undefined;
  const known = symbolKeys.get(description);
  if (known !== undefined && Object.hasOwn(obj, known)) return (obj as Record<symbol, unknown>)[known];
  const key = Object.getOwnPropertySymbols(obj).find((s) => s.description === description);
  if (key === undefined) return undefined;
  symbolKeys.set(description, key);
  return (obj as Record<symbol, unknown>)[key];
}

/** Whether `table` has the Map or Set operations named and holds nothing. */
function emptyTable(table: unknown, ops: readonly string[]): boolean {
  if (typeof table !== "object" || table === null) return false;
  const t = table as Record<string, unknown>;
  return t["size"] === 0 && ops.every((op) => typeof t[op] === "function");
}

/**
 * Puts a StreamTable and a PendingStreams in place of the stream Map and Set of the HTTP/2 server
 * session node:http2 just created for `socket` (found through the socket's server and that
 * server's sessions), before any stream opened. Returns false, changing nothing, when this Node
 * does not have the shape expected.
 */
export function installStreamTables(socket: object): boolean {
  // Node's own SafeSet and SafeMap: not instances of this realm's Set and Map, hence the duck typing.
  const sessions = bySymbol(bySymbol(socket, "server"), "sessions") as Iterable<unknown> | undefined;
  if (typeof sessions?.[Symbol.iterator] !== "function") return false;
  for (const session of sessions) {
    if (bySymbol(session, "socket") !== socket) continue;
    const state = bySymbol(session, "state") as { streams?: unknown; pendingStreams?: unknown } | undefined;
    if (
      typeof state !== "object" ||
      !emptyTable(state.streams, ["get", "set", "delete", "forEach"]) ||
      !emptyTable(state.pendingStreams, ["add", "delete", "forEach"])
    )
      return false;
    state.streams = new StreamTable();
    state.pendingStreams = new PendingStreams();
    return true;
  }
  return false;
}
