// DNS messages on the gate's hot path, by hand: a strict query parser (RFC 1035 §4.1, EDNS per
// RFC 6891) and the few responses the gate builds (A answers, empty answers, errors with an
// Extended DNS Error, RFC 8914). Upstream responses are decoded with dns-packet (upstream.ts).

/** Response codes the gate sends (BADVERS is extended: its upper bits travel in the OPT record). */
export const RCODE = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
  BADVERS: 16,
} as const;

/** The name of a response code, as decisions and logs spell it. */
export type RcodeName = keyof typeof RCODE;

/** Record types and the class the gate knows. */
export const QTYPE = { A: 1, CNAME: 5, AAAA: 28, OPT: 41 } as const;
/** The Internet class. */
export const CLASS_IN = 1;

/** RFC 8914 INFO-CODEs the gate uses. */
export const EDE_CODE = { BLOCKED: 15, PROHIBITED: 18 } as const;
/** The EDNS option code of an Extended DNS Error (RFC 8914 §2). */
export const OPTION_EDE = 15;

/** A UDP query without EDNS may be at most 512 bytes (RFC 1035 §2.3.4). */
export const MAX_QUERY_PLAIN = 512;
/** Any query, with EDNS or over TCP, may be at most 4096 bytes: real ones are under 300. */
export const MAX_QUERY_EDNS = 4_096;
/** The UDP payload size the gate advertises and sends up to (DNS Flag Day 2020: no fragments). */
export const GATE_UDP_PAYLOAD = 1_232;

/** The EDNS part of a query. */
export interface Edns {
  /** The requester's UDP payload size, at least 512 (RFC 6891 §6.2.5). */
  readonly udpSize: number;
  readonly version: number;
}

/** A query that parsed: one question, an optional OPT record, nothing else. */
export interface Query {
  readonly id: number;
  /** Recursion desired and checking disabled, echoed in the response. */
  readonly rd: boolean;
  readonly cd: boolean;
  /** Lowercase, without the root dot; "" for the root. */
  readonly name: string;
  /**
   * True when every label is letters, digits, `-` and `_` only. Other bytes (a dot or a space
   * inside a label, anything non-ASCII) are legal DNS but no rule can name them.
   */
  readonly isPlainName: boolean;
  readonly qtype: number;
  readonly qclass: number;
  /** The query's own bytes; the response copies its question (the client's letter case). */
  readonly raw: Buffer;
  /** Offset just past the question. */
  readonly questionEnd: number;
  readonly edns: Edns | undefined;
}

/** What parsing a message gave: a query, an error to answer with, or nothing to answer at all. */
export type ParseResult =
  | { readonly kind: "query"; readonly query: Query }
  | {
      readonly kind: "error";
      readonly rcode: typeof RCODE.FORMERR | typeof RCODE.NOTIMP;
      readonly id: number;
      readonly opcode: number;
      readonly rd: boolean;
      readonly reason: string;
    }
  | { readonly kind: "drop"; readonly reason: string };

const PLAIN_LABEL = /^[a-z0-9_-]+$/;

/**
 * Parses a query strictly: a response (QR set) or a message shorter than a header is dropped;
 * an opcode other than QUERY is NOTIMP; anything but exactly one question and at most one OPT
 * record, a compression pointer in the question, a name over 255 octets, trailing bytes, or a
 * size over 512 bytes without EDNS (4096 with) is FORMERR.
 */
