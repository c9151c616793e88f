import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { MAX_SESSION_TAG, TagAllocator, markOf, renderMarkLua, tagOf } from "./session-tags.js";

describe("session tags", () => {
  test("a mark is 0xC1 over the 24-bit tag, and reads back; other marks are no tag", () => {
    assert.equal(markOf(1), 0xc1000001);
    assert.equal(markOf(MAX_SESSION_TAG), 0xc1ffffff);
    assert.equal(tagOf(0xc1000001), 1);
    assert.equal(tagOf(0xc1ffffff), MAX_SESSION_TAG);
    for (const mark of [0, 0x77, 0xc1000000, 0xc0ffffff, 0xc2000001]) assert.equal(tagOf(mark), undefined);
  });

  test("the allocator skips taken tags, never hands out 0, and wraps past the largest", () => {
    const tags = new TagAllocator();
    const taken = new Set([2, 3]);
    assert.equal(
      tags.next((t) => taken.has(t)),
      1,
    );
    assert.equal(
      tags.next((t) => taken.has(t)),
      4,
    );
    // Everything above 4 taken: the allocator wraps to the lowest free tag.
    assert.equal(
      tags.next((t) => t > 4 || taken.has(t) || t <= 1),
      4,
    );
    assert.throws(() => tags.next(() => true), /no free session tag/);
  });

  test("the Lua action sets prefix | tag, for integer tags in range only", () => {
    const lua = renderMarkLua();
    assert.match(lua, /core\.register_action\("clawker_mark", \{ "tcp-req", "http-req" \}/);
    assert.match(lua, /math\.type\(tag\) == "integer" and tag >= 1 and tag <= 16777215/);
    assert.match(lua, /txn:set_mark\(3238002688 \| tag\)/);
  });
});
