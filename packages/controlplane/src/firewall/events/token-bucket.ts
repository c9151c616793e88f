// A token bucket on a caller-supplied monotonic clock: the event hub's per-source rate limit.
// No timers: tokens are refilled from the elapsed time at each take.

/** Allows `ratePerSecond` takes per second on average, `burst` at once. */
export class TokenBucket {
  readonly #rate: number;
  readonly #burst: number;
  #tokens: number;
  #at: number;

  constructor(ratePerSecond: number, burst: number, nowMs: number) {
    if (!(ratePerSecond >= 0) || !(burst >= 1))
      throw new RangeError(`rate must be >= 0 and burst >= 1, got ${ratePerSecond}/${burst}`);
    this.#rate = ratePerSecond;
    this.#burst = burst;
    this.#tokens = burst;
    this.#at = nowMs;
  }

  /** Takes one token if there is one at `nowMs`; false when the bucket is empty. */
  take(nowMs: number): boolean {
    if (nowMs > this.#at) {
      this.#tokens = Math.min(this.#burst, this.#tokens + ((nowMs - this.#at) / 1000) * this.#rate);
      this.#at = nowMs;
    }
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}
