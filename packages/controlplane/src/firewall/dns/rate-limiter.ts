// Per-client token buckets: each source address may send `queriesPerSecond` on average and
// `burst` at once. Bounded: when more clients than `maxClients` are tracked, the oldest bucket
// goes (a forgotten client starts again with a full bucket). Agents cannot forge source
// addresses (no NET_RAW), so churning the table takes more addresses than an agent has.

interface Bucket {
  tokens: number;
  /** performance.now() of the last refill. */
  at: number;
}

/** The token buckets of every client, keyed by source address. */
export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly maxClients: number;

  constructor(maxClients: number) {
    this.maxClients = maxClients;
  }

  /** Takes one token from `client`'s bucket; false when it is empty (the query is refused). */
  take(client: string, now: number, queriesPerSecond: number, burst: number): boolean {
    let bucket = this.buckets.get(client);
    if (bucket === undefined) {
      if (this.buckets.size >= this.maxClients) {
        const oldest = this.buckets.keys().next();
        if (oldest.done !== true) this.buckets.delete(oldest.value);
      }
      bucket = { tokens: burst, at: now };
      this.buckets.set(client, bucket);
    } else {
      bucket.tokens = Math.min(burst, bucket.tokens + ((now - bucket.at) / 1000) * queriesPerSecond);
      bucket.at = now;
    }
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  /** Number of clients tracked. */
  get size(): number {
    return this.buckets.size;
  }
}
