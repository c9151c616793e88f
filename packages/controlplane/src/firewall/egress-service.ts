// clawker.egress.v1.EgressService on the admin listener (issue 11 §3; scope `admin` in
// METHOD_SCOPES): WatchFirewallEvents over the EventHub (events/), and the triage RPCs when the
// triage subsystem is given (else UNIMPLEMENTED). See events/README.md.
import type * as grpc from "@grpc/grpc-js";
import { ADMIN_ERRORS, egress } from "@clawker/proto";
import type { Logger } from "../logging.js";
import type { ServiceBinding } from "../server/grpc-listener.js";
import type { EventHub } from "./events/event-hub.js";
import { eventFilter, EventFilterError } from "./events/event-filter.js";
import { serveWatch, type EventBackfillSource, type WatchStats } from "./events/event-watch.js";

/** What the triage subsystem serves (wip/triage's `triageHandlers(triage)`). */
export type TriageHandlers = Pick<
  egress.EgressServiceServer,
  "listFirewallDenials" | "approveEgress" | "dismissEgress"
>;

/** What the service uses. */
export interface EgressServiceDeps {
  readonly hub: EventHub;
  /** The audit log: backfill older than the ring (AuditLog.readEvents). */
  readonly audit?: EventBackfillSource | undefined;
  readonly triage?: TriageHandlers | undefined;
  readonly log: Logger;
  /** Aborted at the drain: every watch ends cleanly so the gRPC close does not wait for it. */
  readonly closing?: AbortSignal;
  /** Events queued per watcher beyond gRPC's buffer before it gets a gap (default 4,096). */
  readonly maxQueue?: number;
  /** Shared counters of the watches (the caller may read them for stats). */
  readonly watchStats?: WatchStats;
}

function unimplemented<Req, Res>(): grpc.handleUnaryCall<Req, Res> {
  return (_call, callback) => {
    callback(ADMIN_ERRORS.status("unimplemented", "denial triage is not available in this control plane"));
  };
}

/** Builds the EgressService binding for the admin listener. */
export function egressService(deps: EgressServiceDeps): ServiceBinding {
  const stats = deps.watchStats ?? { active: 0, lost: 0 };
  const closing = deps.closing ?? new AbortController().signal;
  const maxQueue = deps.maxQueue ?? 4096;
  const log = deps.log.child({ rpc: "WatchFirewallEvents" });
  const implementation: egress.EgressServiceServer = {
    listFirewallDenials: unimplemented(),
    approveEgress: unimplemented(),
    dismissEgress: unimplemented(),
    ...deps.triage,
    watchFirewallEvents: (call) => {
      const req = call.request;
      let accept: (e: egress.FirewallEvent) => boolean;
      try {
        if (req.sinceUnixNanos < 0n) throw new EventFilterError("since_unix_nanos must not be negative");
        accept = eventFilter(req.filter);
      } catch (err) {
        if (!(err instanceof EventFilterError)) throw err;
        call.emit("error", ADMIN_ERRORS.status("invalid_argument", err.message));
        return;
      }
      serveWatch(call, {
        hub: deps.hub,
        audit: deps.audit,
        accept,
        sinceUnixNanos: req.sinceUnixNanos,
        follow: !req.noFollow,
        maxQueue,
        stats,
        closing,
        log,
      });
    },
  };
  return { definition: egress.EgressServiceService, implementation };
}
