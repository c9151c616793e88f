// The AuthInterceptor (API.md §4-5): method -> scope, bearer token from the first `authorization`
// value, RFC 7662 introspection, `active`, exact scope, optional client-id pin. Fails closed: any
// doubt is a refusal with a fixed text from errors.ts. Works for unary and streaming calls alike,
// because it gates the call's metadata, which every call kind receives before anything else.
import {
  ServerInterceptingCall,
  type Metadata,
  type ServerInterceptor,
  type StatusObject,
} from "@grpc/grpc-js";
import { PUBLIC_SCOPE, requiredScope } from "@clawker/proto";
import type { Logger } from "pino";
import type { GateCall } from "../server/call-guard.js";
import { PeerTokenBucket } from "../server/peer-token-bucket.js";
import { RefusalLog } from "../server/refusal-log.js";
import { AuthError, statusFor, type AuthReason } from "./errors.js";
import type { IntrospectionResult, Introspector } from "./introspector.js";

/** What authorization learned about a caller (the result of `authorize`). */
export interface AuthContext {
  /** True for a `public` method: no token was looked at. */
  readonly isPublic: boolean;
  readonly clientId: string;
  readonly sub: string;
  readonly scopes: readonly string[];
}

/** Settings of an AuthInterceptor. */
export interface AuthInterceptorOptions {
  readonly introspector: Introspector;
  /** Method full name -> required scope; undefined or "" denies. Default: @clawker/proto's `requiredScope`. */
  readonly scopeOf?: (path: string) => string | undefined;
  /** When set, tokens of any other client id are refused (admin pins `clawker-cli`, agent `clawker-agent`). */
  readonly requiredClientId?: string;
  readonly log: Logger;
  /** Where refusals are counted and (rate-limited) logged; default: one of its own on `log`. */
  readonly refusals?: RefusalLog;
  /** The listener name refusals are counted under. */
  readonly listener?: string;
  /**
   * Introspections each connection may cause (cache misses: tokens not seen lately), per second
   * and saved up; beyond them a call is refused without asking the auth server. Default 10/s, 20.
   */
  readonly introspections?: { readonly perSecond: number; readonly burst: number };
  /** Clock in milliseconds, for the `exp` check. */
  readonly now?: () => number;
}

/** A public method: no token was looked at. */
const PUBLIC = Symbol("public");
type Decision = typeof PUBLIC | IntrospectionResult;

// RFC 6750 §2.1 b64token, bounded so junk never reaches the introspection endpoint.
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/;
const MAX_TOKEN_LENGTH = 4096;
const BEARER = "Bearer ";

/** Introspections per connection: enough for a client's tokens, far too few for a junk flood. */
export const INTROSPECTION_BUDGET_DEFAULTS = { perSecond: 10, burst: 20 } as const;

const PUBLIC_CONTEXT: AuthContext = Object.freeze({ isPublic: true, clientId: "", sub: "", scopes: [] });

// The decision of each authorized call, on the call's metadata object under a symbol only this
// module holds: grpc-js hands the handler the very object the interceptor passed on, and a caller
// can send headers but never set a property (a header could be sent by anyone). A property, not a
// WeakMap entry, because one WeakMap entry per call cost more than the rest of the check (and
// its GC's ephemeron work). Kept raw: the context is built only when a handler asks.
const DECISION: unique symbol = Symbol("clawker auth decision");
type Decided = Metadata & { [DECISION]?: Decision };

/**
 * What the AuthInterceptor decided for the call whose metadata this is (`call.metadata` in a
 * handler): the token's client id, subject and scopes. Undefined when no AuthInterceptor passed
 * the call, so callers that record who acted must treat that as unknown, never as anyone.
 */
export function authContextOf(metadata: Metadata): AuthContext | undefined {
  const decision = (metadata as Decided)[DECISION];
  return decision === undefined ? undefined : contextOf(decision);
}

