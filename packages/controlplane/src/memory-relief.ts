// Memory relief: once the daemon has gone quiet after load, one full garbage collection, after
// which V8's own memory reducer returns the heap it grew for the burst. Without it the heap stays
// at its burst size for good: once the load stops nothing allocates, so no GC ever comes to
// shrink it (README.md, "Memory"). Sampling is a timer reading event-loop utilisation and RSS,
// so the request path pays nothing.
import { performance, type EventLoopUtilization } from "node:perf_hooks";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { Logger } from "./logging.js";

/** Tuning of MemoryRelief (config `memoryRelief`). */
export interface MemoryReliefOptions {
  readonly log: Logger;
  /** False: start() does nothing. */
  readonly enabled?: boolean;
  /** How long the event loop must stay quiet after load before the collection. */
  readonly idleMs?: number;
  /** Resident memory this far above the idle floor is worth a collection. */
  readonly marginMiB?: number;
}

/** Defaults that omitted options select. */
export const MEMORY_RELIEF_DEFAULTS = Object.freeze({ enabled: true, idleMs: 10_000, marginMiB: 24 });

/**
 * Event-loop utilisation of one sampling interval at or below which it counts as quiet; anything
 * above is activity (an idle daemon measures ~0.001, one call a second ~0.002).
 */
export const QUIET_UTILIZATION = 0.05;
/** How long the log waits for V8's memory reducer to return the pages after the collection. */
export const RELEASE_WAIT_MS = 30_000;
/** A fall in RSS at least this large after the collection counts as memory returned. */
const RELEASED_BYTES = 4 * 1024 * 1024;

const MiB = 1024 * 1024;

/** What the sampler decided for one interval. */
export type ReliefStep = "active" | "quiet" | "relieve";

/** The sampler's state between intervals (plain data, so the decision is a table test). */
export interface ReliefState {
  /** Activity was seen since the last collection. Start-up counts: its garbage is known. */
  readonly sawActivity: boolean;
  /** When the current quiet stretch began, or undefined while not quiet. */
  readonly quietSince: number | undefined;
  /** The lowest resident set seen in a quiet interval with nothing pending (0: none seen yet). */
  readonly floorBytes: number;
}

/** The state of a daemon that has just started. */
export const INITIAL_RELIEF_STATE: ReliefState = Object.freeze({
  sawActivity: true,
  quietSince: undefined,
  floorBytes: 0,
});

/** One interval's measurements. */
export interface ReliefSample {
  readonly now: number;
  readonly utilization: number;
  readonly rssBytes: number;
}

/**
 * Decides one sampling interval: activity arms the relief; a quiet stretch of `idleMs` after it
 * fires it once, if resident memory is more than `marginBytes` above the idle floor.
 */
export function reliefStep(
  state: ReliefState,
  sample: ReliefSample,
  limits: { readonly idleMs: number; readonly marginBytes: number },
): { readonly state: ReliefState; readonly step: ReliefStep } {
  if (sample.utilization > QUIET_UTILIZATION) {
    return { state: { ...state, sawActivity: true, quietSince: undefined }, step: "active" };
  }
  const quietSince = state.quietSince ?? sample.now;
  if (!state.sawActivity) {
    // The floor is what an idle daemon needs: only quiet samples with nothing pending count.
    const floorBytes = state.floorBytes === 0 ? sample.rssBytes : Math.min(state.floorBytes, sample.rssBytes);
    return { state: { ...state, quietSince, floorBytes }, step: "quiet" };
  }
  if (sample.now - quietSince < limits.idleMs) return { state: { ...state, quietSince }, step: "quiet" };
  // Once per active stretch: one that left nothing worth a pause disarms it all the same. The
  // first quiet stretch after start always fires (no floor is known yet; start-up leaves ~12 MiB).
  const worthIt = state.floorBytes === 0 || sample.rssBytes > state.floorBytes + limits.marginBytes;
  return { state: { ...state, sawActivity: false, quietSince }, step: worthIt ? "relieve" : "quiet" };
}

/** Why memory relief cannot work in this process. */
export type MemoryReliefReason = "gc_unavailable";

/** A memory-relief failure with a stable `reason`. */
export class MemoryReliefError extends Error {
  override readonly name = "MemoryReliefError";
  /** The stable machine-readable cause. */
  readonly reason: MemoryReliefReason;

  constructor(reason: MemoryReliefReason, message: string, options?: ErrorOptions) {
    super(message, options);
    this.reason = reason;
  }
}

type Collect = () => void;

/**
 * V8's `gc()` (one full, compacting mark-compact), taken from a fresh vm context created while
 * --expose-gc is set: the daemon's own global never gets a `gc`, and the flag is off again at once.
 */
export function acquireGc(): Collect {
  const existing: unknown = (globalThis as { gc?: unknown }).gc;
  if (isGc(existing)) return () => existing();
  let gc: unknown;
  try {
    setFlagsFromString("--expose-gc");
    gc = runInNewContext("gc");
  } catch (cause) {
    throw new MemoryReliefError("gc_unavailable", "V8 gave no gc function", { cause });
  } finally {
    setFlagsFromString("--no-expose-gc");
  }
  if (!isGc(gc)) throw new MemoryReliefError("gc_unavailable", "V8 gave no gc function");
  return () => gc();
}

