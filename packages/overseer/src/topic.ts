// Topic<T>: an in-process typed event bus. Publishing copies a reference into each subscriber's
// own bounded queue and returns at once; each subscriber drains its queue in its own async loop.
import { checkCapacity } from "./errors.js";
import { type Logger, safeWarn, silentLogger } from "./logger.js";
import { RingBuffer } from "./ring-buffer.js";

/** Default per-subscriber queue capacity. */
export const DEFAULT_CAPACITY = 1024;

/** Options for a topic. */
export interface TopicOptions {
  /** Shows up in stats and logs. */
  readonly name: string;
  /** Default queue capacity for this topic's subscribers (1024 when omitted). */
  readonly capacity?: number;
  /** Where handler failures and drops are reported (nothing is logged when omitted). */
  readonly logger?: Logger;
}

/** Options for one subscription. */
export interface SubscribeOptions {
  /** Ends the subscription when aborted: queued events are discarded (counted as dropped). */
  readonly signal?: AbortSignal;
  /** Queue capacity for this subscriber; defaults to the topic's. */
  readonly capacity?: number;
  /** Shows up in stats and logs. */
  readonly name?: string;
}

/** A subscriber's handler. It may be async; a throw or a rejection is logged and counted. */
export type Handler<T> = (event: T) => void | PromiseLike<unknown>;

/** Counters of one topic, a frozen point-in-time copy. */
export interface TopicStats {
  readonly name: string;
  /** Events accepted by `publish` (before close). */
  readonly published: number;
  /** Events handed to a handler or yielded by a stream, summed over subscribers. */
  readonly delivered: number;
  /** Events a subscriber never saw: overflow (drop-oldest) or discarded by abort, summed. */
  readonly dropped: number;
  /** Handler failures (throws and rejections), summed over subscribers. */
  readonly panics: number;
  /** `publish` calls after close: counted no-ops. */
  readonly rejected: number;
  /** Subscriptions currently receiving events. */
  readonly subscribers: number;
  readonly isClosed: boolean;
}

/** Counters of one subscription, a frozen point-in-time copy. */
export interface SubscriptionStats {
  readonly name: string;
  readonly capacity: number;
  /** Events waiting in the queue. */
  readonly queued: number;
  readonly delivered: number;
  readonly dropped: number;
  readonly panics: number;
  /** Still receiving new events. */
  readonly isActive: boolean;
}

/** A handle on one subscription. */
export interface Subscription {
  readonly name: string;
  /** Settles (never rejects) once the subscription has ended and no handler is running. */
  readonly done: Promise<void>;
  /** Still receiving new events. */
  readonly isActive: boolean;
  /** Ends the subscription like an abort of its signal. Idempotent. */
  unsubscribe(): void;
  stats(): SubscriptionStats;
}

/** A subscription consumed with `for await`; breaking out of the loop unsubscribes. */
export interface TopicStream<T> extends Subscription, AsyncIterableIterator<T, undefined> {}

interface Counters {
  published: number;
  delivered: number;
  dropped: number;
  panics: number;
  rejected: number;
}

type State = "active" | "draining" | "ended";

interface SubscriberInit<T> {
  readonly name: string;
  readonly capacity: number;
  readonly topicName: string;
  readonly counters: Counters;
  readonly log: Logger;
  readonly signal: AbortSignal | undefined;
  readonly detach: (s: Subscriber<T>) => void;
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    (typeof value === "object" || typeof value === "function") &&
    value !== null &&
    typeof (value as { then?: unknown }).then === "function"
  );
}

/** The queue, counters and end-of-life shared by both subscription forms. */
abstract class Subscriber<T> implements Subscription {
  readonly name: string;
  abstract readonly done: Promise<void>;
  protected readonly queue: RingBuffer<T>;
  protected readonly counters: Counters;
  protected readonly topicName: string;
  protected readonly log: Logger;
  protected state: State = "active";
  protected delivered = 0;
  protected panics = 0;
  #dropped = 0;
  #signal: AbortSignal | undefined;
  #detach: (s: Subscriber<T>) => void;
  readonly #onAbort = (): void => this.stop(false);

