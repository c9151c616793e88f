// The call guard's request timeout for every call of a listener on one timer (issue 15): a
// setTimeout per call cost a Timeout object, its async-hook ids and a list insert and removal on
// every authorized call. Every call waits the same time, so the calls waiting are in deadline
// order when kept in arrival order: an intrusive list (no allocation per call) whose head is the
// next to expire, and one timer armed for it.
import { performance } from "node:perf_hooks";

/** A call waiting for its request; the links are the list's, set and cleared by RequestTimers. */
export interface TimedRequest {
  /** When the request is late, in performance.now() milliseconds. */
  deadline: number;
  prevTimed: TimedRequest | undefined;
  nextTimed: TimedRequest | undefined;
  /** True while in the list. */
  timed: boolean;
  /** Its request did not arrive in time (called once, after it was taken off the list). */
  onRequestTimeout(): void;
}

/** The calls of one listener waiting for their request, oldest first, and one timer for the oldest. */
export class RequestTimers {
  readonly #timeoutMs: number;
  readonly #now: () => number;
  #head: TimedRequest | undefined;
  #tail: TimedRequest | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(timeoutMs: number, now: () => number = () => performance.now()) {
    this.#timeoutMs = timeoutMs;
    this.#now = now;
  }

  /** Starts `entry`'s wait: it times out `timeoutMs` from now unless removed first. */
  add(entry: TimedRequest): void {
    entry.deadline = this.#now() + this.#timeoutMs;
    entry.prevTimed = this.#tail;
    entry.nextTimed = undefined;
    entry.timed = true;
    if (this.#tail === undefined) this.#head = entry;
    else this.#tail.nextTimed = entry;
    this.#tail = entry;
    if (this.#timer === undefined) this.#arm(entry.deadline);
  }

  /** Ends `entry`'s wait (its request arrived, or the call ended); a no-op when it is not waiting. */
  remove(entry: TimedRequest): void {
    if (!entry.timed) return;
    entry.timed = false;
    const { prevTimed, nextTimed } = entry;
    if (prevTimed === undefined) this.#head = nextTimed;
    else prevTimed.nextTimed = nextTimed;
    if (nextTimed === undefined) this.#tail = prevTimed;
    else nextTimed.prevTimed = prevTimed;
    entry.prevTimed = undefined;
    entry.nextTimed = undefined;
    // The timer is left armed: when it fires it re-arms for the head then (one wake-up per
    // timeout under load, instead of a timer operation per call).
  }

  #arm(deadline: number): void {
    // Unref'd: a waiting call's own socket keeps the process up; the timer alone must not.
    this.#timer = setTimeout(() => this.#sweep(), Math.max(0, deadline - this.#now())).unref();
  }

  #sweep(): void {
    this.#timer = undefined;
    const now = this.#now();
    try {
      for (let head = this.#head; head !== undefined && head.deadline <= now; head = this.#head) {
        this.remove(head);
        head.onRequestTimeout();
      }
    } finally {
      // Re-armed even if a timeout threw, so the calls behind it are still timed.
      if (this.#head !== undefined && this.#timer === undefined) this.#arm(this.#head.deadline);
    }
  }
}
