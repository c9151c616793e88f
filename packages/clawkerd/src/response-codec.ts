// ClawkerdService with @clawker/proto's one-copy Response serializer (response-codec.ts there):
// OutputChunks, the Session's hot path, are encoded into one reused buffer.
import { clawkerd, encodeClawkerdResponse, serializeClawkerdResponse } from "@clawker/proto";

/** Encodes one Response into a buffer of its own. */
export const encodeResponse = encodeClawkerdResponse;
/** Encodes one Response for grpc-js into a reused buffer (valid until the next call). */
export const serializeResponse = serializeClawkerdResponse;

/** ClawkerdService with the fast response serializer (same path, flags and request codec). */
export const ClawkerdServiceFast = {
  session: { ...clawkerd.ClawkerdServiceService.session, responseSerialize: serializeResponse },
} as const;
