// The one error shape: ClawkerError (a stable `reason`, optional metadata) that every service's
// errors extend, and ErrorTable, one boundary's exhaustive reason -> gRPC code table in one ErrorInfo
// domain, which turns a reason into the wire status with its ErrorInfo detail (API.md §5, §6).
import type { status, StatusObject } from "@grpc/grpc-js";
import { detailsMetadata, encodeStatusDetails, statusDetailsMetadata } from "./status-details.js";

/** Options of a ClawkerError. */
export interface ClawkerErrorOptions extends ErrorOptions {
  /**
   * Key/value facts that go into the ErrorInfo's metadata on the wire: only what the caller may
   * see (a field name, a rule key), never internal detail.
   */
  readonly metadata?: Readonly<Record<string, string>>;
}

/** An error with a stable, machine-readable `reason`; its message is what a caller may read. */
export class ClawkerError<R extends string = string> extends Error {
  override readonly name: string = "ClawkerError";
  /** The stable reason: logs, tests and clients decide on it, never on the message. */
  readonly reason: R;
  /** Facts for the caller's ErrorInfo metadata (empty unless set). */
  readonly metadata: Readonly<Record<string, string>>;

  constructor(reason: R, message: string, options?: ClawkerErrorOptions) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.reason = reason;
    this.metadata = options?.metadata ?? {};
  }
}

/**
 * One service boundary's error contract: the gRPC code of every reason (typed as
 * `Record<R, status>`, so a reason without a code does not compile) and the ErrorInfo domain its
 * statuses carry. The domain is a parameter, so the firewall's table uses upstream's
 * `firewall.clawker.dev` with the same code.
 */
export class ErrorTable<R extends string> {
  /** The ErrorInfo domain of this table's reasons. */
  readonly domain: string;
  /** Every reason's gRPC code. */
  readonly codes: Readonly<Record<R, status>>;

  constructor(domain: string, codes: Readonly<Record<R, status>>) {
    this.domain = domain;
    this.codes = codes;
  }

  /** The reasons of this table. */
  get reasons(): readonly R[] {
    return Object.keys(this.codes) as R[];
  }

  /** The wire status for `reason`: its code, `message` as the text, ErrorInfo in the trailers. */
  status(reason: R, message: string, metadata: Readonly<Record<string, string>> = {}): StatusObject {
    const code = this.codes[reason];
    return {
      code,
      details: message,
      metadata: statusDetailsMetadata(code, message, { reason, domain: this.domain, metadata }),
    };
  }

  /** The wire status for an error of this table: its reason, message and metadata. */
  statusOf(err: ClawkerError<R>): StatusObject {
    return this.status(err.reason, err.message, err.metadata);
  }

  /**
   * A maker of the status for a reason with a fixed text, encoded once: refusals answered at flood
   * rates (auth, the call guard) then cost one Metadata per call.
   */
  fixed(reason: R, message: string): () => StatusObject {
    const code = this.codes[reason];
    const details = encodeStatusDetails(code, message, { reason, domain: this.domain, metadata: {} });
    return () => ({ code, details: message, metadata: detailsMetadata(details) });
  }
}
