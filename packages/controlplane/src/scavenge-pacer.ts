// The scavenge pacer: one young-generation collection (a scavenge) after every
// SCAVENGE_EVERY_BYTES of agent output the daemon takes in on its Sessions (issue 15).
//
// Output streams through the daemon in Buffers whose memory is outside V8's heap: each HTTP/2
// read, grpc-js's copy of each message, and for ExecAgent grpc-js's frame of each message to the
// CLI, two to three bytes of Buffers per byte of output. They die at once, but V8 frees them only
// in a collection. Streaming allocates little on the heap itself, and the daemon's young
// generation is sized for 64 authorized calls in flight (semi-spaces of up to 32 MiB on these
// hosts), so scavenges are rare while output flows. V8 counts the dead Buffers as external memory
// and, once 64 MiB of it has come since the last full collection, starts a full one ("external
// memory pressure"): ~7 mark-compacts per 100 MiB relayed, measured, with 40 % of the relaying
// process's CPU samples in marking. A scavenge frees dead young Buffers too, and costs only what the
// young generation holds alive. One per 8 MiB of output (at most ~24 MiB of Buffers) keeps the
// external memory below that trigger (README.md, "Memory").
import type { Logger } from "./logging.js";
import { acquireGcFunction, type GcFunction } from "./v8-gc.js";

/** Output taken in between two scavenges. */
export const SCAVENGE_EVERY_BYTES = 8 << 20;

/** Options of a ScavengePacer. */
export interface ScavengePacerOptions {
  readonly log: Logger;
  /** Default SCAVENGE_EVERY_BYTES. */
  readonly everyBytes?: number;
  /** Runs one scavenge; default V8's gc function (v8-gc.ts) with `{ type: "minor" }`. */
  readonly scavenge?: () => void;
}

/** Counts streamed output bytes and runs a scavenge each time `everyBytes` more have come. */
export class ScavengePacer {
  readonly #log: Logger;
  readonly #everyBytes: number;
  #scavenge: (() => void) | undefined;
  #pending = 0;
  #scavenges = 0;
  #isDisabled = false;

  constructor(options: ScavengePacerOptions) {
    this.#log = options.log;
    this.#everyBytes = options.everyBytes ?? SCAVENGE_EVERY_BYTES;
    if (!(Number.isSafeInteger(this.#everyBytes) && this.#everyBytes > 0)) {
      throw new RangeError(`everyBytes must be a positive integer, got ${this.#everyBytes}`);
    }
    this.#scavenge = options.scavenge;
  }

  /** Scavenges run so far. */
  get scavenges(): number {
    return this.#scavenges;
  }

  /** Told the size of each output chunk as it arrives (AgentSession's `onOutput`). */
  readonly account = (bytes: number): void => {
    if (this.#isDisabled) return;
    this.#pending += bytes;
    if (this.#pending < this.#everyBytes) return;
    this.#pending = 0;
    try {
      this.#scavenge ??= minorOf(acquireGcFunction());
      this.#scavenge();
      this.#scavenges++;
    } catch (err) {
      // A CPU optimisation never takes a Session down: V8 collects as it would without it.
      this.#isDisabled = true;
      this.#log.warn({ err, event: "scavenge_pacer_unavailable" }, "scavenge pacer unavailable");
    }
  };
}

function minorOf(gc: GcFunction): () => void {
  return () => gc({ type: "minor" });
}
