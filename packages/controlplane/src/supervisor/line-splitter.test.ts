import assert from "node:assert/strict";
import { test } from "node:test";
import { LineSplitter } from "./line-splitter.js";

function collect(max?: number): { out: [string, boolean][]; splitter: LineSplitter } {
  const out: [string, boolean][] = [];
  return { out, splitter: new LineSplitter((line, truncated) => out.push([line, truncated]), max) };
}

void test("lines split across chunks, CRLF stripped, last line flushed on end", () => {
  const { out, splitter } = collect();
  splitter.push(Buffer.from("one\ntw"));
  splitter.push(Buffer.from("o\r\n\nthree"));
  assert.deepEqual(out, [
    ["one", false],
    ["two", false],
    ["", false],
  ]);
  splitter.end();
  assert.deepEqual(out.at(-1), ["three", false]);
  assert.equal(out.length, 4);
});

void test("a multi-byte character split between chunks is decoded whole", () => {
  const { out, splitter } = collect();
  const bytes = Buffer.from("héllo\n");
  splitter.push(bytes.subarray(0, 2));
  splitter.push(bytes.subarray(2));
  assert.deepEqual(out, [["héllo", false]]);
});

void test("a line over the cap is cut into truncated pieces, with or without a newline", () => {
  const { out, splitter } = collect(4);
  splitter.push("abcdefghij");
  assert.deepEqual(out, [
    ["abcd", true],
    ["efgh", true],
  ]);
  splitter.push("\n123456789\n");
  assert.deepEqual(out.slice(2), [
    ["ij", false],
    ["1234", true],
    ["5678", true],
    ["9", false],
  ]);
});
