// Reads a failed call's ErrorInfo the way any gRPC client would: the `grpc-status-details-bin`
// trailer decoded with the code generated from Google's status.proto and error_details.proto (not
// with @clawker/proto's own reader), checking that the google.rpc.Status repeats the gRPC status.
import assert from "node:assert/strict";
import type { Metadata } from "@grpc/grpc-js";
import { ErrorInfo, RpcStatus } from "@clawker/proto";

/** A status as a client sees it: a grpc-js ServiceError or the call's `status` event. */
export interface WireStatus {
  readonly code: number;
  readonly details: string;
  readonly metadata?: Metadata | null | undefined;
}

/** What the detail said. */
export interface WireError {
  readonly code: number;
  readonly message: string;
  readonly reason: string;
  readonly domain: string;
  readonly metadata: Readonly<Record<string, string>>;
}

/**
 * Decodes the status's one ErrorInfo; fails the test when there is no detail, it is not a
 * google.rpc.Status, its code or message differ from the gRPC status, or it holds no ErrorInfo.
 */
export function wireError(st: WireStatus): WireError {
  const values = st.metadata?.get("grpc-status-details-bin") ?? [];
  assert.equal(values.length, 1, `one grpc-status-details-bin trailer (status ${st.code} ${st.details})`);
  const bytes = values[0];
  assert.ok(Buffer.isBuffer(bytes), "the trailer is binary");
  const decoded = RpcStatus.decode(bytes);
  assert.equal(decoded.code, st.code, "google.rpc.Status code equals the gRPC code");
  assert.equal(decoded.message, st.details, "google.rpc.Status message equals the gRPC message");
  const infos = decoded.details.filter((d) => d.typeUrl === "type.googleapis.com/google.rpc.ErrorInfo");
  assert.equal(infos.length, 1, "exactly one ErrorInfo");
  const info = ErrorInfo.decode(infos[0]!.value);
  return {
    code: st.code,
    message: st.details,
    reason: info.reason,
    domain: info.domain,
    metadata: info.metadata,
  };
}