function isGc(value: unknown): value is () => void {
  return typeof value === "function";
}

interface Pending {
  readonly at: number;
  readonly rssBefore: number;
  readonly heapBefore: number;
  readonly heapAfter: number;
  readonly gcMs: number;
  readonly quietMs: number;
  /** RSS at the previous sample, to see when it stopped falling. */
  readonly lastRss: number;
  /** The lowest RSS since the collection: what the log reports as after. */
  readonly lowestRss: number;
}

/**
 * Samples event-loop utilisation and RSS on an unref'd timer and, once the daemon is quiet after
 * load, asks V8 for one full GC and logs `memory_relief` once the memory is back (or was not).
 */
export class MemoryRelief {
  readonly #log: Logger;
  readonly #enabled: boolean;
  readonly #limits: { readonly idleMs: number; readonly marginBytes: number };
  #state: ReliefState = INITIAL_RELIEF_STATE;
  #timer: NodeJS.Timeout | undefined;
  #elu: EventLoopUtilization | undefined;
  #collect: Collect | undefined;
  #pending: Pending | undefined;
  #closed = false;

  constructor(options: MemoryReliefOptions) {
    this.#log = options.log;
    this.#enabled = options.enabled ?? MEMORY_RELIEF_DEFAULTS.enabled;
    this.#limits = Object.freeze({
      idleMs: options.idleMs ?? MEMORY_RELIEF_DEFAULTS.idleMs,
      marginBytes: (options.marginMiB ?? MEMORY_RELIEF_DEFAULTS.marginMiB) * MiB,
    });
  }

  /** Starts sampling (every quarter of `idleMs`) until `signal` aborts or close(). */
  start(signal?: AbortSignal): void {
    if (!this.#enabled || this.#closed || this.#timer !== undefined) return;
    if (signal?.aborted === true) return;
    signal?.addEventListener("abort", () => this.close(), { once: true });
    this.#elu = performance.eventLoopUtilization();
    this.#timer = setInterval(() => this.#tick(), Math.max(50, Math.floor(this.#limits.idleMs / 4)));
    // Never the reason the process stays alive.
    this.#timer.unref();
  }

  /** Stops sampling. Idempotent. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  #tick(): void {
    const elu = performance.eventLoopUtilization();
    const utilization = performance.eventLoopUtilization(elu, this.#elu).utilization;
    this.#elu = elu;
    const now = performance.now();
    const rssBytes = process.memoryUsage.rss();
    const { state, step } = reliefStep(this.#state, { now, utilization, rssBytes }, this.#limits);
    const quietMs = now - (this.#state.quietSince ?? now);
    this.#state = state;
    // New activity (or a new relief) ends the wait for the last relief's pages: log it as it stands.
    if (this.#pending !== undefined) this.#settle(this.#pending, now, rssBytes, step !== "quiet");
    if (step === "relieve") this.#relieve(now, rssBytes, quietMs);
  }

  #relieve(now: number, rssBefore: number, quietMs: number): void {
    try {
      this.#collect ??= acquireGc();
    } catch (err) {
      this.#log.warn({ err, event: "memory_relief_unavailable" }, "memory relief unavailable");
      this.close();
      return;
    }
    const heapBefore = process.memoryUsage().heapTotal;
    const start = performance.now();
    this.#collect();
    const gcMs = performance.now() - start;
    const heapAfter = process.memoryUsage().heapTotal;
    // The pause is ours, not load: the next interval starts after it.
    this.#elu = performance.eventLoopUtilization();
    this.#pending = {
      at: now,
      rssBefore,
      heapBefore,
      heapAfter,
      gcMs,
      quietMs,
      lastRss: rssBefore,
      lowestRss: rssBefore,
    };
  }

  /**
   * Logs the relief once RSS has fallen and stopped falling (V8's memory reducer returns the pages
   * some 10 s after the collection, possibly in steps), when activity resumes (`force`), or when
   * the wait is over; `rssAfterMiB` is the lowest RSS seen since the collection.
   */
  #settle(p: Pending, now: number, rssBytes: number, force: boolean): void {
    const lowest = Math.min(p.lowestRss, rssBytes);
    const released = lowest <= p.rssBefore - RELEASED_BYTES;
    const settled = released && rssBytes >= p.lastRss - RELEASED_BYTES / 4;
    if (!force && !settled && now - p.at < RELEASE_WAIT_MS) {
      this.#pending = { ...p, lastRss: rssBytes, lowestRss: lowest };
      return;
    }
    this.#pending = undefined;
    this.#log.info(
      {
        event: "memory_relief",
        released,
        rssBeforeMiB: toMiB(p.rssBefore),
        rssAfterMiB: toMiB(lowest),
        heapBeforeMiB: toMiB(p.heapBefore),
        heapAfterMiB: toMiB(p.heapAfter),
        gcMs: Math.round(p.gcMs),
        releaseMs: Math.round(now - p.at),
        quietMs: Math.round(p.quietMs),
      },
      "quiet after load: collected garbage",
    );
  }
}

function toMiB(bytes: number): number {
  return Math.round((bytes / MiB) * 10) / 10;
}
