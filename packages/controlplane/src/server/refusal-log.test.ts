// RefusalLog: every refusal counted, the first few per listener/reason logged per window, one
// summary line with the suppressed count when the window ends.
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { test, type TestContext } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { pino } from "pino";
import { ListenerCounters } from "./listener-counters.js";
import { RefusalLog } from "./refusal-log.js";

function capture(t: TestContext, options: { linesPerWindow?: number; windowMs?: number } = {}) {
  const lines: Array<Record<string, unknown>> = [];
  let bytes = 0;
  const log = pino(
    { level: "debug" },
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        bytes += chunk.length;
        lines.push(JSON.parse(chunk.toString("utf8")) as Record<string, unknown>);
        cb();
      },
    }),
  );
  const counters = new ListenerCounters();
  const refusals = new RefusalLog({ log, counters, ...options });
  t.after(() => refusals.close());
  return { refusals, counters, lines, bytes: () => bytes };
}

void test("every refusal is counted; only the first N per listener and reason are logged", (t) => {
  const { refusals, counters, lines } = capture(t, { linesPerWindow: 3, windowMs: 60_000 });
  for (let i = 0; i < 1000; i++)
    refusals.refused("admin", "token_inactive", { event: "auth_refused", n: i }, "call refused");
  for (let i = 0; i < 2; i++)
    refusals.refused("admin", "missing_token", { event: "auth_refused" }, "call refused");
  refusals.refused("agent", "token_inactive", { event: "auth_refused" }, "call refused");
  assert.equal(counters.count("admin", "token_inactive"), 1000);
  assert.equal(counters.count("admin", "missing_token"), 2);
  assert.equal(counters.count("agent", "token_inactive"), 1);
  const logged = lines.filter((l) => l["event"] === "auth_refused");
  assert.deepEqual(
    logged.map((l) => `${String(l["listener"])}/${String(l["reason"])}`),
    [
      "admin/token_inactive",
      "admin/token_inactive",
      "admin/token_inactive",
      "admin/missing_token",
      "admin/missing_token",
      "agent/token_inactive",
    ],
  );
  assert.deepEqual(
    counters.rows().map((r) => [r.listener, r.reason, r.count]),
    [
      ["admin", "missing_token", 2],
      ["admin", "token_inactive", 1000],
      ["agent", "token_inactive", 1],
    ],
  );
});

void test("the window's end writes one summary per suppressed reason, then logging starts again", async (t) => {
  const { refusals, lines } = capture(t, { linesPerWindow: 2, windowMs: 100 });
  for (let i = 0; i < 50; i++)
    refusals.refused("admin", "malformed_token", { event: "auth_refused" }, "refused");
  refusals.refused("admin", "missing_token", { event: "auth_refused" }, "refused");
  const deadline = Date.now() + 5_000;
  while (!lines.some((l) => l["event"] === "refusals_suppressed") && Date.now() < deadline) await sleep(10);
  const summaries = lines.filter((l) => l["event"] === "refusals_suppressed");
  assert.equal(summaries.length, 1, "only the reason that was suppressed gets a summary");
  assert.deepEqual(
    [summaries[0]!["listener"], summaries[0]!["reason"], summaries[0]!["suppressed"], summaries[0]!["total"]],
    ["admin", "malformed_token", 48, 50],
  );
  assert.equal(summaries[0]!["level"], 40, "summaries are warnings");
  refusals.refused("admin", "malformed_token", { event: "auth_refused" }, "refused");
  assert.equal(lines.filter((l) => l["event"] === "auth_refused").length, 4, "a new window logs again");
});

void test("close() writes the pending summary and is idempotent; a flood costs a bounded number of bytes", (t) => {
  const { refusals, lines, bytes } = capture(t, { windowMs: 60_000 });
  for (let i = 0; i < 135_000; i++)
    refusals.refused("admin", "token_inactive", { event: "auth_refused", peer: "127.0.0.1:5000" }, "refused");
  refusals.close();
  refusals.close();
  const summaries = lines.filter((l) => l["event"] === "refusals_suppressed");
  assert.equal(summaries.length, 1);
  assert.equal(summaries[0]!["suppressed"], 135_000 - 5);
  assert.ok(bytes() < 4096, `135,000 refusals wrote ${bytes()} bytes`);
});
