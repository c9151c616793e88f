// The error detail every error status of ours carries (API.md §6): a google.rpc.Status in the
// `grpc-status-details-bin` trailer, whose code and message equal the gRPC status and whose details
// hold one Any of type google.rpc.ErrorInfo (stable reason, domain, metadata). Both sides use this
// module: servers attach the detail, clients read it. The bytes are made and read by the code
// generated from Google's own .proto files, never by hand.
import { Metadata, status } from "@grpc/grpc-js";
import { ErrorInfo } from "./gen/google/rpc/error_details.js";
import { Status } from "./gen/google/rpc/status.js";

/** The trailer that holds the serialized google.rpc.Status (the gRPC convention). */
export const STATUS_DETAILS_KEY = "grpc-status-details-bin";

/** The Any type URL of google.rpc.ErrorInfo. */
export const ERROR_INFO_TYPE_URL = "type.googleapis.com/google.rpc.ErrorInfo";

/** The ErrorInfo domain of our errors (API.md §6). */
export const CLAWKER_ERROR_DOMAIN = "clawker.dev";

/** The ErrorInfo domain of firewall errors: upstream's, kept (API.md §6). */
export const FIREWALL_ERROR_DOMAIN = "firewall.clawker.dev";

/** What a google.rpc.ErrorInfo says: the stable reason, its domain and extra key/value facts. */
export interface ErrorDetail {
  readonly reason: string;
  readonly domain: string;
  readonly metadata: Readonly<Record<string, string>>;
}

/** A serialized google.rpc.Status with `code`, `message` and one ErrorInfo in its details. */
export function encodeStatusDetails(code: status, message: string, detail: ErrorDetail): Buffer {
  const info = ErrorInfo.encode({
    reason: detail.reason,
    domain: detail.domain,
    metadata: { ...detail.metadata },
  }).finish();
  const bytes = Status.encode({
    code,
    message,
    details: [{ typeUrl: ERROR_INFO_TYPE_URL, value: Buffer.from(info) }],
  }).finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Fresh trailers carrying the detail (`grpc-status-details-bin`), for a status object. */
export function statusDetailsMetadata(code: status, message: string, detail: ErrorDetail): Metadata {
  return detailsMetadata(encodeStatusDetails(code, message, detail));
}

/** Fresh trailers carrying already encoded details (a fixed status encodes once). */
export function detailsMetadata(details: Buffer): Metadata {
  const metadata = new Metadata();
  metadata.set(STATUS_DETAILS_KEY, details);
  return metadata;
}

/**
 * The ErrorInfo in serialized status details, or undefined when the bytes are not a Status, hold no
 * ErrorInfo with a reason, or describe another code than the call ended with (`code`): a detail
 * that contradicts the status is not believed.
 */
export function decodeStatusDetails(bytes: Uint8Array, code: status): ErrorDetail | undefined {
  try {
    const st = Status.decode(bytes);
    if (st.code !== (code as number)) return undefined;
    for (const any of st.details) {
      if (any.typeUrl !== ERROR_INFO_TYPE_URL) continue;
      const info = ErrorInfo.decode(any.value);
      if (info.reason === "") continue;
      return { reason: info.reason, domain: info.domain, metadata: info.metadata };
    }
  } catch {
    // Not a google.rpc.Status: a peer's garbage is no reason.
  }
  return undefined;
}

/**
 * The ErrorInfo of a failed call: reads `code` and the `grpc-status-details-bin` trailer of a
 * grpc-js ServiceError (or any status object with Metadata). Undefined when there is none.
 */
export function errorDetailOf(err: unknown): ErrorDetail | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const { code, metadata } = err as { code?: unknown; metadata?: unknown };
  if (typeof code !== "number" || code === (status.OK as number) || !(metadata instanceof Metadata))
    return undefined;
  const value = metadata.get(STATUS_DETAILS_KEY)[0];
  if (!Buffer.isBuffer(value)) return undefined;
  return decodeStatusDetails(value, code);
}

/** Whether trailers already carry status details. */
export function hasStatusDetails(metadata: Metadata | null | undefined): boolean {
  return metadata instanceof Metadata && metadata.get(STATUS_DETAILS_KEY).length > 0;
}

/** A status as a server sends it (grpc-js's PartialStatusObject, which it does not export). */
export interface OutgoingStatus {
  readonly code: status;
  readonly details: string;
  readonly metadata?: Metadata | null | undefined;
}

/**
 * `st` itself when it is OK or already carries status details; otherwise a copy whose trailers
 * carry an ErrorInfo in `domain` with the code's name as the reason (`not_found`): the reason of
 * last resort for a status sent without one (callers log that, it names a handler to fix).
 */
export function withCodeNameDetail<S extends OutgoingStatus>(st: S, domain: string): S {
  if (st.code === status.OK || hasStatusDetails(st.metadata)) return st;
  const metadata = st.metadata?.clone() ?? new Metadata();
  metadata.set(
    STATUS_DETAILS_KEY,
    encodeStatusDetails(st.code, st.details, { reason: codeName(st.code), domain, metadata: {} }),
  );
  return { ...st, metadata };
}

/** The lowercase name of a status code (`NOT_FOUND` -> `not_found`): the reason of last resort. */
export function codeName(code: status): string {
  return (status[code] as string | undefined)?.toLowerCase() ?? "unknown";
}
