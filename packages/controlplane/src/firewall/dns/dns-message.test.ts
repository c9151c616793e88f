import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { decode, encode, type OptAnswer } from "dns-packet";
import {
  buildHeaderResponse,
  buildResponse,
  EDE_CODE,
  ipv4ToNumber,
  parseQuery,
  RCODE,
  type ParseResult,
  type Query,
} from "./dns-message.js";

function message(name: string, options: { type?: "A" | "AAAA"; edns?: boolean; id?: number } = {}): Buffer {
  return encode({
    type: "query",
    id: options.id ?? 4242,
    flags: 0x0100,
    questions: [{ type: options.type ?? "A", class: "IN", name }],
    ...(options.edns === false
      ? {}
      : {
          additionals: [
            {
              type: "OPT",
              name: ".",
              udpPayloadSize: 4096,
              extendedRcode: 0,
              ednsVersion: 0,
              flags: 0,
              flag_do: false,
              options: [],
            },
          ],
        }),
  });
}

function parsed(buf: Buffer): Query {
  const r = parseQuery(buf);
  if (r.kind !== "query") assert.fail(JSON.stringify(r));
  return r.query;
}

/** A header (id 7, RD) followed by `rest`, with the given counts. */
function raw(counts: [number, number, number, number], rest: number[], flags = 0x0100): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16BE(7, 0);
  h.writeUInt16BE(flags, 2);
  counts.forEach((c, i) => h.writeUInt16BE(c, 4 + i * 2));
  return Buffer.concat([h, Buffer.from(rest)]);
}

const question = [3, 0x61, 0x62, 0x63, 4, 0x74, 0x65, 0x73, 0x74, 0, 0, 1, 0, 1]; // abc.test A IN

describe("parseQuery", () => {
  test("a plain query: lowercase name, type, class, EDNS size", () => {
    const q = parsed(message("WWW.Example.TEST", { type: "AAAA" }));
    assert.equal(q.id, 4242);
    assert.equal(q.name, "www.example.test");
    assert.equal(q.isPlainName, true);
    assert.equal(q.qtype, 28);
    assert.equal(q.qclass, 1);
    assert.equal(q.rd, true);
    assert.deepEqual(q.edns, { udpSize: 4096, version: 0 });
    assert.equal(parsed(message("a.test", { edns: false })).edns, undefined);
    assert.equal(parsed(message("_dmarc.a.test")).isPlainName, true);
  });

  const errors: { what: string; msg: Buffer; want: ParseResult["kind"]; rcode?: number; reason?: RegExp }[] =
    [
      { what: "shorter than a header", msg: Buffer.alloc(11), want: "drop" },
      { what: "a response", msg: raw([1, 0, 0, 0], question, 0x8100), want: "drop" },
      {
        what: "opcode STATUS",
        msg: raw([1, 0, 0, 0], question, 2 << 11),
        want: "error",
        rcode: RCODE.NOTIMP,
      },
      { what: "no question", msg: raw([0, 0, 0, 0], []), want: "error", rcode: RCODE.FORMERR },
      {
        what: "two questions",
        msg: raw([2, 0, 0, 0], [...question, ...question]),
        want: "error",
        rcode: RCODE.FORMERR,
      },
      { what: "an answer record", msg: raw([1, 1, 0, 0], question), want: "error", rcode: RCODE.FORMERR },
      { what: "two additionals", msg: raw([1, 0, 0, 2], question), want: "error", rcode: RCODE.FORMERR },
      {
        what: "compression pointer in the question",
        msg: raw([1, 0, 0, 0], [0xc0, 0x0c, 0, 1, 0, 1]),
        want: "error",
        rcode: RCODE.FORMERR,
      },
      {
        what: "name runs past the end",
        msg: raw([1, 0, 0, 0], [5, 0x61, 0x62]),
        want: "error",
        rcode: RCODE.FORMERR,
      },
      {
        what: "no type and class",
        msg: raw([1, 0, 0, 0], [1, 0x61, 0]),
        want: "error",
        rcode: RCODE.FORMERR,
      },
      {
        what: "trailing bytes",
        msg: raw([1, 0, 0, 0], [...question, 0]),
        want: "error",
        rcode: RCODE.FORMERR,
      },
      {
        what: "an additional that is not OPT (TSIG)",
        msg: raw([1, 0, 0, 1], [...question, 0, 0, 250, 0, 255, 0, 0, 0, 0, 0, 0]),
        want: "error",
        rcode: RCODE.FORMERR,
      },
      {
        what: "OPT rdata past the end",
        msg: raw([1, 0, 0, 1], [...question, 0, 0, 41, 16, 0, 0, 0, 0, 0, 0, 9]),
        want: "error",
        rcode: RCODE.FORMERR,
      },
      {
        what: "a name over 255 octets",
        msg: raw(
          [1, 0, 0, 0],
          [...Array.from({ length: 5 }, () => [63, ...Array<number>(63).fill(0x61)]).flat(), 0, 0, 1, 0, 1],
        ),
        want: "error",
        rcode: RCODE.FORMERR,
      },
      {
        what: "over 512 bytes without EDNS",
        msg: Buffer.concat([message("a.test", { edns: false }), Buffer.alloc(520)]),
        want: "error",
        rcode: RCODE.FORMERR,
        reason: /^query of 544 bytes without EDNS$/,
      },
      {
        what: "over 4096 bytes",
        msg: Buffer.concat([message("a.test"), Buffer.alloc(4_100)]),
        want: "error",
        rcode: RCODE.FORMERR,
        reason: /^query of 4135 bytes$/,
      },
    ];
  for (const e of errors) {
    test(`${e.want}: ${e.what}`, () => {
      const r = parseQuery(e.msg);
      assert.equal(r.kind, e.want, JSON.stringify(r));
      if (r.kind === "error") {
        assert.equal(r.rcode, e.rcode);
        assert.equal(r.id, e.msg.readUInt16BE(0));
        if (e.reason !== undefined) assert.match(r.reason, e.reason);
      }
    });
  }

  test("over 512 bytes with EDNS is fine (an OPT option pads it)", () => {
    const base = message("a.test");
    // Grow the OPT rdata by 600 bytes of padding option (code 12).
    const pad = Buffer.alloc(604);
    pad.writeUInt16BE(12, 0);
    pad.writeUInt16BE(600, 2);
    const msg = Buffer.concat([base, pad]);
    msg.writeUInt16BE(604, base.length - 2);
    const q = parsed(msg);
    assert.equal(q.name, "a.test");
  });

  test("labels with bytes no rule can name are flagged, not merged", () => {
    // One label "a.example" (with a dot byte) then "test": must not read as a.example.test.
    const dotted = raw(
      [1, 0, 0, 0],
      [9, ...Buffer.from("a.example"), 4, ...Buffer.from("test"), 0, 0, 1, 0, 1],
    );
    assert.equal(parsed(dotted).isPlainName, false);
    const spaced = raw([1, 0, 0, 0], [3, 0x61, 0x20, 0x62, 4, ...Buffer.from("test"), 0, 0, 1, 0, 1]);
    assert.equal(parsed(spaced).isPlainName, false);
    const high = raw([1, 0, 0, 0], [2, 0xc3, 0xa9, 4, ...Buffer.from("test"), 0, 0, 1, 0, 1]);
    assert.equal(parsed(high).isPlainName, false);
  });
});

