// FirewallStatus with the decision stream's counters (extension field 1001, event_sources): the
// firewall's own handler answers, and its result gets one entry per source, so every dropped
// event is visible in `clawker firewall status`.
import type { admin } from "@clawker/proto";
import { EVENT_SOURCES, type EventHub } from "./event-hub.js";

/** The hub's per-source counters as FirewallStatus lists them. */
export function eventSources(hub: Pick<EventHub, "stats">): admin.FirewallEventSource[] {
  const s = hub.stats().sources;
  return EVENT_SOURCES.map((source) => ({
    source,
    published: BigInt(s[source].published),
    delivered: BigInt(s[source].delivered),
    droppedRateLimited: BigInt(s[source].droppedRateLimited),
    droppedUpstream: BigInt(s[source].droppedUpstream),
  }));
}

/** Wraps a FirewallStatus handler so its result carries `event_sources`. */
export function withEventSources<H extends Pick<admin.AdminServiceServer, "firewallStatus">>(
  handlers: H,
  hub: Pick<EventHub, "stats">,
): H {
  const inner = handlers.firewallStatus;
  return {
    ...handlers,
    firewallStatus: (call, callback) =>
      inner(call, (err, result, ...rest) =>
        err === null && result !== undefined
          ? callback(
              null,
              { ...(result as admin.FirewallStatusResult), eventSources: eventSources(hub) },
              ...rest,
            )
          : callback(err, result, ...rest),
      ),
  };
}
