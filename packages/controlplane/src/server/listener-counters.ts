// What the listeners refused or dropped, counted by listener and reason. Counting is unconditional
// (the log lines about it are rate-limited), so this one object is what later metrics read.

/** One counter: how many times `listener` refused or dropped something for `reason`. */
export interface CounterRow {
  readonly listener: string;
  readonly reason: string;
  readonly count: number;
}

/** Monotonic counts by listener and reason; cheap enough to bump on every refusal. */
export class ListenerCounters {
  readonly #counts = new Map<string, Map<string, number>>();

  /** Adds `n` (default 1) to listener/reason. */
  add(listener: string, reason: string, n = 1): void {
    let byReason = this.#counts.get(listener);
    if (byReason === undefined) {
      byReason = new Map();
      this.#counts.set(listener, byReason);
    }
    byReason.set(reason, (byReason.get(reason) ?? 0) + n);
  }

  /** The count for listener/reason; 0 when nothing was counted. */
  count(listener: string, reason: string): number {
    return this.#counts.get(listener)?.get(reason) ?? 0;
  }

  /** Every counter, sorted by listener then reason. */
  rows(): CounterRow[] {
    const out: CounterRow[] = [];
    for (const [listener, byReason] of this.#counts)
      for (const [reason, count] of byReason) out.push({ listener, reason, count });
    return out.sort((a, b) => a.listener.localeCompare(b.listener) || a.reason.localeCompare(b.reason));
  }
}
