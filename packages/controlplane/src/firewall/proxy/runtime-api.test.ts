// The runtime client's refusals happen before anything is sent (no socket exists at the path, so
// a request that got out would fail with `unavailable`). The real HAProxy drives the rest in
// test/firewall-proxy.test.ts.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ProxyError } from "./errors.js";
import { RuntimeApi } from "./runtime-api.js";

const api = new RuntimeApi({ socketPath: "/nonexistent/clawker-test/runtime.sock", timeoutMs: 500 });
const reason = (want: string) => (err: unknown) => err instanceof ProxyError && err.reason === want;

describe("RuntimeApi refuses what could become a second command", () => {
  const args: string[][] = [
    ["add", "map", "/m.map", "key;shutdown", "v"],
    ["add", "map", "/m.map", "key value"],
    ["del", "server", "be/s1\nshutdown"],
    ["show", ""],
    ["show", "map", "x\u0000"],
  ];
  for (const a of args) {
    test(JSON.stringify(a), () => assert.rejects(api.command(a), reason("invalid_argument")));
  }

  test("a payload with an empty line (the payload's end) or CR", async () => {
    await assert.rejects(
      api.command(["add", "map", "/m.map"], "a 1\n\nshutdown sessions"),
      reason("invalid_argument"),
    );
    await assert.rejects(api.command(["add", "map", "/m.map"], "a 1\r\nb 2"), reason("invalid_argument"));
    await assert.rejects(api.command(["add", "map", "/m.map"], "\na 1"), reason("invalid_argument"));
  });

  test("map entries that cannot be expressed", async () => {
    await assert.rejects(
      api.addMapEntries(1, "/m.map", [{ key: "a b", value: "v" }]),
      reason("invalid_argument"),
    );
    await assert.rejects(
      api.addMapEntries(1, "/m.map", [{ key: "a", value: "v\nw" }]),
      reason("invalid_argument"),
    );
    await assert.rejects(
      api.addMapEntries(1, "/m.map", [{ key: "a", value: " " }]),
      reason("invalid_argument"),
    );
  });

  test("a well-formed command reaches the socket (here: none, so unavailable)", () =>
    assert.rejects(api.command(["show", "info"]), reason("unavailable")));

  test("an interactive conversation without a socket fails before running anything", async () => {
    let ran = false;
    await assert.rejects(
      api.interactive(async () => {
        ran = true;
        return Promise.resolve();
      }),
      reason("unavailable"),
    );
    assert.equal(ran, false);
  });
});
