// google.rpc.ErrorInfo on error statuses (API.md §6): every error of our own services carries our
// stable `reason` and the domain `clawker.dev` in `grpc-status-details-bin` (a serialized
// google.rpc.Status whose details hold one google.protobuf.Any of ErrorInfo), so clients decide
// on the reason, never on the message text. Encoded by hand: three tiny messages, no new codegen.
import { Metadata, type StatusObject, type status as GrpcStatus } from "@grpc/grpc-js";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";

/** The ErrorInfo domain of our own services' errors. */
export const CLAWKER_ERROR_DOMAIN = "clawker.dev";
/** The trailer grpc carries the rich status in. */
export const STATUS_DETAILS_KEY = "grpc-status-details-bin";
const ERROR_INFO_TYPE_URL = "type.googleapis.com/google.rpc.ErrorInfo";

/** A grpc-js status object with an ErrorInfo detail: pass it to a callback or `emit("error")`. */
export function statusWithReason(
  code: GrpcStatus,
  details: string,
  reason: string,
  domain: string = CLAWKER_ERROR_DOMAIN,
): Partial<StatusObject> & { code: GrpcStatus; details: string } {
  const info = new BinaryWriter();
  info.tag(1, WireType.LengthDelimited).string(reason);
  info.tag(2, WireType.LengthDelimited).string(domain);
  const any = new BinaryWriter();
  any.tag(1, WireType.LengthDelimited).string(ERROR_INFO_TYPE_URL);
  any.tag(2, WireType.LengthDelimited).bytes(info.finish());
  const st = new BinaryWriter();
  // proto3 leaves a zero code (OK) off the wire.
  if (Number(code) !== 0) st.tag(1, WireType.Varint).int32(code);
  st.tag(2, WireType.LengthDelimited).string(details);
  st.tag(3, WireType.LengthDelimited).bytes(any.finish());
  const metadata = new Metadata();
  metadata.set(STATUS_DETAILS_KEY, Buffer.from(st.finish()));
  return { code, details, metadata };
}

/** The ErrorInfo reason (and domain) of an error status's metadata, if it carries one. */
export function errorInfoOf(metadata: Metadata | undefined): { reason: string; domain: string } | undefined {
  const raw = metadata?.get(STATUS_DETAILS_KEY)[0];
  if (!(raw instanceof Buffer)) return undefined;
  try {
    const st = new BinaryReader(raw);
    while (st.pos < st.len) {
      const [field, wire] = st.tag();
      if (field !== 3) {
        st.skip(wire);
        continue;
      }
      const any = new BinaryReader(st.bytes());
      let typeUrl = "";
      let value: Uint8Array | undefined;
      while (any.pos < any.len) {
        const [f, w] = any.tag();
        if (f === 1) typeUrl = any.string();
        else if (f === 2) value = any.bytes();
        else any.skip(w);
      }
      if (typeUrl !== ERROR_INFO_TYPE_URL || value === undefined) continue;
      const info = new BinaryReader(value);
      let reason = "";
      let domain = "";
      while (info.pos < info.len) {
        const [f, w] = info.tag();
        if (f === 1) reason = info.string();
        else if (f === 2) domain = info.string();
        else info.skip(w);
      }
      return { reason, domain };
    }
  } catch {
    return undefined;
  }
  return undefined;
}
