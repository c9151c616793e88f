// The ready gate: until the control plane is ready, non-exempt calls on the admin listener get
// FAILED_PRECONDITION `control plane is starting up` (API.md §5) with reason `starting_up`.
// Readiness is terminal.
import { ADMIN_ERRORS, admin } from "@clawker/proto";
import { ServerInterceptingCall, type ServerInterceptor } from "@grpc/grpc-js";
import type { GateCall } from "../server/call-guard.js";

/** The ready gate's fixed text (API.md §5). */
export const STARTING_UP_MESSAGE = "control plane is starting up";

const startingUp = ADMIN_ERRORS.fixed("starting_up", STARTING_UP_MESSAGE);

/** Methods answered before ready: the clock check and the start-up failure stream. */
export const READY_GATE_EXEMPT: readonly string[] = [
  admin.AdminServiceService.getSystemTime.path,
  admin.AdminServiceService.watchSos.path,
];

/** Holds the ready flag and refuses calls while it is down. */
export class ReadyGate {
  #ready = false;
  readonly #exempt: ReadonlySet<string>;

  constructor(exempt: readonly string[] = READY_GATE_EXEMPT) {
    this.#exempt = new Set(exempt);
  }

  /** True once `setReady` was called. */
  get isReady(): boolean {
    return this.#ready;
  }

  /** Opens the gate for good. */
  setReady(): void {
    this.#ready = true;
  }

  /**
   * The gate as the call guard runs it (`MetadataGate`, server/call-guard.ts), before auth: the
   * daemon's form, with no grpc-js interceptor layer of its own.
   */
  readonly gate = (path: string, _metadata: unknown, call: GateCall): void => {
    if (this.#ready || this.#exempt.has(path)) call.admit();
    else call.refuse(startingUp());
  };

  /** The grpc-js server interceptor; list it after recovery and before auth. */
  readonly interceptor: ServerInterceptor = (method, next) => {
    // Open: the call goes on unwrapped. grpc-js chains interceptors by what each returns, so
    // handing back `next` removes this layer (its objects and closures) from every call.
    if (this.#ready || this.#exempt.has(method.path)) return next as ServerInterceptingCall;
    const call: ServerInterceptingCall = new ServerInterceptingCall(next, {
      start: (startNext) => {
        startNext({
          onReceiveMetadata: (metadata, metadataNext) => {
            // Re-check at metadata time: the gate may have opened since the call began.
            if (this.#ready) metadataNext(metadata);
            else call.sendStatus(startingUp());
          },
        });
      },
    });
    return call;
  };
}
