import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { test } from "node:test";
import { captureJsonLines, JsonLines } from "./json-lines.js";
import { waitFor } from "./wait-for.js";

void test("lines split across chunks are parsed once complete; non-objects are kept raw", () => {
  const c = new JsonLines();
  c.write('{"a":1}\n{"b"');
  assert.deepEqual(c.lines, [{ a: 1 }]);
  c.write(':2}\nnot json\n42\n\n{"c":3}');
  assert.deepEqual(c.lines, [{ a: 1 }, { b: 2 }, { raw: "not json" }, { raw: "42" }]);
  c.flush();
  assert.deepEqual(c.lines.at(-1), { c: 3 });
});

void test("a child's stdout, including a last line without a newline", async () => {
  const child = spawn(process.execPath, [
    "-e",
    'process.stdout.write(JSON.stringify({event:"ready"})+"\\n"); process.stdout.write("{\\"event\\":\\"bye\\"}")',
  ]);
  const out = captureJsonLines(child.stdout);
  await waitFor(() => out.lines.length === 2, { what: "two lines" });
  assert.deepEqual(out.lines, [{ event: "ready" }, { event: "bye" }]);
});
