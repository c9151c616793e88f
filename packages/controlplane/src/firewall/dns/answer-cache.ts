// The gate's positive cache: upstream addresses by (name, type), kept for their clamped TTL. It
// holds upstream data only; the policy is consulted on every query, so a policy change needs no
// flush. Bounded: the oldest entry goes when a new one would exceed the limit.

/** A cached answer. */
export interface CachedAnswer {
  /** Dotted addresses and the same as 32-bit numbers (for building responses). */
  readonly addresses: readonly string[];
  readonly numeric: readonly number[];
  /** Monotonic deadline (performance.now() milliseconds). */
  readonly expiresAt: number;
}

/** A bounded map from (name, type) to answers with deadlines. */
export class AnswerCache {
  private readonly entries = new Map<string, CachedAnswer>();
  private readonly maxEntries: number;

  constructor(maxEntries: number) {
    this.maxEntries = maxEntries;
  }

  /** The key of a name (lowercase) and type. */
  static key(name: string, qtype: number): string {
    return `${qtype}/${name}`;
  }

  /** The live entry for `key`, or undefined (an expired entry is removed). */
  get(key: string, now: number): CachedAnswer | undefined {
    const entry = this.entries.get(key);
    if (entry === undefined) return undefined;
    if (entry.expiresAt <= now) {
      this.entries.delete(key);
      return undefined;
    }
    return entry;
  }

  /** Stores an answer for `ttlSeconds` from `now` and returns it; evicts the oldest entry when full. */
  set(
    key: string,
    addresses: readonly string[],
    numeric: readonly number[],
    ttlSeconds: number,
    now: number,
  ): CachedAnswer {
    this.entries.delete(key);
    if (this.entries.size >= this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (oldest.done !== true) this.entries.delete(oldest.value);
    }
    const entry = { addresses, numeric, expiresAt: now + ttlSeconds * 1000 };
    this.entries.set(key, entry);
    return entry;
  }

  /** Number of entries (expired ones included until looked up). */
  get size(): number {
    return this.entries.size;
  }

  /** Drops every entry. */
  clear(): void {
    this.entries.clear();
  }
}

/** Seconds left until `expiresAt`, rounded up, at least 1 (a TTL of 0 would mean "do not cache"). */
export function remainingSeconds(expiresAt: number, now: number): number {
  return Math.max(1, Math.ceil((expiresAt - now) / 1000));
}
