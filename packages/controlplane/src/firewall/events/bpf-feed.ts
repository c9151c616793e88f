// The eBPF manager's `events` subscription feeding the hub: subscribed after the manager started,
// re-subscribed (after a pause) when the stream ends while the daemon still runs.
import type { Logger } from "../../logging.js";
import type { EventStream } from "../../ebpf/client.js";
import type { EventHub } from "./event-hub.js";
import { bpfEvent } from "./sources.js";

/** Options of a BpfEventFeed. */
export interface BpfEventFeedOptions {
  /** Subscribes (EbpfClient.events through the running Enforcement). */
  readonly subscribe: (signal: AbortSignal) => Promise<EventStream>;
  readonly hub: Pick<EventHub, "publish">;
  readonly log: Logger;
  /** Pause before re-subscribing after the stream failed (default 1 s). */
  readonly retryMs?: number;
}

/** Follows the manager's decision events until closed. */
export class BpfEventFeed {
  readonly #o: BpfEventFeedOptions;
  readonly #stop = new AbortController();
  #running: Promise<void> | undefined;

  constructor(options: BpfEventFeedOptions) {
    this.#o = options;
  }

  /** Starts following in the background; ends with `signal` or close(). */
  start(signal: AbortSignal): void {
    if (this.#running !== undefined) return;
    const stop = AbortSignal.any([signal, this.#stop.signal]);
    this.#running = this.#run(stop);
  }

  /** Stops following. Idempotent. */
  async close(): Promise<void> {
    this.#stop.abort();
    await this.#running;
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
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, retryMs);
        signal.addEventListener(
          "abort",
          () => {
            clearTimeout(timer);
            resolve();
          },
          { once: true },
        );
      });
    }
  }
}