export function parseQuery(buf: Buffer): ParseResult {
  if (buf.length < 12) return { kind: "drop", reason: "shorter than a header" };
  const id = buf.readUInt16BE(0);
  const flags = buf.readUInt16BE(2);
  // A response sent to us is never answered: answering could start a loop between two servers.
  if ((flags & 0x8000) !== 0) return { kind: "drop", reason: "a response, not a query" };
  const opcode = (flags >> 11) & 0xf;
  const rd = (flags & 0x0100) !== 0;
  const error = (rcode: typeof RCODE.FORMERR | typeof RCODE.NOTIMP, reason: string): ParseResult => ({
    kind: "error",
    rcode,
    id,
    opcode,
    rd,
    reason,
  });
  if (opcode !== 0) return error(RCODE.NOTIMP, `opcode ${opcode} is not QUERY`);
  if (buf.length > MAX_QUERY_EDNS) return error(RCODE.FORMERR, `query of ${buf.length} bytes`);
  const qd = buf.readUInt16BE(4);
  const an = buf.readUInt16BE(6);
  const ns = buf.readUInt16BE(8);
  const ar = buf.readUInt16BE(10);
  if (qd !== 1) return error(RCODE.FORMERR, `${qd} questions`);
  if (an !== 0 || ns !== 0) return error(RCODE.FORMERR, "answer or authority records in a query");
  if (ar > 1) return error(RCODE.FORMERR, `${ar} additional records`);
  // Only an OPT record can make a query longer than 512 bytes (RFC 6891 §6.2.5 sizes).
  if (ar === 0 && buf.length > MAX_QUERY_PLAIN) {
    return error(RCODE.FORMERR, `query of ${buf.length} bytes without EDNS`);
  }

  let off = 12;
  let wire = 1;
  let name = "";
  let isPlainName = true;
  for (;;) {
    if (off >= buf.length) return error(RCODE.FORMERR, "question name runs past the message");
    const len = buf[off]!;
    if (len === 0) {
      off++;
      break;
    }
    // Pointers cannot point anywhere useful in the first name of a message; extended labels are obsolete.
    if ((len & 0xc0) !== 0) return error(RCODE.FORMERR, "compressed or extended label in the question");
    wire += len + 1;
    if (wire > 255) return error(RCODE.FORMERR, "question name longer than 255 octets");
    if (off + 1 + len > buf.length) return error(RCODE.FORMERR, "question name runs past the message");
    // latin1 maps each byte to one character, so a byte that is not plain cannot hide in the text.
    const label = buf.toString("latin1", off + 1, off + 1 + len).toLowerCase();
    if (!PLAIN_LABEL.test(label)) isPlainName = false;
    name = name === "" ? label : `${name}.${label}`;
    off += len + 1;
  }
  if (off + 4 > buf.length) return error(RCODE.FORMERR, "question runs past the message");
  const qtype = buf.readUInt16BE(off);
  const qclass = buf.readUInt16BE(off + 2);
  off += 4;
  const questionEnd = off;

  let edns: Edns | undefined;
  if (ar === 1) {
    // The one additional record a query may carry here is OPT, owned by the root (RFC 6891 §6.1.1).
    if (off + 11 > buf.length) return error(RCODE.FORMERR, "additional record runs past the message");
    if (buf[off] !== 0 || buf.readUInt16BE(off + 1) !== QTYPE.OPT) {
      return error(RCODE.FORMERR, "the additional record is not an OPT record");
    }
    const udpSize = Math.max(512, buf.readUInt16BE(off + 3));
    const version = buf[off + 6]!;
    const rdlen = buf.readUInt16BE(off + 9);
    off += 11 + rdlen;
    if (off > buf.length) return error(RCODE.FORMERR, "OPT record runs past the message");
    edns = { udpSize, version };
  }
  if (off !== buf.length) return error(RCODE.FORMERR, "trailing bytes after the query");
  return {
    kind: "query",
    query: {
      id,
      rd,
      cd: (flags & 0x0010) !== 0,
      name,
      isPlainName,
      qtype,
      qclass,
      raw: buf,
      questionEnd,
      edns,
    },
  };
}

/** An A record of an answer: the address as a 32-bit number and its TTL in seconds. */
export interface AnswerRecord {
  readonly address: number;
  readonly ttl: number;
}

/** What a response carries besides the question. */
export interface ResponseSpec {
  readonly rcode: number;
  /** A records owned by the question's name. */
  readonly answers?: readonly AnswerRecord[];
  /** An Extended DNS Error; sent only when the query had EDNS (RFC 6891 §7: no OPT otherwise). */
  readonly ede?: { readonly code: number; readonly text: string };
}

/** The largest response a UDP client may receive: its EDNS size or 512, at most GATE_UDP_PAYLOAD. */
export function udpLimit(query: Query): number {
  return query.edns === undefined ? MAX_QUERY_PLAIN : Math.min(query.edns.udpSize, GATE_UDP_PAYLOAD);
}

