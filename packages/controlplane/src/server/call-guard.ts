// What grpc-js decides before any interceptor runs, made ours (issue 10 §3): an unknown method
// path was answered UNIMPLEMENTED echoing the path, before any token check; API.md §5 says an
// unmapped method is UNAUTHENTICATED, so every unknown path now is, with the fixed text. A request
// that does not decode was INTERNAL; it is INVALID_ARGUMENT. And a call's request must arrive within
// a bound, so a stream opened and left silent does not hold the call forever.
import {
  status,
  type Metadata,
  type Server,
  type ServerInterceptingCall,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  type ServiceDefinition,
  type StatusObject,
} from "@grpc/grpc-js";
import { LISTENER_ERRORS } from "@clawker/proto";
import type { Logger } from "pino";
import { statusFor } from "../auth/errors.js";
import { withErrorDetail } from "../auth/recovery.js";
import type { IdleConnection, IdleConnections } from "./idle-connections.js";
import { PeerTokenBucket } from "./peer-token-bucket.js";
import type { RefusalLog } from "./refusal-log.js";
import { RequestTimers, type TimedRequest } from "./request-timers.js";

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
 * The call a gate decides: the peer's name (a string built per call, so read only when needed)
 * and the gate's two answers. A gate calls `admit` (then or later) or `refuse` exactly once.
 */
export interface GateCall {
  getPeer(): string;
  /** The call passed this gate: the next gate runs, or the handler after the last. */
  admit(): void;
  /** The call is refused with `st`. */
  refuse(st: PartialStatusObject): void;
}

/**
 * A check a call's metadata must pass before anything behind the call guard sees it (the ready
 * gate, the AuthInterceptor). The guard runs its gates in order, so they cost no grpc-js
 * interceptor layer of their own.
 */
export type MetadataGate = (path: string, metadata: Metadata, call: GateCall) => void;

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
   * pays for no interceptor object of its own): a throw from the layers behind it becomes
   * INTERNAL, an UNKNOWN status (a handler's stray throw) becomes INTERNAL, and an error status
   * without an ErrorInfo gets its code's name as the reason, each logged.
   */
  readonly log?: Logger;
  /** Run in order on every served method's metadata, after the unknown-path check (API.md §5). */
  readonly gates?: readonly MetadataGate[];
  /** Told every call's begin and end, per connection (the listener's idle timeout). */
  readonly idle?: IdleConnections;
}

/** Defaults: 20 refusals per second at full speed per connection, then one second each. */
export const TARPIT_DEFAULTS = { refusalsPerSecond: 20, tarpitMs: 1_000 } as const;

/** The codes that refuse a caller (API.md §5); only these are slowed down. */
const REFUSALS: ReadonlySet<status> = new Set([status.UNAUTHENTICATED, status.PERMISSION_DENIED]);

/** The call guard's own refusals, each with its reason (ErrorInfo) and fixed text. */
const undecodable = LISTENER_ERRORS.fixed("undecodable_request", CALL_GUARD_MESSAGES.undecodable);
const requestTimeout = LISTENER_ERRORS.fixed("request_timeout", CALL_GUARD_MESSAGES.requestTimeout);

/** What grpc-js's base call tells inbound events (grpc-js does not export the type by name). */
type InterceptingServerListener = Parameters<ServerInterceptingCallInterface["start"]>[0];

/** What every call of one listener's guard shares (built once per listener). */
interface Guard {
  readonly listener: string;
  readonly refusals: RefusalLog;
  readonly timers: RequestTimers;
  readonly budget: PeerTokenBucket;
  readonly tarpitMs: number;
  readonly onStatus: ((method: string, code: number) => void) | undefined;
  readonly log: Logger | undefined;
  readonly gates: readonly MetadataGate[];
  readonly idle: IdleConnections | undefined;
}

/**
 * The first interceptor of every listener: refuses unknown paths at their metadata (before the
 * ready gate and any token check), runs `gates` (the ready gate, auth) on the rest, answers an
 * undecodable request INVALID_ARGUMENT, ends a call whose request does not arrive within
 * `requestTimeoutMs` with DEADLINE_EXCEEDED, and holds back the refusals of a connection that has
 * had more than its share (every refusal passes here last). Each call gets one GuardedCall, not
 * grpc-js's ServerInterceptingCall chain (issue 15: that chain's objects and closures per call
 * were most of what an authorized call cost beyond a bare one).
 */
export function callGuardInterceptor(options: CallGuardOptions): ServerInterceptor {
  const rate = options.refusalsPerSecond ?? TARPIT_DEFAULTS.refusalsPerSecond;
  const guard: Guard = {
    listener: options.listener,
    refusals: options.refusals,
    timers: new RequestTimers(options.requestTimeoutMs),
    budget: new PeerTokenBucket({ rate, burst: 2 * rate }),
    tarpitMs: options.tarpitMs ?? TARPIT_DEFAULTS.tarpitMs,
    onStatus: options.onStatus,
    log: options.log,
    gates: options.gates ?? [],
    idle: options.idle,
  };
  // grpc-js types an interceptor's result as its class; any ServerInterceptingCallInterface works.
  return (method, next) =>
    new GuardedCall(guard, method.path, method.requestStream, next) as unknown as ServerInterceptingCall;
}

