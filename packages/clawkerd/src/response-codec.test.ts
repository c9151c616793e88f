// The hand-written OutputChunk encoder must produce what the generated codec produces, byte for
// byte, across varint boundaries and id encodings; other responses pass through unchanged.
import assert from "node:assert/strict";
import { test } from "node:test";
import { clawkerd } from "@clawker/proto";
import { ClawkerdServiceFast, encodeResponse, serializeResponse } from "./response-codec.js";

test("OutputChunk responses encode exactly as the generated codec", () => {
  const sizes = [0, 1, 127, 128, 129, 16_383, 16_384, 16_385, 32 * 1024, 2_097_152];
  const ids = ["", "x", "cmd-1", "ü✓-id", "a".repeat(200)];
  for (const size of sizes) {
    for (const commandId of ids) {
      const data = Buffer.alloc(size, size % 251);
      const r: clawkerd.Response = { commandId, payload: { $case: "output", value: { data } } };
      const fast = encodeResponse(r);
      const generated = Buffer.from(clawkerd.Response.encode(r).finish());
      assert.ok(fast.equals(generated), `size ${size}, id ${JSON.stringify(commandId)}`);
      const back = clawkerd.Response.decode(fast);
      assert.equal(back.commandId, commandId);
      assert.equal(back.payload?.$case, "output");
      assert.ok(Buffer.from(back.payload.value.data).equals(data));
    }
  }
});

test("other responses use the generated codec; the service keeps its path and flags", () => {
  const r: clawkerd.Response = { commandId: "d", payload: { $case: "done", value: { finalExitCode: -1 } } };
  assert.ok(encodeResponse(r).equals(Buffer.from(clawkerd.Response.encode(r).finish())));
  const gen = clawkerd.ClawkerdServiceService.session;
  const fast = ClawkerdServiceFast.session;
  assert.equal(fast.path, gen.path);
  assert.equal(fast.requestStream, true);
  assert.equal(fast.responseStream, true);
  assert.equal(fast.requestDeserialize, gen.requestDeserialize);
});

test("the service's serializer gives the same bytes, from one reused buffer up to 64 KiB", () => {
  const at = (size: number): clawkerd.Response => ({
    commandId: "c",
    payload: { $case: "output", value: { data: Buffer.alloc(size, size % 251) } },
  });
  assert.equal(ClawkerdServiceFast.session.responseSerialize, serializeResponse);
  const first = serializeResponse(at(32 * 1024));
  assert.ok(Buffer.from(first).equals(encodeResponse(at(32 * 1024))));
  const second = serializeResponse(at(100));
  assert.ok(second.equals(encodeResponse(at(100))));
  assert.equal(second.buffer, first.buffer, "one buffer reused");
  const big = serializeResponse(at(80 * 1024));
  assert.ok(big.equals(encodeResponse(at(80 * 1024))));
  assert.notEqual(big.buffer, first.buffer, "a message over 64 KiB gets its own buffer");
});