/**
 * Builds a response to a parsed query: the question copied, the A records, and an OPT record when
 * the query had one (with the EDE, if any). Over `maxSize` the answers are left out and TC is set,
 * so the client asks again over TCP.
 */
export function buildResponse(query: Query, spec: ResponseSpec, maxSize: number): Buffer {
  const question = query.questionEnd - 12;
  const answers = spec.answers ?? [];
  const edeText =
    spec.ede !== undefined && query.edns !== undefined ? Buffer.from(spec.ede.text, "utf8") : undefined;
  const optLength = query.edns === undefined ? 0 : 11 + (edeText === undefined ? 0 : 6 + edeText.length);
  let size = 12 + question + answers.length * 16 + optLength;
  let truncated = false;
  let count = answers.length;
  if (size > maxSize) {
    truncated = true;
    count = 0;
    size = 12 + question + optLength;
  }
  const out = Buffer.allocUnsafe(size);
  const rcode = spec.rcode;
  let flags = 0x8000 | 0x0080 | (rcode & 0xf);
  if (query.rd) flags |= 0x0100;
  if (query.cd) flags |= 0x0010;
  if (truncated) flags |= 0x0200;
  out.writeUInt16BE(query.id, 0);
  out.writeUInt16BE(flags, 2);
  out.writeUInt16BE(1, 4);
  out.writeUInt16BE(count, 6);
  out.writeUInt16BE(0, 8);
  out.writeUInt16BE(query.edns === undefined ? 0 : 1, 10);
  query.raw.copy(out, 12, 12, query.questionEnd);
  let off = 12 + question;
  for (let i = 0; i < count; i++) {
    const a = answers[i]!;
    out.writeUInt16BE(0xc00c, off); // pointer to the question's name at offset 12
    out.writeUInt16BE(QTYPE.A, off + 2);
    out.writeUInt16BE(CLASS_IN, off + 4);
    out.writeUInt32BE(a.ttl, off + 6);
    out.writeUInt16BE(4, off + 10);
    out.writeUInt32BE(a.address, off + 12);
    off += 16;
  }
  if (query.edns !== undefined) {
    out[off] = 0;
    out.writeUInt16BE(QTYPE.OPT, off + 1);
    out.writeUInt16BE(GATE_UDP_PAYLOAD, off + 3);
    out[off + 5] = rcode >> 4; // extended RCODE: the upper 8 bits (BADVERS = 16 -> 1)
    out[off + 6] = 0; // EDNS version 0
    out.writeUInt16BE(0, off + 7); // flags: DO clear, the gate does not validate
    const rdlen = edeText === undefined ? 0 : 6 + edeText.length;
    out.writeUInt16BE(rdlen, off + 9);
    if (edeText !== undefined) {
      out.writeUInt16BE(OPTION_EDE, off + 11);
      out.writeUInt16BE(2 + edeText.length, off + 13);
      out.writeUInt16BE(spec.ede!.code, off + 15);
      edeText.copy(out, off + 17);
    }
  }
  return out;
}

/** A header-only response (no question) for a query too broken to echo: FORMERR or NOTIMP. */
export function buildHeaderResponse(id: number, opcode: number, rd: boolean, rcode: number): Buffer {
  const out = Buffer.alloc(12);
  out.writeUInt16BE(id, 0);
  out.writeUInt16BE(0x8000 | (opcode << 11) | (rd ? 0x0100 : 0) | 0x0080 | (rcode & 0xf), 2);
  return out;
}

/** A dotted IPv4 address as a 32-bit number. */
export function ipv4ToNumber(address: string): number {
  let n = 0;
  for (const part of address.split(".")) n = n * 256 + Number(part);
  return n;
}

/** The name of a record type for decisions: `A`, `AAAA`, or `TYPE<n>` (RFC 3597 §5). */
export function typeName(qtype: number): string {
  return TYPE_NAMES.get(qtype) ?? `TYPE${qtype}`;
}

const TYPE_NAMES: ReadonlyMap<number, string> = new Map([
  [1, "A"],
  [2, "NS"],
  [5, "CNAME"],
  [6, "SOA"],
  [12, "PTR"],
  [15, "MX"],
  [16, "TXT"],
  [28, "AAAA"],
  [33, "SRV"],
  [64, "SVCB"],
  [65, "HTTPS"],
  [255, "ANY"],
]);
