// The agent watcher: counts running agent containers and calls the drain-to-zero callback once the
// count has been zero for `missedThreshold` consecutive counts past the grace period. Polling is
// the safety net; agent died/destroyed events make it count at once (README.md, "watcher").
import {
  type ContainerEvent,
  type DrainEvent,
  type Handler,
  type SubscribeOptions,
  type Subscription,
  isAgentLabels,
} from "@clawker/overseer";
import type { Logger } from "../logging.js";

/** Tuning of the watcher, in milliseconds and counts. Zero or omitted picks the default. */
export interface AgentWatcherOptions {
  /** Time between safety-net counts (30 s). */
  readonly pollInterval?: number;
  /** Consecutive zero counts needed to drain (2). */
  readonly missedThreshold?: number;
  /** From run() on, the threshold cannot be reached for this long (60 s). */
  readonly gracePeriod?: number;
  /** Consecutive count failures that end run() with the last error (20). */
  readonly listErrCeiling?: number;
  /** Delay from an agent died/destroyed event to the count it triggers; bursts coalesce (100 ms). */
  readonly eventDebounce?: number;
  /** Spacing of the confirming counts that follow an event-triggered zero (300 ms). */
  readonly confirmInterval?: number;
  /**
   * After an agent event, counts keep coming every `confirmInterval` for this long even while
   * agents are still listed (3 s): Docker logs `die` before its listing shows the container stopped.
   */
  readonly eventWindow?: number;
}

/** The defaults that zero or omitted options select. */
export const WATCHER_DEFAULTS = Object.freeze({
  pollInterval: 30_000,
  missedThreshold: 2,
  gracePeriod: 60_000,
  listErrCeiling: 20,
  eventDebounce: 100,
  confirmInterval: 300,
  eventWindow: 3_000,
} satisfies Required<AgentWatcherOptions>);

/** Something container events can be subscribed on (overseer.containers). */
export interface ContainerEventSource {
  subscribe(handler: Handler<ContainerEvent>, options?: SubscribeOptions): Subscription;
}

/** What the watcher needs from the rest of the daemon. */
export interface AgentWatcherDeps {
  /** Running agent containers right now; rejects when that is unknown (never resolves 0 then). */
  readonly countAgents: (signal: AbortSignal) => Promise<number>;
  /** Called at most once, when the daemon should drain; run() resolves after it settles. */
  readonly onDrain: () => void | Promise<void>;
  readonly log: Logger;
  /** Agent died/destroyed events here trigger an immediate count (optional: polling alone works). */
  readonly containers?: ContainerEventSource;
  /** Where drain.count and drain.list_failed are published (overseer.drain), if anywhere. */
  readonly drain?: { publish(event: DrainEvent): boolean };
}

/** How run() ended without an error. */
export type WatcherOutcome = "drained" | "aborted";

/** Every reason the watcher fails with. */
export type WatcherErrorReason = "invalid_option" | "already_run" | "list_error_ceiling" | "drain_failed";

/** A watcher failure with a stable `reason`; `cause` holds the last list error or the callback's. */
export class WatcherError extends Error {
  override readonly name = "WatcherError";
  /** The stable machine-readable cause. */
  readonly reason: WatcherErrorReason;

  constructor(reason: WatcherErrorReason, message: string, options?: ErrorOptions) {
    super(message, options);
    this.reason = reason;
  }
}

type Trigger = "poll" | "event" | "grace";

/**
 * Watches the agent count and drains the daemon to zero. `run(signal)` may be called once; it
 * resolves "drained" after the callback, "aborted" when stopped, and rejects with a WatcherError
 * when the list-error ceiling is hit or the callback fails.
 */
export class AgentWatcher {
  /** The options in force after defaults were applied. */
  readonly options: Readonly<Required<AgentWatcherOptions>>;
  readonly #deps: AgentWatcherDeps;
  readonly #stop = new AbortController();
  #running: Promise<WatcherOutcome> | undefined;
  #isDraining = false;
  #closing: Promise<void> | undefined;
  // Scheduling state, touched by the loop and by event handlers (one thread, no locks needed).
  #eventAt: number | undefined;
  #isFast = false;
  #fastUntil = 0;
  #epoch = 0;
  #streak = 0;
  #wake: (() => void) | undefined;

  constructor(deps: AgentWatcherDeps, options: AgentWatcherOptions = {}) {
    this.#deps = deps;
    this.options = Object.freeze({
      pollInterval: pick(options, "pollInterval", false),
      missedThreshold: pick(options, "missedThreshold", true),
      gracePeriod: pick(options, "gracePeriod", false),
      listErrCeiling: pick(options, "listErrCeiling", true),
      eventDebounce: pick(options, "eventDebounce", false),
      confirmInterval: pick(options, "confirmInterval", false),
      eventWindow: pick(options, "eventWindow", false),
    });
  }

