// The live worldview: subscribes to topics and folds every event through `reduce`. It never
// asks Docker (or anything else) anything; what it knows is what was published.
import { OverseerError } from "./errors.js";
import type { OverseerEvent } from "./events.js";
import type { Handler, SubscribeOptions, Subscription, SubscriptionStats } from "./topic.js";
import {
  DEFAULT_REDUCER_OPTIONS,
  type ReducerOptions,
  type Worldview,
  emptyWorldview,
  reduce,
} from "./worldview.js";

/** Anything events can be subscribed on; every `Topic<T>` for T within OverseerEvent fits. */
export interface Subscribable<T> {
  readonly name: string;
  subscribe(handler: Handler<T>, options?: SubscribeOptions): Subscription;
}

/** Default queue capacity of the projection's subscriptions: large, since a drop makes it stale. */
export const PROJECTION_CAPACITY = 65_536;

/** Options for a WorldviewProjection. */
export interface WorldviewProjectionOptions {
  /** The topics to follow, e.g. `overseer.topics()`. */
  readonly sources: readonly Subscribable<OverseerEvent>[];
  /** Queue capacity per source subscription (65,536 when omitted). */
  readonly capacity?: number;
  readonly reducer?: ReducerOptions;
}

/** The projection's own counters. */
export interface ProjectionStats {
  /** Events that changed the worldview. */
  readonly applied: number;
  /** Events the projection's subscriptions dropped: when > 0 the worldview may be stale. */
  readonly dropped: number;
  readonly subscriptions: readonly SubscriptionStats[];
}

/** A worldview kept up to date from topics; `snapshot()` is an immutable, JSON-serialisable copy. */
export class WorldviewProjection {
  readonly #options: WorldviewProjectionOptions;
  readonly #reducer: ReducerOptions;
  readonly #stop = new AbortController();
  #state: Worldview = emptyWorldview();
  #subscriptions: Subscription[] = [];
  #isStarted = false;
  #closing: Promise<void> | undefined;

  constructor(options: WorldviewProjectionOptions) {
    this.#options = options;
    this.#reducer = options.reducer ?? DEFAULT_REDUCER_OPTIONS;
  }

  /**
   * Subscribes to every source; the projection follows them until `signal` aborts or `close()`.
   * May be called once.
   */
  start(signal: AbortSignal): void {
    if (this.#isStarted) throw new OverseerError("already_started", "worldview projection already started");
    this.#isStarted = true;
    if (signal.aborted) {
      void this.close();
      return;
    }
    signal.addEventListener("abort", () => void this.close(), { once: true, signal: this.#stop.signal });
    const apply = (event: OverseerEvent): void => {
      this.#state = reduce(this.#state, event, this.#reducer);
    };
    this.#subscriptions = this.#options.sources.map((source) =>
      source.subscribe(apply, {
        signal: this.#stop.signal,
        name: `worldview:${source.name}`,
        capacity: this.#options.capacity ?? PROJECTION_CAPACITY,
      }),
    );
  }

  /** The current worldview. Frozen all the way down, so it is safe to hand out as is. */
  snapshot(): Worldview {
    return this.#state;
  }

  /** Applied and dropped counts, and each subscription's counters. */
  stats(): ProjectionStats {
    const subscriptions = this.#subscriptions.map((s) => s.stats());
    return Object.freeze({
      applied: this.#state.applied,
      dropped: subscriptions.reduce((n, s) => n + s.dropped, 0),
      subscriptions: Object.freeze(subscriptions),
    });
  }

  /** Stops following the sources and waits for the subscriptions to end. Idempotent. */
  close(): Promise<void> {
    if (this.#closing !== undefined) return this.#closing;
    this.#stop.abort();
    this.#closing = Promise.all(this.#subscriptions.map((s) => s.done)).then(() => undefined);
    return this.#closing;
  }
}
