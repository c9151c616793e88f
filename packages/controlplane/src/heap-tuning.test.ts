// tuneHeap set from inside a running process turns V8's allocation-site pretenuring off: with
// `--trace-pretenuring-statistics` a process that keeps many objects from one allocation site
// across scavenges reports its pretenuring decisions, and the same process after tuneHeap reports
// none. And the daemon calls it as it becomes ready (a text check: the place is the point).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { test } from "node:test";

/** Pretenuring trace lines of a process that keeps 2 million objects from one site, tuned or not. */
function pretenuringLines(tuned: boolean): string[] {
  const script = `
    import { tuneHeap } from ${JSON.stringify(new URL("./heap-tuning.ts", import.meta.url).href)};
    if (${tuned}) tuneHeap();
    const kept = [];
    const make = (i) => ({ a: i, b: { c: i } });
    for (let i = 0; i < 2_000_000; i++) kept.push(make(i));
    console.log("kept " + kept.length);
  `;
  const run = spawnSync(
    process.execPath,
    [
      "--trace-pretenuring-statistics",
      "--import",
      import.meta.resolve("tsx"),
      "--input-type=module",
      "-e",
      script,
    ],
    { encoding: "utf8", timeout: 60_000 },
  );
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stdout, /kept 2000000/);
  return run.stdout.split("\n").filter((l) => l.includes("pretenuring:"));
}

void test("pretenuring decisions happen under V8's defaults and none after tuneHeap", () => {
  const untuned = pretenuringLines(false);
  assert.ok(
    untuned.some((l) => /=> (maybe )?tenure/.test(l)),
    `V8's defaults pretenure a site whose objects all survive:\n${untuned.slice(0, 5).join("\n")}`,
  );
  assert.deepEqual(pretenuringLines(true), [], "no pretenuring once tuned");
});

void test("the daemon calls it as it becomes ready, before the ready gate opens", () => {
  const daemon = readFileSync(new URL("./daemon.ts", import.meta.url), "utf8");
  const tune = daemon.indexOf("    tuneHeap();");
  assert.ok(tune > 0, "daemon.ts calls tuneHeap()");
  assert.ok(daemon.indexOf("this.#ready = true;") < tune, "after start-up succeeded");
  assert.ok(daemon.indexOf("this.#readyGate.setReady();") > tune, "before the first authorized call");
});
