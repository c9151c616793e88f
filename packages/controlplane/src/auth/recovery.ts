// Recovery: a failing handler never takes the daemon down and never leaks its error text. Two
// parts, because grpc-js server interceptors cannot see a handler's exception: grpc-js itself
// catches a synchronous throw and sends UNKNOWN "Unknown error" (the error is gone by then), an
// error without a numeric `code` passed to the callback becomes UNKNOWN with its message, and a
// rejected promise from an async handler escapes grpc-js entirely (an unhandled rejection).
// So: `withRecovery` wraps the handlers (catches throws, rejections and code-less errors, logs
// them with the error, answers INTERNAL); `recoveryInterceptor`, first in the chain, rewrites
// any UNKNOWN status to INTERNAL with the fixed text and guards the inbound listener chain. It also
// sees every status a handler or an inner interceptor sends, so it is where a status that came
// without an ErrorInfo detail gets one (API.md §6: every error status carries one).
import {
  ServerInterceptingCall,
  status,
  type ServerInterceptor,
  type ServiceDefinition,
  type StatusObject,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { CLAWKER_ERROR_DOMAIN, codeName, withCodeNameDetail } from "@clawker/proto";
import type { Logger } from "pino";
import { statusFor } from "./errors.js";

/** A status as interceptors pass it on (grpc-js does not export its PartialStatusObject). */
type PartialStatusObject = Parameters<ServerInterceptingCall["sendStatus"]>[0];

/**
 * `st` with an ErrorInfo detail when it is an error status without one: the reason is the code's
 * name (`not_found`), the same one a client falls back to for a peer that sends no detail. Every
 * status of ours should carry its own reason, so this is logged: it names a handler to fix.
 */
export function withErrorDetail(st: PartialStatusObject, log: Logger, method: string): PartialStatusObject {
  const out = withCodeNameDetail(st, CLAWKER_ERROR_DOMAIN);
  if (out !== st) {
    log.warn(
      { method, code: codeName(st.code), event: "status_without_reason" },
      "error status without a reason",
    );
  }
  return out;
}

/** The first interceptor of every listener: UNKNOWN becomes INTERNAL, listener throws become INTERNAL. */
export function recoveryInterceptor(log: Logger): ServerInterceptor {
  return (method, next) => {
    const guard = (step: () => void): void => {
      try {
        step();
      } catch (err) {
        log.error({ err, method: method.path, event: "call_failed" }, "call failed");
        call.sendStatus(statusFor("internal"));
      }
    };
    const call: ServerInterceptingCall = new ServerInterceptingCall(next, {
      start: (startNext) => {
        startNext({
          onReceiveMetadata: (metadata, metadataNext) => guard(() => metadataNext(metadata)),
          onReceiveMessage: (message, messageNext) => guard(() => messageNext(message)),
          onReceiveHalfClose: (halfCloseNext) => guard(() => halfCloseNext()),
        });
      },
      sendStatus: (st, statusNext) => {
        if (st.code !== status.UNKNOWN) {
          statusNext(withErrorDetail(st, log, method.path));
          return;
        }
        // grpc-js's own text for a caught throw, or a code-less error's message: log, never send.
        log.error({ method: method.path, details: st.details, event: "handler_failed" }, "handler failed");
        statusNext(statusFor("internal"));
      },
    });
    return call;
  };
}

/** An error fit for the wire: INTERNAL with the fixed text and reason `internal`. */
function internalError(): StatusObject {
  return statusFor("internal");
}

function hasStatusCode(err: unknown): boolean {
  return typeof err === "object" && err !== null && Number.isInteger((err as { code?: unknown }).code);
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    typeof value === "object" && value !== null && typeof (value as { then?: unknown }).then === "function"
  );
}

type AnyHandler = (call: unknown, callback?: (...args: unknown[]) => void) => unknown;

/**
 * Wraps every handler of a service implementation: a throw, a rejected promise or an error
 * without a gRPC code becomes INTERNAL with the fixed text, logged with the error. Errors that
 * carry a numeric gRPC `code` are intentional and pass through unchanged.
 */
export function withRecovery<T extends UntypedServiceImplementation>(
  definition: ServiceDefinition,
  implementation: T,
  log: Logger,
): T {
  const wrapped: Record<string, AnyHandler> = {};
  for (const [name, handler] of Object.entries(implementation)) {
    const def = definition[name];
    const fn = handler as AnyHandler;
    if (def === undefined) {
      wrapped[name] = fn;
      continue;
    }
    const method = def.path;
    const fail = (err: unknown): void => {
      log.error({ err, method, event: "handler_failed" }, "handler failed");
    };
    if (!def.responseStream) {
      wrapped[name] = (call, callback) => {
        let answered = false;
        // grpc-js's sendUnaryData takes (error, value, trailer, flags): named, so an answer costs
        // no rest array and spread per call (issue 15: this runs on every unary call).
        const respond = (err: unknown, value?: unknown, trailer?: unknown, flags?: unknown): void => {
          if (answered) return;
          answered = true;
          if (err !== null && err !== undefined && !hasStatusCode(err)) {
            fail(err);
            callback?.(internalError());
            return;
          }
          callback?.(err, value, trailer, flags);
        };
        // A throw or a rejection is INTERNAL even with a code, answered unless the handler already
        // did. Spelled out in each branch: a shared closure would be built on every call (issue 15).
        try {
          const out = fn(call, respond);
          // Most handlers answer synchronously and return nothing: no rejection handler then.
          if (out !== undefined && isThenable(out))
            out.then(undefined, (err: unknown) => {
              fail(err);
              if (answered) return;
              answered = true;
              callback?.(internalError());
            });
        } catch (err) {
          fail(err);
          if (!answered) {
            answered = true;
            callback?.(internalError());
          }
        }
      };
    } else {
      wrapped[name] = (call) => {
        const stream = call as NodeJS.EventEmitter & { writableEnded?: boolean; destroyed?: boolean };
        const onError = (err: unknown): void => {
          fail(err);
          // grpc-js turns an 'error' event on a server stream into the call's status.
          if (stream.writableEnded !== true && stream.destroyed !== true)
            stream.emit("error", internalError());
        };
        try {
          const out = fn(call);
          if (isThenable(out)) out.then(undefined, onError);
        } catch (err) {
          onError(err);
        }
      };
    }
  }
  return wrapped as T;
}
