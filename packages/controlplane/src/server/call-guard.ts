// What grpc-js decides before any interceptor runs, made ours (issue 10 §3): an unknown method
// path was answered UNIMPLEMENTED echoing the path, before any token check; API.md §5 says an
// unmapped method is UNAUTHENTICATED, so every unknown path now is, with the fixed text. A request
// that does not decode was INTERNAL; it is INVALID_ARGUMENT. And a call's request must arrive within
// a bound, so a stream opened and left silent does not hold the call forever.
import {
  ServerInterceptingCall,
  status,
  type Metadata,
  type Server,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  type ServiceDefinition,
  type StatusObject,
} from "@grpc/grpc-js";
import { LISTENER_ERRORS } from "@clawker/proto";
import type { Logger } from "pino";
import { statusFor } from "../auth/errors.js";
import { withErrorDetail } from "../auth/recovery.js";
import { PeerTokenBucket } from "./peer-token-bucket.js";
import type { RefusalLog } from "./refusal-log.js";

/** The method path interceptors see for a path no service serves (the real path is never echoed). */
export const UNKNOWN_METHOD_PATH = "(unknown method)";

/** What the request deserializer yields for bytes that are not the request message. */
export const UNDECODABLE: unique symbol = Symbol("undecodable request");

/** The texts of the call guard's own refusals (fixed, like every other refusal text). */
export const CALL_GUARD_MESSAGES = {
  undecodable: "request message could not be decoded",
  requestTimeout: "request not received in time",
} as const;

/**
 * A copy of `definition` whose request deserializers return UNDECODABLE instead of throwing, so
 * the call guard can answer INVALID_ARGUMENT (grpc-js answers a throw with INTERNAL, past every
 * interceptor).
 */
export function guardDeserializers(definition: ServiceDefinition): ServiceDefinition {
  const out: Record<string, ServiceDefinition[string]> = {};
  for (const [name, method] of Object.entries(definition)) {
    const decode = method.requestDeserialize;
    out[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer): unknown => {
        try {
          return decode(bytes);
        } catch {
          return UNDECODABLE;
        }
      },
    };
  }
  return out;
}

const refuseUnknown = (_call: unknown, callback: (err: Partial<StatusObject>) => void): void =>
  callback(statusFor("unmapped_method"));

/** The handler grpc-js gets for a path nobody registered: a unary method that answers UNAUTHENTICATED. */
const UNKNOWN_METHOD_HANDLER = {
  func: refuseUnknown,
  serialize: (value: Buffer): Buffer => value,
  deserialize: (bytes: Buffer): Buffer => bytes,
  type: "unary",
  path: UNKNOWN_METHOD_PATH,
} as const;

/** grpc-js changed its internals: the unknown-method guard cannot be installed (fail closed). */
export class CallGuardError extends Error {
  readonly reason = "grpc_internals_changed";
  override readonly name = "CallGuardError";
}

/**
 * Makes `server` hand every path it does not serve to UNKNOWN_METHOD_HANDLER, so the call passes
 * the interceptors (and the call guard refuses it) instead of grpc-js answering UNIMPLEMENTED with
 * the path. grpc-js has no public hook for this: it looks handlers up in a private Map, which is
 * wrapped here; a grpc-js without that Map throws CallGuardError rather than serve unguarded.
 */
export function routeUnknownMethods(server: Server): void {
  const handlers: unknown = (server as unknown as { handlers?: unknown }).handlers;
  if (!(handlers instanceof Map)) throw new CallGuardError("grpc-js Server has no handler map to guard");
  const known = handlers as Map<string, unknown>;
  const lookup = known.get.bind(known);
  known.get = (path: string) => lookup(path) ?? UNKNOWN_METHOD_HANDLER;
}

/** A status as interceptors pass it on (grpc-js does not export its PartialStatusObject). */
export type PartialStatusObject = Parameters<ServerInterceptingCall["sendStatus"]>[0];

