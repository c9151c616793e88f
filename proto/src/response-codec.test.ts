// The zero-copy Response decoder must read what the generated decoder reads, and hand anything
// but a plain OutputChunk (unknown fields, repeated fields, other payloads, malformed bytes) to it.
import assert from "node:assert/strict";
import { test } from "node:test";
import * as clawkerd from "./gen/clawker/clawkerd/v1/clawkerd.js";
import { deserializeClawkerdResponse, encodeClawkerdResponse } from "./response-codec.js";

function varint(n: number): Buffer {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return Buffer.from(out);
}
const field = (n: number, value: Buffer): Buffer =>
  Buffer.concat([varint((n << 3) | 2), varint(value.length), value]);
const generated = (buf: Buffer): clawkerd.Response => clawkerd.Response.decode(buf);

test("OutputChunks decode as the generated decoder does, their data a view of the message", () => {
  for (const size of [0, 1, 127, 128, 16_384, 32 * 1024, 70_000]) {
    for (const commandId of ["", "x", "ü✓-id", "a".repeat(200)]) {
      const data = Buffer.alloc(size, size % 251);
      const wire = encodeClawkerdResponse({ commandId, payload: { $case: "output", value: { data } } });
      const fast = deserializeClawkerdResponse(wire);
      assert.deepEqual(fast, generated(wire), `size ${size}, id ${JSON.stringify(commandId)}`);
      if (size > 0 && fast.payload?.$case === "output") {
        assert.equal(fast.payload.value.data.buffer, wire.buffer, "no copy");
      }
    }
  }
});

test("anything else goes to the generated decoder: unknown and repeated fields, other payloads, bad bytes", () => {
  const secret = Buffer.from("AGENT-SECRET");
  const chunk = field(1, Buffer.from("out"));
  const cases: Array<[string, Buffer]> = [
    [
      "an unknown field in Response",
      Buffer.concat([field(1, Buffer.from("c")), field(4, chunk), field(4000, secret)]),
    ],
    ["an unknown field in OutputChunk", Buffer.concat([field(4, Buffer.concat([chunk, field(2, secret)]))])],
    [
      "a repeated command_id",
      Buffer.concat([field(1, Buffer.from("a")), field(1, Buffer.from("b")), field(4, chunk)]),
    ],
    ["a repeated output", Buffer.concat([field(4, chunk), field(4, field(1, Buffer.from("two")))])],
    [
      "Done",
      Buffer.from(
        clawkerd.Response.encode({
          commandId: "d",
          payload: { $case: "done", value: { finalExitCode: 2 } },
        }).finish(),
      ),
    ],
    ["only a command_id", field(1, Buffer.from("c"))],
  ];
  for (const [name, wire] of cases) {
    const fast = deserializeClawkerdResponse(wire);
    assert.deepEqual(fast, generated(wire), name);
    assert.ok(!JSON.stringify(fast).includes("AGENT-SECRET"), name);
  }
  const truncated = encodeClawkerdResponse({
    commandId: "t",
    payload: { $case: "output", value: { data: Buffer.alloc(100, 1) } },
  }).subarray(0, 50);
  assert.throws(() => generated(truncated));
  assert.throws(() => deserializeClawkerdResponse(truncated));
});
