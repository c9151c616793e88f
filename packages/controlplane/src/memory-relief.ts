// Memory relief: once the daemon has gone quiet after load, one collection of all available
// garbage, which also returns the pages V8 grew the heap by for the burst. Without it the heap
// stays at its burst size for good: once the load stops nothing allocates, so no GC ever comes to
// shrink it (README.md, "Memory"). Sampling is a timer reading event-loop utilisation and RSS,
// so the request path pays nothing.
import { performance, type EventLoopUtilization } from "node:perf_hooks";
import type { Logger } from "./logging.js";
import { acquireGcFunction, type GcFunction } from "./v8-gc.js";

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
 * above is activity (an idle daemon measures ~0.001).
 */
export const QUIET_UTILIZATION = 0.05;

const MiB = 1024 * 1024;

/**
 * The start-up collection waits for the first interval this long whose event loop was quiet: its
 * pause must not hold up the first requests after ready (`/healthz`, the CLI's first call).
 */
export const STARTUP_QUIET_MS = 100;

/** What the sampler decided for one interval. */
export type ReliefStep = "active" | "quiet" | "relieve";

/** The sampler's state between intervals (plain data, so the decision is a table test). */
export interface ReliefState {
  /** Activity was seen since the last collection. Start-up counts: its garbage is known. */
  readonly sawActivity: boolean;
  /** When the current quiet stretch began, or undefined while not quiet. */
  readonly quietSince: number | undefined;
  /** RSS the last relief left, lowered by quiet samples with no load pending (0: none yet). */
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
    // The floor is what an idle daemon needs: only quiet samples with no load pending count.
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
 * V8's "collect all available garbage" (the gc extension's last-resort flavour: full, compacting
 * collections until nothing more is freed, then the freed pages are returned to the system), with
 * the gc function of v8-gc.ts.
 */
export function acquireGc(): Collect {
  let collect: GcFunction;
  try {
    collect = acquireGcFunction();
  } catch (cause) {
    throw new MemoryReliefError("gc_unavailable", "V8 gave no gc function", { cause });
  }
  // A regular major GC alone shrinks the heap but leaves the pages mapped until V8's memory
  // reducer decides the allocation rate is low, which after a short quiet spell it often does not.
  return () => collect({ type: "major", flavor: "last-resort" });
}

/**
 * Samples event-loop utilisation and RSS on an unref'd timer and, once the daemon is quiet after
 * load, has V8 collect all available garbage once and logs `memory_relief` with what came back.
 */
export class MemoryRelief {
  readonly #log: Logger;
  readonly #enabled: boolean;
  readonly #limits: { readonly idleMs: number; readonly marginBytes: number };
  #state: ReliefState = INITIAL_RELIEF_STATE;
  #timer: NodeJS.Timeout | undefined;
  #startupTimer: NodeJS.Timeout | undefined;
  #elu: EventLoopUtilization | undefined;
  #collect: Collect | undefined;
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

  /**
   * Collects the start-up's garbage in the first quiet `STARTUP_QUIET_MS` after ready (call it
   * once ready): start-up grows the young generation to its full size and leaves it nearly all
   * garbage (~14 MiB), which only a full collection returns, so waiting for a quiet stretch of
   * `idleMs` kept every idle daemon above what it needs that long. The sampler then fires again
   * only for memory above what this left.
   */
  collectStartup(): void {
    if (!this.#enabled || this.#closed || this.#startupTimer !== undefined) return;
    let elu = performance.eventLoopUtilization();
    this.#startupTimer = setInterval(() => {
      const now = performance.eventLoopUtilization();
      const utilization = performance.eventLoopUtilization(now, elu).utilization;
      elu = now;
      if (utilization > QUIET_UTILIZATION) return;
      clearInterval(this.#startupTimer);
      this.#relieve(process.memoryUsage.rss(), STARTUP_QUIET_MS, "startup");
      this.#state = { ...this.#state, sawActivity: false, quietSince: undefined };
    }, STARTUP_QUIET_MS);
    this.#startupTimer.unref();
  }

  /** Stops sampling. Idempotent. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#timer);
    clearInterval(this.#startupTimer);
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
    if (step === "relieve") this.#relieve(rssBytes, quietMs, "quiet");
  }

  #relieve(rssBefore: number, quietMs: number, trigger: "startup" | "quiet"): void {
    const heapBefore = process.memoryUsage().heapTotal;
    const start = performance.now();
    try {
      this.#collect ??= acquireGc();
      this.#collect();
    } catch (err) {
      // A memory optimisation never takes the daemon down (a throw here would drain it).
      this.#log.warn({ err, event: "memory_relief_unavailable" }, "memory relief unavailable");
      this.close();
      return;
    }
    const gcMs = performance.now() - start;
    const after = process.memoryUsage();
    // The pause is ours, not load: the next interval starts after it.
    this.#elu = performance.eventLoopUtilization();
    // What is left is what the daemon needs now: the new floor, which follows a working set that
    // grew (more agents) instead of firing after every stretch of activity.
    this.#state = { ...this.#state, floorBytes: after.rss };
    this.#log.info(
      {
        event: "memory_relief",
        trigger,
        rssBeforeMiB: toMiB(rssBefore),
        rssAfterMiB: toMiB(after.rss),
        heapBeforeMiB: toMiB(heapBefore),
        heapAfterMiB: toMiB(after.heapTotal),
        gcMs: Math.round(gcMs),
        quietMs: Math.round(quietMs),
      },
      "quiet after load: collected garbage",
    );
  }
}

function toMiB(bytes: number): number {
  return Math.round((bytes / MiB) * 10) / 10;
}