  constructor({ name, capacity, topicName, counters, log, signal, detach }: SubscriberInit<T>) {
    this.name = name;
    this.queue = new RingBuffer<T>(capacity);
    this.counters = counters;
    this.topicName = topicName;
    this.log = log;
    this.#detach = detach;
    if (signal !== undefined) {
      this.#signal = signal;
      signal.addEventListener("abort", this.#onAbort, { once: true });
    }
  }

  get isActive(): boolean {
    return this.state === "active";
  }

  /** Called by publish: enqueue (dropping the oldest when full) and wake the consumer. */
  offer(event: T): void {
    if (this.queue.push(event)) this.countDropped(1, "overflow");
    this.wake();
  }

  /** Stops accepting events; with `drain` the queue is still consumed, otherwise discarded. */
  stop(drain: boolean): void {
    if (this.state === "ended" || (drain && this.state === "draining")) return;
    if (!drain) {
      const discarded = this.queue.clear();
      if (discarded > 0) this.countDropped(discarded, "discarded");
    }
    const wasActive = this.state === "active";
    this.state = drain ? "draining" : "ended";
    if (wasActive) {
      this.#signal?.removeEventListener("abort", this.#onAbort);
      this.#signal = undefined;
      this.#detach(this);
    }
    this.wake();
  }

  unsubscribe(): void {
    this.stop(false);
  }

  stats(): SubscriptionStats {
    return Object.freeze({
      name: this.name,
      capacity: this.queue.capacity,
      queued: this.queue.length,
      delivered: this.delivered,
      dropped: this.#dropped,
      panics: this.panics,
      isActive: this.state === "active",
    });
  }

  protected abstract wake(): void;

  private countDropped(n: number, cause: "overflow" | "discarded"): void {
    const before = this.#dropped;
    this.#dropped += n;
    this.counters.dropped += n;
    // Log the first drop and then at every power of two, so a flood of drops stays a trickle of logs.
    if (Math.floor(Math.log2(this.#dropped)) !== Math.floor(Math.log2(Math.max(before, 0.5)))) {
      safeWarn(
        this.log,
        {
          topic: this.topicName,
          subscriber: this.name,
          dropped: this.#dropped,
          cause,
          event: "overseer_dropped",
        },
        "overseer subscriber dropped events",
      );
    }
  }
}

/** A subscription whose own async loop calls a handler for each queued event in order. */
class HandlerSubscriber<T> extends Subscriber<T> {
  override readonly done: Promise<void>;
  readonly #handler: Handler<T>;
  #wake: (() => void) | undefined;

  constructor(handler: Handler<T>, init: SubscriberInit<T>) {
    super(init);
    this.#handler = handler;
    this.done = this.#run();
  }

  protected override wake(): void {
    const wake = this.#wake;
    if (wake !== undefined) {
      this.#wake = undefined;
      wake();
    }
  }

  async #run(): Promise<void> {
    for (;;) {
      while (this.queue.length > 0 && this.state !== "ended") {
        const event = this.queue.shift() as T;
        try {
          const result = this.#handler(event);
          // Await only real thenables: a synchronous handler keeps the drain loop synchronous.
          if (isThenable(result)) await result;
        } catch (err) {
          this.#fail(err, event);
        }
        this.delivered++;
        this.counters.delivered++;
      }
      if (this.state !== "active") break;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
    }
    this.state = "ended";
  }

  #fail(err: unknown, event: T): void {
    this.panics++;
    this.counters.panics++;
    const type = typeof event === "object" && event !== null ? (event as { type?: unknown }).type : undefined;
    safeWarn(
      this.log,
      {
        err,
        topic: this.topicName,
        subscriber: this.name,
        eventType: typeof type === "string" ? type : undefined,
        event: "overseer_handler_failed",
      },
      "overseer handler failed",
    );
  }
}

/** A subscription read with `for await`; `next()` takes from the queue or waits for a publish. */
class StreamSubscriber<T> extends Subscriber<T> implements TopicStream<T> {
  override readonly done: Promise<void>;
  #resolveDone!: () => void;
  #waiters: ((r: IteratorResult<T, undefined>) => void)[] = [];
  #isFinished = false;

