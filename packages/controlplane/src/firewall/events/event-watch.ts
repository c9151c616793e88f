// One WatchFirewallEvents stream: backfill (the audit log before the ring, then the ring), then
// live events from the hub. The hub's listener only pushes into this watcher's bounded queue, so
// a slow watcher never blocks the hub or another watcher: what does not fit is counted and sent
// as one `gap` event (gap_count = how many it lost) once the watcher has room again.
import type * as grpc from "@grpc/grpc-js";
import { egress } from "@clawker/proto";
import type { Logger } from "../../logging.js";
import { FIREWALL_EVENT_SCHEMA_VERSION, unixNanosNow, type EventHub } from "./event-hub.js";

/** Events since a time from storage beyond the ring (AuditLog.readEvents). */
export interface EventBackfillSource {
  readEvents(
    sinceUnixNanos: bigint,
    accept: (event: egress.FirewallEvent) => boolean,
  ): AsyncIterable<egress.FirewallEvent>;
}

/** Counters of every watch (for stats and metrics). */
export interface WatchStats {
  active: number;
  /** Events watchers lost to a full queue (each loss reported to its watcher as a gap). */
  lost: number;
}

/** What one watch needs. */
export interface WatchOptions {
  readonly hub: Pick<EventHub, "onEvent" | "backfill" | "oldest">;
  readonly audit?: EventBackfillSource | undefined;
  readonly accept: (event: egress.FirewallEvent) => boolean;
  readonly sinceUnixNanos: bigint;
  readonly follow: boolean;
  /** Events queued for this watcher beyond gRPC's own buffer before it loses them. */
  readonly maxQueue: number;
  readonly stats: WatchStats;
  /** Aborted at the drain: the stream ends cleanly. */
  readonly closing: AbortSignal;
  readonly log: Logger;
}

type Call = grpc.ServerWritableStream<egress.WatchFirewallEventsRequest, egress.WatchFirewallEventsResponse>;

/** A gap event: only the count (and time) set. */
export function gapEvent(count: number): egress.FirewallEvent {
  return {
    ...egress.FirewallEvent.create(),
    schemaVersion: FIREWALL_EVENT_SCHEMA_VERSION,
    timeUnixNanos: unixNanosNow(),
    gapCount: BigInt(count),
  };
}

/** Serves one watch until the caller leaves, the drain, or (no_follow) the end of the backfill. */
export function serveWatch(call: Call, o: WatchOptions): void {
  const queue: egress.FirewallEvent[] = [];
  let lost = 0;
  let backfilling = true;
  let waitingForDrain = false;
  let ended = false;
  o.stats.active++;

  const finish = (end: boolean): void => {
    if (ended) return;
    ended = true;
    o.stats.active--;
    unsubscribe();
    o.closing.removeEventListener("abort", onClosing);
    queue.length = 0;
    if (end) call.end();
  };
  const onClosing = (): void => finish(true);

  const enqueue = (e: egress.FirewallEvent): void => {
    if (queue.length >= o.maxQueue) {
      lost++;
      o.stats.lost++;
      return;
    }
    queue.push(e);
  };

  const pump = (): void => {
    if (ended || backfilling || waitingForDrain) return;
    for (;;) {
      let next: egress.FirewallEvent | undefined;
      if (lost > 0) {
        next = gapEvent(lost);
        lost = 0;
      } else next = queue.shift();
      if (next === undefined) break;
      if (!call.write({ event: next })) {
        // gRPC's buffer is full: stop writing until it drains; the hub keeps filling the queue.
        waitingForDrain = true;
        call.once("drain", () => {
          waitingForDrain = false;
          pump();
        });
        return;
      }
    }
    if (!o.follow) finish(true);
  };

  // Subscribed before the ring is read: the snapshot has every event up to now, the listener
  // everything after, so nothing falls between them.
  const unsubscribe = o.follow
    ? o.hub.onEvent((e) => {
        if (ended || !o.accept(e)) return;
        enqueue(e);
        pump();
      })
    : () => undefined;
  const ring = o.sinceUnixNanos > 0n ? o.hub.backfill(o.sinceUnixNanos, o.accept) : [];
  const oldest = o.hub.oldest();
  call.once("cancelled", () => finish(false));
  call.once("error", () => finish(false));
  o.closing.addEventListener("abort", onClosing, { once: true });
  if (o.closing.aborted) {
    finish(true);
    return;
  }

  void (async () => {
    const older: egress.FirewallEvent[] = [];
    if (o.sinceUnixNanos > 0n && o.audit !== undefined) {
      // Only what the ring no longer holds: events older than its oldest (all, when it is empty).
      const before = oldest?.timeUnixNanos;
      try {
        for await (const e of o.audit.readEvents(o.sinceUnixNanos, o.accept)) {
          if (ended) return;
          if (before !== undefined && e.timeUnixNanos >= before) break;
          if (older.length >= o.maxQueue) lost++;
          else older.push(e);
        }
      } catch (err) {
        o.log.warn({ err, event: "watch_backfill_failed" }, "audit log backfill failed");
      }
    }
    if (ended) return;
    // Backfill goes first; live events queued meanwhile follow it.
    const live = queue.splice(0);
    queue.push(...older, ...ring, ...live);
    backfilling = false;
    pump();
  })();
}