/**
 * A check a call's metadata must pass before anything behind the call guard sees it (the ready
 * gate, the AuthInterceptor). The guard runs its gates in order, so they cost no grpc-js
 * interceptor layer of their own. A gate calls `admit` (then or later) or `refuse` exactly once;
 * `call` is for the peer's name, read only when needed.
 */
export type MetadataGate = (
  path: string,
  metadata: Metadata,
  call: ServerInterceptingCallInterface,
  admit: () => void,
  refuse: (st: PartialStatusObject) => void,
) => void;

/** Settings of the call guard. */
export interface CallGuardOptions {
  /** The listener name refusals are counted under. */
  readonly listener: string;
  readonly refusals: RefusalLog;
  /** A call whose request (message and end) has not arrived this long after it began is ended. */
  readonly requestTimeoutMs: number;
  /**
   * Refusals a connection gets at full speed per second (twice as many saved up); beyond them each
   * refusal is answered only after `tarpitMs`, so a flood of junk from one connection runs at most
   * at its stream limit per `tarpitMs`, whatever it costs the sender to ask.
   */
  readonly refusalsPerSecond?: number;
  readonly tarpitMs?: number;
  /** Told every status the guard passes on (metrics: calls by method and code). */
  readonly onStatus?: (method: string, code: number) => void;
  /**
   * With a logger the guard also does recovery's work (auth/recovery.ts, fused here so a call
   * pays for one grpc-js interceptor object less): a throw from the layers behind it becomes
   * INTERNAL, an UNKNOWN status (a handler's stray throw) becomes INTERNAL, and an error status
   * without an ErrorInfo gets its code's name as the reason, each logged.
   */
  readonly log?: Logger;
  /** Run in order on every served method's metadata, after the unknown-path check (API.md §5). */
  readonly gates?: readonly MetadataGate[];
}

/** Defaults: 20 refusals per second at full speed per connection, then one second each. */
export const TARPIT_DEFAULTS = { refusalsPerSecond: 20, tarpitMs: 1_000 } as const;

/** The codes that refuse a caller (API.md §5); only these are slowed down. */
const REFUSALS: ReadonlySet<status> = new Set([status.UNAUTHENTICATED, status.PERMISSION_DENIED]);

/** The call guard's own refusals, each with its reason (ErrorInfo) and fixed text. */
const undecodable = LISTENER_ERRORS.fixed("undecodable_request", CALL_GUARD_MESSAGES.undecodable);
const requestTimeout = LISTENER_ERRORS.fixed("request_timeout", CALL_GUARD_MESSAGES.requestTimeout);

/**
 * The first interceptor of every listener: refuses unknown paths at their metadata (before the
 * ready gate and any token check), runs `gates` (the ready gate, auth) on the rest, answers an undecodable request INVALID_ARGUMENT, ends a call
 * whose request does not arrive within `requestTimeoutMs` with DEADLINE_EXCEEDED, and holds back
 * the refusals of a connection that has had more than its share (every refusal passes here last).
 */
