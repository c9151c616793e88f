// The codec of clawker.clawkerd.v1.Response, for clawkerd's Session and the control plane's
// ExecAgent relay (which so re-encodes only the fields it decoded: an agent's unknown fields never
// reach the CLI). OutputChunk responses are the hot path (100 MiB of `cat` is 1,600 of them): the
// generated codec copies the payload three times (writer chunks, finish, Buffer.from) and its
// garbage dominated a CPU profile, so they are encoded here with one copy. The grpc-js serializer
// encodes them into one reused buffer, not a new one: grpc-js copies what a serializer returns into
// its own length-prefixed frame before write() returns, and a buffer allocated per message
// was external memory that made V8 run a full GC every few MiB of output. Every other response
// goes through the generated codec. The control plane decodes OutputChunks without a copy (their
// data a view of the message buffer grpc-js allocated), anything else with the generated decoder.
// The byte layout is proto3's (field 1 command_id, field 4 OutputChunk{1 data});
// packages/clawkerd/src/response-codec.test.ts and response-codec.test.ts here check it against
// the generated encoder and decoder.
import { makeGenericClientConstructor } from "@grpc/grpc-js";
import * as clawkerd from "./gen/clawker/clawkerd/v1/clawkerd.js";

const TAG_COMMAND_ID = (1 << 3) | 2;
const TAG_OUTPUT = (4 << 3) | 2;
const TAG_DATA = (1 << 3) | 2;

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

function writeVarint(buf: Buffer, at: number, n: number): number {
  while (n >= 0x80) {
    buf[at++] = (n & 0x7f) | 0x80;
    n = Math.floor(n / 128);
  }
  buf[at++] = n;
  return at;
}

/** Encodes one Response (proto3 wire format) into a buffer of its own. */
export function encodeClawkerdResponse(r: clawkerd.Response): Buffer {
  return encode(r, (size) => Buffer.allocUnsafe(size));
}

/** The reused buffer of serializeResponse: room for a Session chunk (64 KiB) and its id. */
const SCRATCH_BYTES = (64 << 10) + 1024;
const scratch = Buffer.allocUnsafeSlow(SCRATCH_BYTES);

/**
 * Encodes one Response for grpc-js: an OutputChunk of up to 64 KiB (and its id) into a buffer that
 * the next call reuses, so the result is valid only until then (grpc-js copies it into its frame
 * at once). A larger one gets a buffer of its own.
 */
export function serializeClawkerdResponse(r: clawkerd.Response): Buffer {
  return encode(r, (size) => (size <= SCRATCH_BYTES ? scratch.subarray(0, size) : Buffer.allocUnsafe(size)));
}

function encode(r: clawkerd.Response, alloc: (size: number) => Buffer): Buffer {
  if (r.payload?.$case !== "output") return Buffer.from(clawkerd.Response.encode(r).finish());
  const data = r.payload.value.data;
  const idLen = Buffer.byteLength(r.commandId, "utf8");
  // proto3 omits empty scalars: no command_id field for "", no data field for empty bytes.
  const inner = data.length === 0 ? 0 : 1 + varintSize(data.length) + data.length;
  const size = (idLen === 0 ? 0 : 1 + varintSize(idLen) + idLen) + 1 + varintSize(inner) + inner;
  const buf = alloc(size);
  let at = 0;
  if (idLen > 0) {
    buf[at++] = TAG_COMMAND_ID;
    at = writeVarint(buf, at, idLen);
    at += buf.write(r.commandId, at, "utf8");
  }
  buf[at++] = TAG_OUTPUT;
  at = writeVarint(buf, at, inner);
  if (data.length > 0) {
    buf[at++] = TAG_DATA;
    at = writeVarint(buf, at, data.length);
    data.copy(buf, at);
  }
  return buf;
}

/**
 * Decodes one Response from grpc-js. A plain OutputChunk (command_id and data, each at most once,
 * nothing else) is read without copying: its data is a view of `buf`, which grpc-js allocates for
 * each message. Anything else, unknown fields included, goes to the generated decoder, which drops
 * unknown fields; malformed input throws as it does there.
 */
export function deserializeClawkerdResponse(buf: Buffer): clawkerd.Response {
  return decodeOutput(buf) ?? clawkerd.Response.decode(buf);
}

// A varint at `at` as [value, next offset]; undefined when truncated or over 2^35.
function readVarint(buf: Buffer, at: number): [number, number] | undefined {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 5 && at < buf.length; i++) {
    const b = buf[at++]!;
    value += (b & 0x7f) * scale;
    if (b < 0x80) return [value, at];
    scale *= 128;
  }
  return undefined;
}

function decodeOutput(buf: Buffer): clawkerd.Response | undefined {
  let at = 0;
  let commandId: string | undefined;
  let data: Buffer | undefined;
  while (at < buf.length) {
    const tag = buf[at++];
    if (tag !== TAG_COMMAND_ID && tag !== TAG_OUTPUT) return undefined;
    const len = readVarint(buf, at);
    if (len === undefined || len[1] + len[0] > buf.length) return undefined;
    const [size, from] = len;
    at = from + size;
    if (tag === TAG_COMMAND_ID) {
      if (commandId !== undefined) return undefined;
      commandId = buf.toString("utf8", from, at);
      continue;
    }
    if (data !== undefined) return undefined;
    // OutputChunk: at most one data field and nothing else.
    if (size === 0) {
      data = Buffer.alloc(0);
      continue;
    }
    if (buf[from] !== TAG_DATA) return undefined;
    const inner = readVarint(buf, from + 1);
    if (inner === undefined || inner[1] + inner[0] !== at) return undefined;
    data = buf.subarray(inner[1], at);
  }
  if (data === undefined) return undefined;
  return { commandId: commandId ?? "", payload: { $case: "output", value: { data } } };
}

/**
 * ClawkerdService's client with deserializeClawkerdResponse: an OutputChunk's data is a view of the
 * message grpc-js received, not a copy (the generated decoder copies every chunk). The control
 * plane's Dialer dials clawkerd with it, and so does the tests' Session client.
 */
export const ClawkerdClientFast = makeGenericClientConstructor(
  {
    session: { ...clawkerd.ClawkerdServiceService.session, responseDeserialize: deserializeClawkerdResponse },
  },
  "clawker.clawkerd.v1.ClawkerdService",
) as unknown as typeof clawkerd.ClawkerdServiceClient;