describe("buildResponse (decoded by dns-packet)", () => {
  test("A answers point at the question, keep the client's case, carry TTLs", () => {
    const q = parsed(message("Api.Example.TEST", { id: 99 }));
    const out = buildResponse(
      q,
      {
        rcode: RCODE.NOERROR,
        answers: [
          { address: ipv4ToNumber("10.1.2.3"), ttl: 60 },
          { address: ipv4ToNumber("10.1.2.4"), ttl: 60 },
        ],
      },
      1232,
    );
    const d = decode(out);
    assert.equal(d.id, 99);
    assert.equal(d.type, "response");
    assert.equal(d.flag_rd, true);
    assert.equal(d.flag_ra, true);
    assert.equal(d.flag_tc, false);
    assert.equal(d.questions?.[0]?.name, "Api.Example.TEST");
    assert.deepEqual(
      d.answers?.map((a): unknown[] => [
        a.name,
        a.type,
        (a as { ttl: number }).ttl,
        (a as { data: unknown }).data,
      ]),
      [
        ["Api.Example.TEST", "A", 60, "10.1.2.3"],
        ["Api.Example.TEST", "A", 60, "10.1.2.4"],
      ],
    );
    const opt = d.additionals?.[0] as OptAnswer;
    assert.equal(opt.type, "OPT");
    assert.equal(opt.udpPayloadSize, 1232);
  });

  test("an Extended DNS Error rides in the OPT record", () => {
    const q = parsed(message("blocked.test"));
    const d = decode(
      buildResponse(q, { rcode: RCODE.NXDOMAIN, ede: { code: EDE_CODE.BLOCKED, text: "no é" } }, 1232),
    );
    assert.equal((d as unknown as { rcode: string }).rcode, "NXDOMAIN");
    const option = (d.additionals?.[0] as OptAnswer).options[0] as unknown as { code: number; data: Buffer };
    assert.equal(option.code, 15);
    assert.equal(option.data.readUInt16BE(0), 15);
    assert.equal(option.data.subarray(2).toString("utf8"), "no é");
  });

  test("no OPT (so no EDE) when the query had none", () => {
    const q = parsed(message("blocked.test", { edns: false }));
    const d = decode(buildResponse(q, { rcode: RCODE.NXDOMAIN, ede: { code: 15, text: "x" } }, 512));
    assert.equal(d.additionals?.length, 0);
  });

  test("too large for the client: no answers and TC set", () => {
    const q = parsed(message("many.test", { edns: false }));
    const answers = Array.from({ length: 40 }, (_, i) => ({ address: i + 1, ttl: 5 }));
    const d = decode(buildResponse(q, { rcode: RCODE.NOERROR, answers }, 512));
    assert.equal(d.flag_tc, true);
    assert.equal(d.answers?.length, 0);
    assert.equal(decode(buildResponse(q, { rcode: RCODE.NOERROR, answers }, 65_535)).answers?.length, 40);
  });

  test("BADVERS puts its upper bits in the OPT record", () => {
    const q = parsed(message("a.test"));
    const out = buildResponse(q, { rcode: RCODE.BADVERS }, 1232);
    assert.equal(out.readUInt16BE(2) & 0xf, 0);
    assert.equal((decode(out).additionals?.[0] as OptAnswer).extendedRcode, 1);
  });

  test("header-only responses echo id, opcode and RD", () => {
    const out = buildHeaderResponse(513, 2, true, RCODE.NOTIMP);
    const d = decode(out);
    assert.equal(d.id, 513);
    assert.equal((d as unknown as { opcode: string }).opcode, "STATUS");
    assert.equal((d as unknown as { rcode: string }).rcode, "NOTIMP");
    assert.equal(d.flag_rd, true);
    assert.equal(d.questions?.length, 0);
  });
});
