// grpc-js's own log lines go through our logger with no header value in them. The metadata
// failure is produced by grpc-js itself (Metadata.fromHttp2Headers, as its server does for every
// request), so this fails if grpc-js logged past us.
import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { test } from "node:test";
import { Metadata } from "@grpc/grpc-js";
import { pino } from "pino";
import { ListenerCounters } from "./listener-counters.js";
import { GRPC_JS_LISTENER, routeGrpcJsLogs, scrubGrpcText } from "./grpc-log.js";
import { RefusalLog } from "./refusal-log.js";

const SECRET = "sécret-token-0123456789";

void test("a refused non-ASCII authorization value: logged by header name only, counted, rate-limited", (t) => {
  let text = "";
  const log = pino(
    { level: "info" },
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        text += chunk.toString("utf8");
        cb();
      },
    }),
  );
  const stderr: string[] = [];
  const realError = console.error;
  console.error = (...args: unknown[]) => void stderr.push(args.map(String).join(" "));
  t.after(() => {
    console.error = realError;
  });
  const counters = new ListenerCounters();
  const refusals = new RefusalLog({ log, counters, linesPerWindow: 2, windowMs: 60_000 });
  t.after(() => refusals.close());
  routeGrpcJsLogs(log, refusals);

  for (let i = 0; i < 10; i++) {
    const md = Metadata.fromHttp2Headers({ authorization: `Bearer ${SECRET}`, "x-ok": "fine" });
    assert.deepEqual(md.get("authorization"), [], "grpc-js drops the value");
  }
  refusals.close();
  assert.deepEqual(stderr, [], "nothing reaches stderr");
  assert.ok(!text.includes(SECRET) && !text.includes("cret-token"), "the value is not in our log");
  const lines = text
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  const dropped = lines.filter((l) => l["event"] === "grpc_bad_metadata");
  assert.equal(dropped.length, 2, "rate-limited");
  assert.equal(dropped[0]!["header"], "authorization");
  assert.equal(counters.count(GRPC_JS_LISTENER, "bad_metadata"), 10);
  assert.equal(lines.find((l) => l["event"] === "refusals_suppressed")?.["suppressed"], 8);
});

void test("scrubGrpcText removes authorization values, bearer tokens and -bin values; bounds the length", () => {
  const cases: Array<[string, string]> = [
    [
      `received headers {"authorization":["Bearer abc.def"],"user-agent":["grpc-node"]}`,
      `received headers {"authorization":"[redacted]","user-agent":["grpc-node"]}`,
    ],
    ["entry authorization: Basic dXNlcjpwYXNz. Bad value", 'entry authorization: "[redacted]". Bad value'],
    ["token Bearer eyJhbGciOi.x.y here", "token Bearer [redacted] here"],
    [`{"grpc-status-details-bin":["AAAA"]}`, `{"grpc-status-details-bin":"[redacted]"}`],
  ];
  for (const [input, expected] of cases) assert.equal(scrubGrpcText(input), expected);
  assert.ok(scrubGrpcText("x".repeat(5_000)).length <= 303);
});
