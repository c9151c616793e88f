// The eBPF manager's `events` subscription feeding the hub: subscribed after the manager started,
// re-subscribed (after a pause) when the stream ends while the daemon still runs. The kernel side
// counts the events it could not put in its ring buffer (full, or beyond `--events-per-sec` per
// cgroup) in the `counters` map; those are read every few seconds and counted as the bpf source's
// upstream drops, so they are not silent either.
import type { Logger } from "../../logging.js";
import type { EventStream } from "../../ebpf/client.js";
import type { EventHub } from "./event-hub.js";
import { bpfEvent } from "./sources.js";

/** Options of a BpfEventFeed. */
export interface BpfEventFeedOptions {
  /** Subscribes (EbpfClient.events through the running Enforcement). */
  readonly subscribe: (signal: AbortSignal) => Promise<EventStream>;
  readonly hub: Pick<EventHub, "publish" | "countUpstreamDrops">;
  /**
   * The kernel's per-cgroup `eventsDropped` counters (the manager's dump); absent: not read.
   * Called every `dropPollMs` while the feed runs.
   */
  readonly kernelDrops?: () => Promise<
    readonly { readonly cgroupId: string; readonly eventsDropped: number }[]
  >;
  /** How often the kernel's counters are read (default 5 s). */
  readonly dropPollMs?: number;
  readonly log: Logger;
  /** Pause before re-subscribing after the stream failed (default 1 s). */
  readonly retryMs?: number;
}

/** Follows the manager's decision events until closed. */
export class BpfEventFeed {
  readonly #o: BpfEventFeedOptions;
  readonly #stop = new AbortController();
  #running: Promise<void> | undefined;
  #polling: Promise<void> | undefined;
  /** The last count seen per cgroup; undefined until the first read (its counts predate us). */
  #lastDrops: Map<string, number> | undefined;
  #dropsFailing = false;

  constructor(options: BpfEventFeedOptions) {
    this.#o = options;
  }

  /** Starts following in the background; ends with `signal` or close(). */
  start(signal: AbortSignal): void {
    if (this.#running !== undefined) return;
    const stop = AbortSignal.any([signal, this.#stop.signal]);
    this.#running = this.#run(stop);
    if (this.#o.kernelDrops !== undefined) this.#polling = this.#pollDrops(stop);
  }

  /** Stops following. Idempotent. */
  async close(): Promise<void> {
    this.#stop.abort();
    await Promise.all([this.#running, this.#polling]);
  }

  /**
   * Reads the kernel's counters once and counts what is new as the bpf source's upstream drops;
   * returns how many. The first read only sets the baseline (what the pinned maps counted before
   * this daemon ran was not this daemon's to count). A cgroup's entry is per cgroup and may be
   * collected: one seen again below its last count started afresh.
   */
  async countKernelDrops(): Promise<number> {
    const rows = await this.#o.kernelDrops!();
    const first = this.#lastDrops === undefined;
    const last = this.#lastDrops ?? new Map<string, number>();
    const next = new Map<string, number>();
    let fresh = 0;
    for (const { cgroupId, eventsDropped } of rows) {
      if (!Number.isSafeInteger(eventsDropped) || eventsDropped < 0) continue;
      next.set(cgroupId, eventsDropped);
      if (first) continue;
      const before = last.get(cgroupId) ?? 0;
      fresh += eventsDropped >= before ? eventsDropped - before : eventsDropped;
    }
    this.#lastDrops = next;
    if (fresh > 0) this.#o.hub.countUpstreamDrops("bpf", fresh);
    return fresh;
  }

  async #pollDrops(signal: AbortSignal): Promise<void> {
    const every = this.#o.dropPollMs ?? 5000;
    while (!signal.aborted) {
      try {
        await this.countKernelDrops();
        this.#dropsFailing = false;
      } catch (err) {
        // Once per failing stretch, not every poll: the manager may be restarting.
        if (!this.#dropsFailing)
          this.#o.log.warn({ err, event: "bpf_drops_unreadable" }, "cannot read the kernel's event drops");
        this.#dropsFailing = true;
      }
      await pause(every, signal);
    }
  }

  async #run(signal: AbortSignal): Promise<void> {
    const retryMs = this.#o.retryMs ?? 1000;
    while (!signal.aborted) {
      try {
        const stream = await this.#o.subscribe(signal);
        for await (const d of stream) {
          const { event, origin } = bpfEvent(d);
          this.#o.hub.publish(event, origin);
        }
      } catch (err) {
        if (signal.aborted) return;
        this.#o.log.warn({ err, event: "bpf_events_failed" }, "eBPF events subscription failed");
      }
      if (signal.aborted) return;
      await pause(retryMs, signal);
    }
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}