export function callGuardInterceptor(options: CallGuardOptions): ServerInterceptor {
  const { listener, refusals, requestTimeoutMs, onStatus, log } = options;
  const gates = options.gates ?? [];
  const rate = options.refusalsPerSecond ?? TARPIT_DEFAULTS.refusalsPerSecond;
  const tarpitMs = options.tarpitMs ?? TARPIT_DEFAULTS.tarpitMs;
  const budget = new PeerTokenBucket({ rate, burst: 2 * rate });
  /** Passes a status on, after `tarpitMs` when it refuses a connection over its budget. */
  const answer = (
    path: string,
    st: PartialStatusObject,
    call: ServerInterceptingCallInterface,
    statusNext: (st: PartialStatusObject) => void,
  ): void => {
    onStatus?.(path, st.code);
    // The peer (a string built per call) only for refusals: every OK status passes here too.
    if (!REFUSALS.has(st.code) || budget.take(call.getPeer())) {
      statusNext(st);
      return;
    }
    refusals.counters.add(listener, "tarpit");
    // A cancelled call ignores the late status; the timer is bounded by the connection's streams.
    setTimeout(() => statusNext(st), tarpitMs);
  };
  return (method, next) => {
    if (method.path === UNKNOWN_METHOD_PATH) {
      const refused: ServerInterceptingCall = new ServerInterceptingCall(next, {
        start: (startNext) => {
          startNext({
            onReceiveMetadata: () => {
              refusals.refused(
                listener,
                "unmapped_method",
                { event: "auth_refused", method: UNKNOWN_METHOD_PATH, peer: next.getPeer() },
                "call refused",
              );
              refused.sendStatus(statusFor("unmapped_method"));
            },
          });
        },
        sendStatus: (st, statusNext) => answer(UNKNOWN_METHOD_PATH, st, next, statusNext),
      });
      return refused;
    }
    let timer: NodeJS.Timeout | undefined;
    const stopTimer = (): void => {
      clearTimeout(timer);
      timer = undefined;
    };
    /** Runs one step of the layers behind; with recovery, a throw there ends the call INTERNAL. */
    const guarded =
      log === undefined
        ? (step: () => void): void => step()
        : (step: () => void): void => {
            try {
              step();
            } catch (err) {
              log.error({ err, method: method.path, event: "call_failed" }, "call failed");
              call.sendStatus(statusFor("internal"));
            }
          };
    const call: ServerInterceptingCall = new ServerInterceptingCall(next, {
      start: (startNext) => {
        // Client-streaming requests have no bounded end; every method served today has a single request.
        if (!method.requestStream) {
          timer = setTimeout(() => {
            timer = undefined;
            refusals.refused(
              listener,
              "request_timeout",
              { event: "call_refused", method: method.path, peer: next.getPeer() },
              "request not received in time",
            );
            call.sendStatus(requestTimeout());
          }, requestTimeoutMs);
        }
        startNext({
          onReceiveMetadata: (metadata, metadataNext) => {
            if (gates.length === 0) {
              guarded(() => metadataNext(metadata));
              return;
            }
            let passed = 0;
            const refuse = (st: PartialStatusObject): void => call.sendStatus(st);
            // Each step catches for itself, with or without recovery's logger: a gate may admit
            // from a promise callback, where a throw would otherwise be an unhandled rejection.
            const admit = (): void => {
              const gate = gates[passed++];
              try {
                if (gate === undefined) metadataNext(metadata);
                else gate(method.path, metadata, next, admit, refuse);
              } catch (err) {
                log?.error({ err, method: method.path, event: "call_failed" }, "call failed");
                call.sendStatus(statusFor("internal"));
              }
            };
            admit();
          },
          onReceiveMessage: (message, messageNext) => {
            if (message !== UNDECODABLE) {
              guarded(() => messageNext(message));
              return;
            }
            stopTimer();
            refusals.refused(
              listener,
              "undecodable_request",
              { event: "call_refused", method: method.path, peer: next.getPeer() },
              "request could not be decoded",
            );
            call.sendStatus(undecodable());
          },
          onReceiveHalfClose: (halfCloseNext) => {
            stopTimer();
            guarded(halfCloseNext);
          },
          onCancel: stopTimer,
        });
      },
      sendStatus: (st, statusNext) => {
        stopTimer();
        answer(method.path, log === undefined ? st : recovered(st, log, method.path), next, statusNext);
      },
    });
    return call;
  };
}

/** Recovery's status rule: UNKNOWN (a stray throw) is INTERNAL; an error without ErrorInfo gets one. */
function recovered(st: PartialStatusObject, log: Logger, path: string): PartialStatusObject {
  if (st.code !== status.UNKNOWN) return withErrorDetail(st, log, path);
  log.error({ method: path, details: st.details, event: "handler_failed" }, "handler failed");
  return statusFor("internal");
}
