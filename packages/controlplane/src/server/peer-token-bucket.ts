// A token bucket per peer (a connection's "address:port"): `rate` per second, up to `burst` saved.
// The AuthInterceptor spends one on every token it has to introspect (a cache miss), so a
// connection sending junk tokens is refused before the introspection request once it has used its
// share, while a client re-using its token (cache hits) never spends any.

/** Settings of a PeerTokenBucket. */
export interface PeerTokenBucketOptions {
  /** Tokens added per second to each peer's bucket. */
  readonly rate: number;
  /** Most tokens a bucket holds (and a new peer starts with). */
  readonly burst: number;
  /** Peers remembered before full buckets (idle or gone peers) are forgotten. */
  readonly maxPeers?: number;
  /** Clock in milliseconds. */
  readonly now?: () => number;
}

interface Bucket {
  tokens: number;
  at: number;
}

/** Per-peer token buckets, bounded in memory. */
export class PeerTokenBucket {
  readonly #rate: number;
  readonly #burst: number;
  readonly #maxPeers: number;
  readonly #now: () => number;
  readonly #buckets = new Map<string, Bucket>();

  constructor(options: PeerTokenBucketOptions) {
    this.#rate = options.rate;
    this.#burst = options.burst;
    this.#maxPeers = options.maxPeers ?? 4096;
    this.#now = options.now ?? Date.now;
  }

  /** Peers remembered now. */
  get size(): number {
    return this.#buckets.size;
  }

  /** Takes one token from `peer`'s bucket; false when it is empty. */
  take(peer: string): boolean {
    const now = this.#now();
    let bucket = this.#buckets.get(peer);
    if (bucket === undefined) {
      if (this.#buckets.size >= this.#maxPeers) this.#forgetFull(now);
      bucket = { tokens: this.#burst, at: now };
      this.#buckets.set(peer, bucket);
    } else {
      bucket.tokens = Math.min(this.#burst, bucket.tokens + ((now - bucket.at) / 1000) * this.#rate);
      bucket.at = now;
    }
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  /** Drops buckets that have refilled: forgetting them changes nothing for their peers. */
  #forgetFull(now: number): void {
    for (const [peer, bucket] of this.#buckets)
      if (bucket.tokens + ((now - bucket.at) / 1000) * this.#rate >= this.#burst) this.#buckets.delete(peer);
    // Still full of busy peers (more than maxPeers connections spending): forget the oldest half.
    if (this.#buckets.size >= this.#maxPeers) {
      let drop = Math.ceil(this.#buckets.size / 2);
      for (const peer of this.#buckets.keys()) {
        if (drop-- <= 0) break;
        this.#buckets.delete(peer);
      }
    }
  }
}
