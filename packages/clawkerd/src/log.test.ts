// The console sink: lines reach stdout until it refuses one, then are dropped with one notice on
// stderr, and neither stream's error escapes as an uncaught exception.
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { test } from "node:test";
import { consoleSink, createLogger } from "./log.js";

/** A stream that keeps what it is given, or refuses every write with `code` once `refuse` is set. */
function stream(): Writable & { lines: string[]; refuse?: string } {
  const s = new Writable({
    write(chunk: Buffer, _enc, done) {
      if (s.refuse !== undefined) done(Object.assign(new Error(`write ${s.refuse}`), { code: s.refuse }));
      else {
        s.lines.push(chunk.toString());
        done();
      }
    },
  }) as Writable & { lines: string[]; refuse?: string };
  s.lines = [];
  return s;
}

/** Resolves when `s` closes (events.once would reject on the 'error' that comes first). */
const closed = (s: Writable): Promise<void> => new Promise((r) => s.once("close", () => r()));

test("a refused stdout drops later lines, says so once on stderr, and throws nothing", async () => {
  const out = stream();
  const err = stream();
  const log = createLogger("info", consoleSink(out, err), { component: "clawkerd" });
  log.info({ event: "one" }, "first");
  assert.equal(out.lines.length, 1);
  assert.equal((JSON.parse(out.lines[0]!) as { event: string }).event, "one");
  out.refuse = "EPIPE";
  log.info({ event: "two" }, "refused");
  await closed(out);
  log.fatal({ event: "three" }, "dropped");
  log.info({ event: "four" }, "dropped");
  await new Promise((r) => setImmediate(r));
  assert.equal(out.lines.length, 1);
  assert.deepEqual(err.lines, ["clawkerd: stdout refused a log line (EPIPE); logs are dropped\n"]);
});

test("a refused stderr is quiet too, and stdout keeps its lines", async () => {
  const out = stream();
  const err = stream();
  const sink = consoleSink(out, err);
  err.refuse = "EPIPE";
  err.write("printed output\n");
  await closed(err);
  sink("still logged\n");
  assert.deepEqual(out.lines, ["still logged\n"]);
});
