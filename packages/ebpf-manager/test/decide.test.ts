// BPF_PROG_TEST_RUN table test of the decision helper (the table lives in src/decide-test.c, so
// the helper is exercised exactly as the kernel runs it).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { describe, test } from "node:test";
import { promisify } from "node:util";
import { bpffs, root, skipReason } from "../../../test/harness/preconditions.js";
import { bin, buildOnce, ensureBpffs } from "./fixture.js";

const run = promisify(execFile);
ensureBpffs();

interface Case {
  name: string;
  ok: boolean;
  want: Record<string, unknown>;
  got: Record<string, unknown>;
  error: number;
}

describe("decision helper under BPF_PROG_TEST_RUN", { skip: skipReason(root, bpffs) }, () => {
  test("every case of the table", async (t) => {
    await buildOnce();
    const stdout = await run(bin.decideTest).then(
      (r) => r.stdout,
      (err: { stdout?: string }) => err.stdout ?? "",
    );
    const cases = stdout
      .trim()
      .split("\n")
      .filter((l) => l !== "")
      .map((l) => JSON.parse(l) as Case);
    assert.ok(cases.length >= 20, `ran ${cases.length} cases`);
    for (const c of cases) {
      await t.test(c.name, () => {
        assert.equal(c.error, 0);
        assert.deepEqual(c.got, c.want);
      });
    }
  });
});