function contextOf(decision: Decision): AuthContext {
  if (decision === PUBLIC) return PUBLIC_CONTEXT;
  return {
    isPublic: false,
    clientId: decision.clientId,
    sub: decision.sub,
    scopes: decision.scope.split(" ").filter((s) => s !== ""),
  };
}

/** Whatever can name the caller for its introspection budget (a call; read only on a cache miss). */
interface PeerNamed {
  getPeer(): string;
}

/** Records the decision and hides the token: handlers never see it, so they cannot log it. */
function admitted(metadata: Metadata, decision: Decision): void {
  metadata.remove("authorization");
  (metadata as Decided)[DECISION] = decision;
}

/** Authorizes gRPC calls against an Introspector and a scope map. */
export class AuthInterceptor {
  readonly #introspector: Introspector;
  readonly #scopeOf: (path: string) => string | undefined;
  readonly #clientId: string | undefined;
  readonly #log: Logger;
  readonly #refusals: RefusalLog;
  readonly #listener: string;
  readonly #introspections: PeerTokenBucket;
  readonly #now: () => number;

  constructor(options: AuthInterceptorOptions) {
    this.#introspector = options.introspector;
    this.#scopeOf = options.scopeOf ?? requiredScope;
    this.#clientId = options.requiredClientId;
    this.#log = options.log;
    this.#refusals = options.refusals ?? new RefusalLog({ log: options.log });
    this.#listener = options.listener ?? "grpc";
    const budget = options.introspections ?? INTROSPECTION_BUDGET_DEFAULTS;
    this.#introspections = new PeerTokenBucket({
      rate: budget.perSecond,
      burst: budget.burst,
      now: options.now ?? Date.now,
    });
    this.#now = options.now ?? Date.now;
  }

  /**
   * Decides one call: resolves with the caller's AuthContext or rejects with an AuthError whose
   * reason maps to the wire status. Never rejects with anything else.
   */
  async authorize(path: string, metadata: Metadata, peer = "local"): Promise<AuthContext> {
    return contextOf(await this.#decide(path, metadata, { getPeer: () => peer }));
  }

  /**
   * The decision: PUBLIC, or the introspection result that passed every check. Synchronous when
   * no I/O is needed (public method, refusal before introspection, or a cache hit via `peek`), a
   * promise otherwise. Throws or rejects only with AuthError.
   */
  #decide(path: string, metadata: Metadata, peer: PeerNamed): Decision | Promise<Decision> {
    const scope = this.#scopeOf(path);
    if (scope === undefined || scope === "") throw new AuthError("unmapped_method");
    if (scope === PUBLIC_SCOPE) return PUBLIC;
    const token = bearerToken(metadata);
    const cached = this.#introspector.peek?.(token);
    if (cached !== undefined) return this.#judge(cached, scope);
    // A miss costs an HTTPS round trip to the auth server: each connection gets its share only.
    // Joining a request already under way for this token costs nothing, so it spends nothing: a
    // client's first burst on a fresh token is one introspection, not one per call.
    if (this.#introspector.inFlight?.(token) !== true && !this.#introspections.take(peer.getPeer()))
      throw new AuthError("introspection_throttled");
    return this.#introspector.introspect(token).then(
      (result) => this.#judge(result, scope),
      (err: unknown) => {
        throw new AuthError("introspection_failed", { cause: err });
      },
    );
  }

  #judge(result: IntrospectionResult, scope: string): IntrospectionResult {
    if (!result.active) throw new AuthError("token_inactive");
    // Fail closed on a token without expiry, an expired one, or anything but an access token.
    if (result.exp === undefined || result.exp * 1000 <= this.#now()) throw new AuthError("token_inactive");
    if (result.tokenUse !== undefined && result.tokenUse !== "access_token")
      throw new AuthError("token_inactive");
    if (!grantsScope(result.scope, scope)) throw new AuthError("insufficient_scope");
    if (this.#clientId !== undefined && result.clientId !== this.#clientId)
      throw new AuthError("client_mismatch");
    return result;
  }

  /**
   * The check as the call guard runs it (`MetadataGate`, server/call-guard.ts), after the ready
   * gate: the daemon's form, with no grpc-js interceptor layer of its own. Admits with the token
   * removed from the metadata and the decision recorded for `authContextOf`, or refuses with the
   * reason's fixed status.
   */
  readonly gate = (path: string, metadata: Metadata, call: GateCall): void => {
    let decision: Decision | Promise<Decision>;
    try {
      decision = this.#decide(path, metadata, call);
    } catch (err) {
      call.refuse(this.#refusal(err, path, call));
      return;
    }
    // A cache hit stays on this tick: no promise hop between metadata and handler.
    if (!(decision instanceof Promise)) {
      admitted(metadata, decision);
      call.admit();
      return;
    }
    decision.then(
      (d) => {
        admitted(metadata, d);
        call.admit();
      },
      (err: unknown) => call.refuse(this.#refusal(err, path, call)),
    );
  };

  /** The grpc-js server interceptor (the gate as its own layer); list it after recovery and the ready gate. */
  readonly interceptor: ServerInterceptor = (method, next) => {
    const call: ServerInterceptingCall = new ServerInterceptingCall(next, {
      start: (startNext) => {
        startNext({
          onReceiveMetadata: (metadata, metadataNext) => {
            this.gate(method.path, metadata, {
              getPeer: () => next.getPeer(),
              admit: () => {
                try {
                  metadataNext(metadata);
                } catch (err) {
                  this.#log.error(
                    { err, method: method.path, event: "auth_next_failed" },
                    "handler failed after auth",
                  );
                  call.sendStatus(statusFor("internal"));
                }
              },
              refuse: (st) => call.sendStatus(st),
            });
          },
        });
      },
    });
    return call;
  };

  /** Counts and logs a refusal; the status to answer it with. */
  #refusal(err: unknown, path: string, call: PeerNamed): StatusObject {
    const reason: AuthReason = err instanceof AuthError ? err.reason : "internal";
    this.#logRefusal(reason, path, call, err);
    return statusFor(reason);
  }

  #logRefusal(reason: AuthReason, method: string, call: PeerNamed, err: unknown): void {
    // Counted always, logged within the per-reason rate limit: junk tokens cannot flood the log.
    const fields = { event: "auth_refused", method, peer: call.getPeer() };
    if (reason === "introspection_failed" || reason === "internal") {
      const cause = err instanceof Error ? err.cause : undefined;
      this.#refusals.refused(
        this.#listener,
        reason,
        { ...fields, err: cause ?? err },
        "authorization failed",
        "warn",
      );
    } else {
      this.#refusals.refused(this.#listener, reason, fields, "call refused");
    }
  }
}

/**
 * Whether a space-separated scope list (RFC 7662 `scope`) holds exactly `scope`; no substring or
 * prefix ever matches. Allocation-free: it runs on every authorized call.
 */
export function grantsScope(list: string, scope: string): boolean {
  if (scope === "") return false;
  let start = 0;
  for (;;) {
    const space = list.indexOf(" ", start);
    const end = space < 0 ? list.length : space;
    if (end - start === scope.length && list.startsWith(scope, start)) return true;
    if (space < 0) return false;
    start = space + 1;
  }
}

/** The token of the FIRST `authorization` value, which must start with exactly `Bearer `. */
export function bearerToken(metadata: Metadata): string {
  const values = metadata.get("authorization");
  if (values.length === 0) throw new AuthError("missing_token");
  const first = values[0];
  if (typeof first !== "string" || !first.startsWith(BEARER)) throw new AuthError("malformed_token");
  const token = first.slice(BEARER.length);
  if (token.length > MAX_TOKEN_LENGTH || !B64TOKEN.test(token)) throw new AuthError("malformed_token");
  return token;
}