/**
 * One call behind the guard: grpc-js's call to the outside (the handler calls it), and the
 * listener grpc-js's base call tells inbound events (metadata, message, half close, cancel), so
 * one object per call does what ServerInterceptingCall, its responder, its listener wrapper and
 * their closures did. No inbound event of a call with a status (or cancelled) goes further.
 */
class GuardedCall
  implements ServerInterceptingCallInterface, InterceptingServerListener, GateCall, TimedRequest
{
  readonly #guard: Guard;
  readonly #path: string;
  readonly #requestStream: boolean;
  readonly #next: ServerInterceptingCallInterface;
  #listener: InterceptingServerListener | undefined;
  #metadata: Metadata | undefined;
  /** Gates passed so far (the next to run). */
  #passed = 0;
  /** A status was sent or the call was cancelled: inbound events stop here. */
  #ended = false;
  /** The connection this call keeps from idling, until grpc-js reports the call over (onCancel). */
  #connection: IdleConnection | undefined;
  deadline = 0;
  prevTimed: TimedRequest | undefined = undefined;
  nextTimed: TimedRequest | undefined = undefined;
  timed = false;

  constructor(guard: Guard, path: string, requestStream: boolean, next: ServerInterceptingCallInterface) {
    this.#guard = guard;
    this.#path = path;
    this.#requestStream = requestStream;
    this.#next = next;
  }

  start(listener: InterceptingServerListener): void {
    this.#listener = listener;
    // Client-streaming requests have no bounded end; every method served today has a single
    // request. An unknown path is refused at its metadata, which grpc-js hands over within start.
    if (!this.#requestStream && this.#path !== UNKNOWN_METHOD_PATH) this.#guard.timers.add(this);
    this.#next.start(this);
  }

  onReceiveMetadata(metadata: Metadata): void {
    // grpc-js hands over the metadata exactly when it takes this call as its listener, and from
    // then on tells it onCancel exactly once when the call is over, however it ended (a status
    // sent, the stream reset or closed): the pair a connection's open calls are counted by.
    this.#connection = this.#guard.idle?.begin(sessionOf(this.#next));
    if (this.#ended) return;
    if (this.#path === UNKNOWN_METHOD_PATH) {
      this.#guard.refusals.refused(
        this.#guard.listener,
        "unmapped_method",
        { event: "auth_refused", method: UNKNOWN_METHOD_PATH, peer: this.#next.getPeer() },
        "call refused",
      );
      this.sendStatus(statusFor("unmapped_method"));
      return;
    }
    this.#metadata = metadata;
    this.admit();
  }

  /** The current gate admitted the call (GateCall): the next one runs, or the handler after the last. */
  admit(): void {
    if (this.#ended) return;
    const gate = this.#guard.gates[this.#passed++];
    // Each step catches for itself, with or without recovery's logger: a gate may admit from a
    // promise callback, where a throw would otherwise be an unhandled rejection.
    try {
      if (gate === undefined) this.#listener!.onReceiveMetadata(this.#metadata!);
      else gate(this.#path, this.#metadata!, this);
    } catch (err) {
      this.#failed(err);
    }
  }

  /** The current gate refused the call (GateCall). */
  refuse(st: PartialStatusObject): void {
    this.sendStatus(st);
  }

  onReceiveMessage(message: unknown): void {
    if (this.#ended) return;
    if (message !== UNDECODABLE) {
      try {
        this.#listener!.onReceiveMessage(message);
      } catch (err) {
        this.#failed(err);
      }
      return;
    }
    this.#refuseCall("undecodable_request", "request could not be decoded", undecodable());
  }

  onReceiveHalfClose(): void {
    this.#guard.timers.remove(this);
    if (this.#ended) return;
    try {
      this.#listener!.onReceiveHalfClose();
    } catch (err) {
      this.#failed(err);
    }
  }

  onCancel(): void {
    this.#guard.timers.remove(this);
    this.#ended = true;
    if (this.#connection !== undefined) {
      this.#guard.idle!.end(this.#connection);
      this.#connection = undefined;
    }
    this.#listener?.onCancel();
  }

  onRequestTimeout(): void {
    if (this.#ended) return;
    this.#refuseCall("request_timeout", "request not received in time", requestTimeout());
  }

  /** The guard's own refusal of a call it admitted: logged and counted, then `st` (timer removed). */
  #refuseCall(reason: string, text: string, st: PartialStatusObject): void {
    this.#guard.refusals.refused(
      this.#guard.listener,
      reason,
      { event: "call_refused", method: this.#path, peer: this.#next.getPeer() },
      text,
    );
    this.sendStatus(st);
  }

  sendMetadata(metadata: Metadata): void {
    this.#next.sendMetadata(metadata);
  }

  sendMessage(message: unknown, callback: () => void): void {
    this.#next.sendMessage(message, callback);
  }

  /** Every status passes here: recovery's rule, metrics, then the tarpit for a refusal over budget. */
  sendStatus(st: PartialStatusObject): void {
    const guard = this.#guard;
    guard.timers.remove(this);
    this.#ended = true;
    const path = this.#path;
    const out = guard.log === undefined || path === UNKNOWN_METHOD_PATH ? st : recovered(st, guard.log, path);
    guard.onStatus?.(path, out.code);
    // The peer (a string built per call) only for refusals: every OK status passes here too.
    if (!REFUSALS.has(out.code) || guard.budget.take(this.#next.getPeer())) {
      this.#next.sendStatus(out);
      return;
    }
    guard.refusals.counters.add(guard.listener, "tarpit");
    // A cancelled call ignores the late status; the timer is bounded by the connection's streams.
    setTimeout(() => this.#next.sendStatus(out), guard.tarpitMs);
  }

  startRead(): void {
    this.#next.startRead();
  }

  getPeer(): string {
    return this.#next.getPeer();
  }

  getDeadline(): ReturnType<ServerInterceptingCallInterface["getDeadline"]> {
    return this.#next.getDeadline();
  }

  getHost(): string {
    return this.#next.getHost();
  }

  /** grpc-js's answer, read once per connection (`authContextOf`). */
  getAuthContext(): AuthContext {
    return authContextOf(this.#next);
  }

  getConnectionInfo(): ReturnType<ServerInterceptingCallInterface["getConnectionInfo"]> {
    return this.#next.getConnectionInfo();
  }

  getMetricsRecorder(): ReturnType<ServerInterceptingCallInterface["getMetricsRecorder"]> {
    return this.#next.getMetricsRecorder();
  }

  /**
   * A throw from the layers behind ends the call INTERNAL (recovery's rule, logged when the guard
   * has a logger); without a logger the guard still never lets it escape into grpc-js's stream
   * events, where it would be an uncaught exception.
   */
  #failed(err: unknown): void {
    this.#guard.log?.error({ err, method: this.#path, event: "call_failed" }, "call failed");
    this.sendStatus(statusFor("internal"));
  }
}

/** The HTTP/2 session of grpc-js's base call (its `stream` field; not part of grpc-js's API). */
function sessionOf(base: ServerInterceptingCallInterface): unknown {
  return (base as { stream?: { session?: unknown } }).stream?.session;
}

/** What a call's getAuthContext answers (grpc-js does not export the type by name). */
type AuthContext = ReturnType<ServerInterceptingCallInterface["getAuthContext"]>;

/**
 * grpc-js's getAuthContext answer per HTTP/2 session, i.e. per connection: grpc-js rebuilds it on
 * every call (a `getPeerCertificate()` each time, the costliest step of an agent's Register), yet
 * a TLS 1.3 connection's peer certificate cannot change (no renegotiation) and a session never
 * changes its socket. Keyed on grpc-js's own session object, never on anything a client sends,
 * and dropped with the session.
 */
const authContexts = new WeakMap<object, AuthContext>();

/**
 * The auth context of `base`'s connection, read from grpc-js once per session and frozen, so no
 * handler can change what the next call on the connection sees. Without a session to key on
 * (grpc-js internals changed, the stream already gone) it asks grpc-js every time, as before.
 */
function authContextOf(base: ServerInterceptingCallInterface): AuthContext {
  const session = sessionOf(base);
  if (typeof session !== "object" || session === null) return base.getAuthContext();
  let context = authContexts.get(session);
  if (context === undefined) {
    context = deepFreeze(base.getAuthContext());
    authContexts.set(session, context);
  }
  return context;
}

/** Freezes `value` and the plain objects and arrays inside it (Buffers cannot be frozen; left as they are). */
function deepFreeze<T>(value: T): T {
  if (typeof value !== "object" || value === null || ArrayBuffer.isView(value) || Object.isFrozen(value))
    return value;
  Object.freeze(value);
  for (const inner of Object.values(value)) deepFreeze(inner);
  return value;
}

/** Recovery's status rule: UNKNOWN (a stray throw) is INTERNAL; an error without ErrorInfo gets one. */
function recovered(st: PartialStatusObject, log: Logger, path: string): PartialStatusObject {
  if (st.code !== status.UNKNOWN) return withErrorDetail(st, log, path);
  log.error({ method: path, details: st.details, event: "handler_failed" }, "handler failed");
  return statusFor("internal");
}
