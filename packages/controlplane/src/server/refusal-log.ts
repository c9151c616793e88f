// Refusals (a bad token, a stranger's certificate, a connection over a cap) are counted always and
// logged with a per-reason rate limit: a flood of junk costs a few lines per window plus one summary
// line with the suppressed count, not one line per request (issue 10 §2: 135,000 junk tokens wrote
// 33 MB in 40 s).
import type { Logger } from "../logging.js";
import { ListenerCounters } from "./listener-counters.js";

/** Settings of a RefusalLog. */
export interface RefusalLogOptions {
  readonly log: Logger;
  /** Where counts go; one object per daemon, shared by every listener. */
  readonly counters?: ListenerCounters;
  /** Lines logged per listener and reason in one window; more are only counted. */
  readonly linesPerWindow?: number;
  /** Length of a window; its suppressed counts are summarised when it ends. */
  readonly windowMs?: number;
}

/** Defaults: 5 lines per listener/reason per 10 s, so ~1 KB per reason per window at most. */
export const REFUSAL_LOG_DEFAULTS = { linesPerWindow: 5, windowMs: 10_000 } as const;

/** Extra fields of a refusal line; `event` names it (`auth_refused`, `connection_refused`, ...). */
export interface RefusalFields {
  readonly event: string;
  readonly [field: string]: unknown;
}

interface WindowState {
  logged: number;
  suppressed: number;
}

/** Counts every refusal and logs the first few per listener/reason in each window. */
export class RefusalLog {
  /** The counts, for metrics and tests. */
  readonly counters: ListenerCounters;
  readonly #log: Logger;
  readonly #linesPerWindow: number;
  readonly #windowMs: number;
  /** Keyed `listener reason`; cleared when the window ends. */
  readonly #window = new Map<string, WindowState>();
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(options: RefusalLogOptions) {
    this.#log = options.log;
    this.counters = options.counters ?? new ListenerCounters();
    this.#linesPerWindow = options.linesPerWindow ?? REFUSAL_LOG_DEFAULTS.linesPerWindow;
    this.#windowMs = options.windowMs ?? REFUSAL_LOG_DEFAULTS.windowMs;
  }

  /**
   * Records one refusal: always counted; logged at `level` unless this listener/reason already
   * logged its share of the current window.
   */
  refused(
    listener: string,
    reason: string,
    fields: RefusalFields,
    message: string,
    level: "info" | "warn" | "debug" = "info",
  ): void {
    this.counters.add(listener, reason);
    const key = `${listener} ${reason}`;
    let state = this.#window.get(key);
    if (state === undefined) {
      state = { logged: 0, suppressed: 0 };
      this.#window.set(key, state);
      this.#startWindow();
    }
    if (state.logged < this.#linesPerWindow) {
      state.logged++;
      this.#log[level]({ ...fields, listener, reason }, message);
    } else {
      state.suppressed++;
    }
  }

  /** Writes the summaries of the current window and stops its timer. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#endWindow();
  }

  #startWindow(): void {
    if (this.#timer !== undefined || this.#closed) return;
    this.#timer = setTimeout(() => this.#endWindow(), this.#windowMs);
    // A quiet daemon must still be able to exit; close() writes what is pending.
    this.#timer.unref();
  }

  #endWindow(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const [key, state] of this.#window) {
      if (state.suppressed === 0) continue;
      const [listener = "", reason = ""] = key.split(" ", 2);
      this.#log.warn(
        {
          event: "refusals_suppressed",
          listener,
          reason,
          suppressed: state.suppressed,
          total: this.counters.count(listener, reason),
          windowMs: this.#windowMs,
        },
        "refusals suppressed",
      );
    }
    this.#window.clear();
  }
}
