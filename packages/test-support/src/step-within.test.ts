import assert from "node:assert/strict";
import { open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { processSnapshot, stepWithin } from "./step-within.js";

test("a step that settles passes its value or its error through", async () => {
  assert.equal(await stepWithin("quick", 60_000, () => Promise.resolve(7)), 7);
  await assert.rejects(
    stepWithin("failing", 60_000, () => Promise.reject(new Error("its own"))),
    /its own/,
  );
});

test("a step that never settles is named, with what the process was waiting on", async () => {
  const err = await stepWithin("never", 50, () => new Promise<void>(() => undefined)).then(
    () => assert.fail("a step that never settles must be refused"),
    (e: unknown) => e as Error,
  );
  assert.match(err.message, /^step "never" did not finish within 50 ms\npending resources: /);
  // The main thread is listed by its name, with a state letter.
  assert.match(err.message, /\nthread \d+ \S+: state [A-Z], wchan /);
});

test("the snapshot lists a file request still pending", async (t) => {
  const path = join(tmpdir(), `step-within-${process.pid}`);
  t.after(() => rm(path, { force: true }));
  const fh = await open(path, "w");
  const sync = fh.sync();
  const snapshot = processSnapshot();
  await sync;
  await fh.close();
  assert.match(snapshot, /^pending resources: .*FSReqPromise/);
});