  /** Counts until the drain condition, an abort of `signal` or close(), or the error ceiling. */
  run(signal?: AbortSignal): Promise<WatcherOutcome> {
    if (this.#running !== undefined) {
      return Promise.reject(new WatcherError("already_run", "AgentWatcher.run may be called only once"));
    }
    if (signal !== undefined) {
      if (signal.aborted) this.#stop.abort();
      else
        signal.addEventListener("abort", () => this.#stop.abort(), { once: true, signal: this.#stop.signal });
    }
    this.#running = this.#run();
    return this.#running;
  }

  /**
   * Stops counting and waits for run() to settle. Called from inside the drain callback it returns
   * at once (the callback is what run() waits for). Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#stop.abort();
      this.#poke();
      if (this.#isDraining) return;
      await this.#running?.catch(() => undefined);
    })();
    return this.#closing;
  }

  async #run(): Promise<WatcherOutcome> {
    const o = this.options;
    const stop = this.#stop.signal;
    const log = this.#deps.log;
    const startedAt = performance.now();
    const graceEndsAt = startedAt + o.gracePeriod;
    let nextPollAt = startedAt;
    let isGraceChecked = o.gracePeriod === 0;
    let errors = 0;
    const subscription = this.#deps.containers?.subscribe((e) => this.#onContainerEvent(e), {
      signal: stop,
      name: "agent-watcher",
    });
    log.info({ event: "watcher_started", ...o }, "agent watcher started");
    try {
      while (!stop.aborted) {
        // A grace-end count only matters when zero counts are waiting for the grace to pass.
        const graceAt = !isGraceChecked && this.#streak > 0 ? graceEndsAt : Infinity;
        const due = Math.min(nextPollAt, this.#eventAt ?? Infinity, graceAt);
        await this.#sleepUntil(due);
        if (stop.aborted) break;
        const now = performance.now();
        if (now < due) continue; // woken early by an event: recompute what is due
        let trigger: Trigger = "poll";
        if (this.#eventAt !== undefined && this.#eventAt <= now) trigger = "event";
        else if (graceAt <= now) trigger = "grace";
        if (now >= graceEndsAt) isGraceChecked = true;
        this.#eventAt = undefined;
        nextPollAt = now + o.pollInterval;

        const epoch = this.#epoch;
        let count: number;
        try {
          count = await this.#count(stop);
        } catch (err) {
          if (stop.aborted) break;
          errors++;
          this.#streak = 0;
          this.#isFast = false;
          const message = err instanceof Error ? err.message : String(err);
          this.#deps.drain?.publish({
            type: "drain.list_failed",
            error: message,
            consecutive: errors,
            time: Date.now(),
          });
          log.warn({ event: "watcher_list_failed", err, consecutive: errors }, "agent count failed");
          if (errors >= o.listErrCeiling) {
            throw new WatcherError(
              "list_error_ceiling",
              `agent count failed ${errors} times in a row; last: ${message}`,
              { cause: err },
            );
          }
          continue;
        }
        errors = 0;
        // An agent event during the count makes its result stale: the event's own count decides.
        if (epoch !== this.#epoch) continue;
        this.#streak = count === 0 ? this.#streak + 1 : 0;
        this.#deps.drain?.publish({
          type: "drain.count",
          agents: count,
          streak: this.#streak,
          time: Date.now(),
        });
        log.debug({ event: "watcher_count", agents: count, streak: this.#streak, trigger }, "agents counted");
        if (count > 0) {
          // Right after an agent event the listing may still show the stopped container.
          if (this.#isFast && performance.now() < this.#fastUntil) {
            this.#eventAt = performance.now() + o.confirmInterval;
          } else {
            this.#isFast = false;
          }
          continue;
        }
        const isPastGrace = performance.now() >= graceEndsAt;
        if (isPastGrace && this.#streak >= o.missedThreshold) {
          this.#isDraining = true;
          subscription?.unsubscribe();
          log.info({ event: "watcher_drain", streak: this.#streak, trigger }, "no agents left: draining");
          try {
            await this.#deps.onDrain();
          } catch (err) {
            throw new WatcherError("drain_failed", "the drain-to-zero callback failed", { cause: err });
          }
          return "drained";
        }
        // After an event, confirm quickly instead of waiting a whole poll interval.
        if (this.#isFast && this.#streak < o.missedThreshold) {
          this.#eventAt = performance.now() + o.confirmInterval;
        } else {
          this.#isFast = false;
        }
      }
      return "aborted";
    } finally {
      subscription?.unsubscribe();
      this.#wake = undefined;
      // Releases the listener on the caller's signal; run() cannot start again anyway.
      this.#stop.abort();
    }
  }

  async #count(signal: AbortSignal): Promise<number> {
    const n = await this.#deps.countAgents(signal);
    if (!Number.isSafeInteger(n) || n < 0) throw new TypeError(`countAgents returned ${String(n)}`);
    return n;
  }

  #onContainerEvent(e: ContainerEvent): void {
    if (this.#isDraining || this.#stop.signal.aborted) return;
    if (e.type === "docker.reconciled") {
      // After a (re)connect the listing may show agents gone while we were blind: count soon.
      this.#schedule();
      return;
    }
    if (!("labels" in e) || !isAgentLabels(e.labels)) return;
    // Any agent event makes earlier zero counts stale; only a stop or removal asks for a count.
    this.#epoch++;
    this.#streak = 0;
    if (e.type === "container.died" || e.type === "container.destroyed") this.#schedule();
  }

  #schedule(): void {
    const at = performance.now() + this.options.eventDebounce;
    this.#isFast = true;
    this.#fastUntil = at + this.options.eventWindow;
    if (this.#eventAt === undefined || this.#eventAt > at) this.#eventAt = at;
    this.#poke();
  }

  #poke(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  #sleepUntil(due: number): Promise<void> {
    const ms = Math.max(0, due - performance.now());
    return new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    });
  }
}

function pick(options: AgentWatcherOptions, key: keyof AgentWatcherOptions, isInteger: boolean): number {
  const value = options[key];
  if (value === undefined || value === 0) return WATCHER_DEFAULTS[key];
  if (
    typeof value !== "number" ||
    !Number.isFinite(value) ||
    value < 0 ||
    (isInteger && !Number.isInteger(value))
  ) {
    throw new WatcherError(
      "invalid_option",
      `AgentWatcher option ${key} must be ${isInteger ? "a whole number" : "a number"} >= 0 (got ${String(value)})`,
    );
  }
  return value;
}
