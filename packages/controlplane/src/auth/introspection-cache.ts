// A short positive cache in front of an Introspector (HOST-NOTES: introspecting every call costs
// ~65% of throughput). Keyed by the token's SHA-256, never the token; an entry lives at most
// `maxTtlMs` and never past the token's `exp`; only active results are stored; concurrent
// lookups of one token share one request (singleflight); bounded, least recently used evicted.
import { hash } from "node:crypto";
import { unlessAborted } from "../abortable.js";
import type { IntrospectOptions, IntrospectionResult, Introspector } from "./introspector.js";

/** Settings of the cache. */
export interface IntrospectionCacheOptions {
  /** Upper bound of an entry's life, milliseconds (default 5000). */
  readonly maxTtlMs?: number;
  /** Maximum entries before the least recently used is evicted (default 10000). */
  readonly maxEntries?: number;
  /** Clock in milliseconds; tests inject one. */
  readonly now?: () => number;
}

/** Counters for tests and benchmarks. */
export interface IntrospectionCacheStats {
  hits: number;
  misses: number;
  /** Requests actually sent to the inner introspector. */
  requests: number;
  evictions: number;
}

interface Entry {
  readonly result: IntrospectionResult;
  readonly expiresAt: number;
}

/** Default cap on how long one positive result is reused. */
export const DEFAULT_CACHE_TTL_MS = 5000;
/** Default bound on the number of cached tokens. */
export const DEFAULT_CACHE_MAX_ENTRIES = 10_000;

/** An Introspector that caches positive answers of another one. */
export class CachingIntrospector implements Introspector {
  readonly #inner: Introspector;
  readonly #maxTtlMs: number;
  readonly #maxEntries: number;
  readonly #now: () => number;
  readonly #entries = new Map<string, Entry>();
  readonly #flights = new Map<string, Promise<IntrospectionResult>>();
  /** The entry inserted last (the end of the recency order), or undefined. */
  #newest: Entry | undefined;
  /** Live counters (read-only to callers by convention). */
  readonly stats: IntrospectionCacheStats = { hits: 0, misses: 0, requests: 0, evictions: 0 };

  constructor(inner: Introspector, options: IntrospectionCacheOptions = {}) {
    this.#inner = inner;
    this.#maxTtlMs = options.maxTtlMs ?? DEFAULT_CACHE_TTL_MS;
    this.#maxEntries = options.maxEntries ?? DEFAULT_CACHE_MAX_ENTRIES;
    this.#now = options.now ?? Date.now;
    if (!(this.#maxTtlMs >= 0) || !(this.#maxEntries >= 1))
      throw new RangeError("invalid introspection cache bounds");
  }

  /** Number of cached entries (expired ones included until touched). */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * A cached answer when one is fresh (`exp` re-checked against the clock on every hit; the
   * caller re-checks scope against the cached scope list), else the inner answer.
   */
  async introspect(token: string, options: IntrospectOptions = {}): Promise<IntrospectionResult> {
    const key = tokenKey(token);
    const hit = this.#fresh(key);
    if (hit !== undefined) return hit;
    this.stats.misses++;
    const flightKey = flightKeyOf(key, options.scope);
    let flight = this.#flights.get(flightKey);
    if (flight === undefined) {
      flight = this.#fetch(key, token, options.scope);
      this.#flights.set(flightKey, flight);
      const clear = (): void => {
        this.#flights.delete(flightKey);
      };
      flight.then(clear, clear);
    }
    return options.signal === undefined ? flight : unlessAborted(flight, options.signal);
  }

  /** True when a request for `token` (without a scope, as the interceptor asks) is under way. */
  inFlight(token: string): boolean {
    return this.#flights.has(flightKeyOf(tokenKey(token), undefined));
  }

  /** The cached answer for `token` when fresh (counted as a hit), else undefined; never does I/O. */
  peek(token: string): IntrospectionResult | undefined {
    return this.#fresh(tokenKey(token));
  }

  #fresh(key: string): IntrospectionResult | undefined {
    const hit = this.#entries.get(key);
    if (hit === undefined) return undefined;
    const now = this.#now();
    if (hit.expiresAt > now && (hit.result.exp === undefined || hit.result.exp * 1000 > now)) {
      // Refresh recency: Map iteration order is insertion order, so re-insert at the end; unless
      // it is the newest already (a client's calls on its one token): a delete and set per call
      // left a hole per call in the Map's table, rebuilt as garbage every few thousand calls.
      if (this.#newest !== hit) {
        this.#entries.delete(key);
        this.#entries.set(key, hit);
        this.#newest = hit;
      }
      this.stats.hits++;
      return hit.result;
    }
    this.#entries.delete(key);
    if (this.#newest === hit) this.#newest = undefined;
    return undefined;
  }

  /** Drops every entry (e.g. after the auth server restarted). */
  clear(): void {
    this.#entries.clear();
    this.#newest = undefined;
  }

  async #fetch(key: string, token: string, scope: string | undefined): Promise<IntrospectionResult> {
    this.stats.requests++;
    // The shared request is not tied to any one caller's signal; the inner hard timeout bounds it.
    const result = await this.#inner.introspect(token, scope === undefined ? {} : { scope });
    this.#store(key, result);
    return result;
  }

  #store(key: string, result: IntrospectionResult): void {
    if (!result.active || result.exp === undefined) return;
    const now = this.#now();
    const expiresAt = Math.min(now + this.#maxTtlMs, result.exp * 1000);
    if (expiresAt <= now) return;
    this.#entries.delete(key);
    while (this.#entries.size >= this.#maxEntries) {
      const oldest = this.#entries.keys().next();
      if (oldest.done === true) break;
      this.#entries.delete(oldest.value);
      this.stats.evictions++;
    }
    const entry = { result, expiresAt };
    this.#entries.set(key, entry);
    this.#newest = entry;
  }
}

/** The cache key of a token: its SHA-256, base64url. The raw token is never stored or logged. */
export function tokenKey(token: string): string {
  // One-shot hash: no Hash object per call (about half the cost of createHash on this path).
  return hash("sha256", token, "base64url");
}

/** One request per (token, scope): a server that checks scope answers differently per scope. */
function flightKeyOf(key: string, scope: string | undefined): string {
  return `${key}\n${scope ?? ""}`;
}