  constructor(init: SubscriberInit<T>) {
    super(init);
    this.done = new Promise<void>((resolve) => {
      this.#resolveDone = resolve;
    });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<T, undefined>> {
    if (this.queue.length > 0 && this.state !== "ended") {
      return Promise.resolve(this.#take());
    }
    if (this.state !== "active") {
      this.#finish();
      return Promise.resolve({ done: true, value: undefined });
    }
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  return(): Promise<IteratorResult<T, undefined>> {
    this.stop(false);
    return Promise.resolve({ done: true, value: undefined });
  }

  protected override wake(): void {
    while (this.#waiters.length > 0) {
      if (this.queue.length > 0 && this.state !== "ended") {
        this.#waiters.shift()!(this.#take());
      } else if (this.state !== "active") {
        this.#finish();
        break;
      } else {
        break;
      }
    }
    if (this.state === "ended") this.#finish();
  }

  #take(): IteratorResult<T, undefined> {
    const value = this.queue.shift() as T;
    this.delivered++;
    this.counters.delivered++;
    return { done: false, value };
  }

  #finish(): void {
    if (this.#isFinished) return;
    this.#isFinished = true;
    this.state = "ended";
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w({ done: true, value: undefined });
    this.#resolveDone();
  }
}

/**
 * A typed event bus. `publish` never blocks and never throws; every subscriber has its own
 * bounded drop-oldest queue and its own delivery loop, so a slow or failing subscriber affects
 * nobody else. `close()` stops accepting, drains the queues and waits for the handlers.
 */
export class Topic<T> {
  readonly name: string;
  readonly #capacity: number;
  readonly #log: Logger;
  readonly #counters: Counters = { published: 0, delivered: 0, dropped: 0, panics: 0, rejected: 0 };
  // Copy-on-write, so publish iterates a plain array without allocating.
  #subscribers: readonly Subscriber<T>[] = [];
  #handlerDone = new Set<Promise<void>>();
  #isClosed = false;
  #closing: Promise<void> | undefined;
  #seq = 0;
  readonly #detach = (s: Subscriber<T>): void => {
    this.#subscribers = this.#subscribers.filter((x) => x !== s);
  };

  constructor(options: TopicOptions) {
    this.name = options.name;
    this.#capacity = checkCapacity(`topic ${options.name} capacity`, options.capacity ?? DEFAULT_CAPACITY);
    this.#log = options.logger ?? silentLogger;
  }

  /** True once `close()` has been called. */
  get isClosed(): boolean {
    return this.#isClosed;
  }

  /**
   * Hands `event` to every current subscriber's queue and returns at once. Returns false (and
   * counts the call) after close. Never throws.
   */
  publish(event: T): boolean {
    if (this.#isClosed) {
      this.#counters.rejected++;
      return false;
    }
    this.#counters.published++;
    const subs = this.#subscribers;
    for (let i = 0; i < subs.length; i++) {
      try {
        subs[i]!.offer(event);
      } catch {
        // offer() does not throw by construction; this keeps the promise of publish unconditional.
      }
    }
    return true;
  }

  /**
   * Calls `handler` for every event published from now on, in publish order, one at a time.
   * After close (or with an aborted signal) the subscription is born ended. Throws only on a
   * bad capacity.
   */
  subscribe(handler: Handler<T>, options: SubscribeOptions = {}): Subscription {
    const [capacity, name] = this.#subscriptionParams(options);
    const sub = new HandlerSubscriber<T>(handler, this.#init(name, capacity, options.signal));
    this.#attach(sub, options.signal);
    if (sub.isActive) {
      this.#handlerDone.add(sub.done);
      void sub.done.then(() => this.#handlerDone.delete(sub.done));
    }
    return sub;
  }

  /**
   * Like `subscribe`, as an async iterator: `for await (const e of topic.stream({ signal }))`.
   * Ends when the signal aborts, the loop breaks, or the topic closes (after the queued events).
   */
  stream(options: SubscribeOptions = {}): TopicStream<T> {
    const [capacity, name] = this.#subscriptionParams(options);
    const sub = new StreamSubscriber<T>(this.#init(name, capacity, options.signal));
    this.#attach(sub, options.signal);
    return sub;
  }

  /** A frozen copy of this topic's counters. */
  stats(): TopicStats {
    const c = this.#counters;
    return Object.freeze({
      name: this.name,
      published: c.published,
      delivered: c.delivered,
      dropped: c.dropped,
      panics: c.panics,
      rejected: c.rejected,
      subscribers: this.#subscribers.length,
      isClosed: this.#isClosed,
    });
  }

  /** Per-subscription counters of the subscriptions still receiving events. */
  subscriptionStats(): readonly SubscriptionStats[] {
    return Object.freeze(this.#subscribers.map((s) => s.stats()));
  }

  /**
   * Stops accepting events, lets every handler subscription drain its queue, and settles when
   * all handlers have returned. Streams stop receiving and end after their queued events.
   * Idempotent: every call returns the same promise.
   */
  close(): Promise<void> {
    if (this.#closing !== undefined) return this.#closing;
    this.#isClosed = true;
    for (const s of this.#subscribers) s.stop(true);
    this.#closing = Promise.all([...this.#handlerDone]).then(() => undefined);
    return this.#closing;
  }

  #subscriptionParams(options: SubscribeOptions): [number, string] {
    const capacity = checkCapacity(
      `subscription capacity on topic ${this.name}`,
      options.capacity ?? this.#capacity,
    );
    return [capacity, options.name ?? `${this.name}#${++this.#seq}`];
  }

  #init(name: string, capacity: number, signal: AbortSignal | undefined): SubscriberInit<T> {
    return {
      name,
      capacity,
      topicName: this.name,
      counters: this.#counters,
      log: this.#log,
      signal,
      detach: this.#detach,
    };
  }

  #attach(sub: Subscriber<T>, signal: AbortSignal | undefined): void {
    if (this.#isClosed || signal?.aborted === true) {
      sub.stop(false);
      return;
    }
    this.#subscribers = [...this.#subscribers, sub];
  }
}
