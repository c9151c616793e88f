// The manager as PID 1 of a fresh PID namespace (as in the CP container without --init): crash
// reported, helpers stopped and reaped, the pid1_without_init warning logged. Needs root + unshare.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { delimiter, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const FIXTURE = fileURLToPath(new URL("../../test/fixtures/pid1-supervisor.ts", import.meta.url));
const REPO = fileURLToPath(new URL("../../../../", import.meta.url));
// Same rule as test/harness/preconditions.ts (not importable from under src/): skip on a laptop,
// fail under CI.
const isCI = (process.env["CI"] ?? "") !== "" && process.env["CI"] !== "false";

function onPath(name: string): boolean {
  return (process.env["PATH"] ?? "").split(delimiter).some((dir) => {
    try {
      accessSync(join(dir, name), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

function unmet(): string | undefined {
  if (process.getuid?.() !== 0) return "needs root (uid 0) for a PID namespace";
  if (!onPath("unshare")) return "needs unshare on PATH";
  return undefined;
}

void test("as PID 1 the manager reports the crash, stops and reaps its helpers, and warns about orphans", async (t) => {
  const why = unmet();
  if (why !== undefined) {
    if (isCI) assert.fail(`precondition failed under CI: ${why}`);
    t.skip(why);
    return;
  }
  const { stdout } = await promisify(execFile)(
    "unshare",
    ["--pid", "--fork", "--mount-proc", process.execPath, "--import", "tsx", "--conditions=source", FIXTURE],
    { cwd: REPO, timeout: 60_000 },
  );
  const report = JSON.parse(stdout.trim().split("\n").at(-1) ?? "{}") as {
    pid: number;
    crash: { name: string; signal: string | null };
    warned: boolean;
    leftovers: unknown[];
  };
  assert.equal(report.pid, 1);
  assert.equal(report.crash.name, "first");
  assert.equal(report.crash.signal, "SIGKILL");
  assert.equal(report.warned, true);
  assert.deepEqual(report.leftovers, [], "no helper left running or as a zombie");
});
