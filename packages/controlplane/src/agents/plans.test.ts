import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { DEFAULT_PLANS, DEFAULT_STEP_TIMEOUT_S, parsePlans, toShellCommand } from "./plans.js";

describe("plans", () => {
  test("the defaults are empty", () => {
    assert.deepEqual(DEFAULT_PLANS, { init: [], boot: [] });
  });

  test("a step becomes a ShellCommand with exit_on_non_zero and filled-in stages", () => {
    const cmd = toShellCommand({
      name: "git-config",
      stages: [
        { argv: ["git", "config", "--global", "x", "y"], uid: 1000, gid: 1000, cwd: "/home/a" },
        { argv: ["cat"] },
      ],
    });
    assert.equal(cmd.exitOnNonZero, true);
    assert.equal(cmd.timeoutSeconds, DEFAULT_STEP_TIMEOUT_S);
    assert.equal(cmd.printOutput, true);
    assert.deepEqual(cmd.stages, [
      { argv: ["git", "config", "--global", "x", "y"], uid: 1000, gid: 1000, cwd: "/home/a", env: {} },
      { argv: ["cat"], uid: 0, gid: 0, cwd: "/", env: {} },
    ]);
  });

  test("configuration is validated, every problem listed", () => {
    assert.deepEqual(parsePlans({ boot: [{ name: "b", stages: [{ argv: ["true"] }] }] }), {
      init: [],
      boot: [{ name: "b", stages: [{ argv: ["true"] }] }],
    });
    const bad: Array<[string, unknown, RegExp]> = [
      ["empty argv", { init: [{ name: "a", stages: [{ argv: [] }] }] }, /argv must not be empty/],
      ["no stages", { init: [{ name: "a", stages: [] }] }, /at least one stage/],
      ["bad name", { init: [{ name: "A B", stages: [{ argv: ["true"] }] }] }, /step names/],
      ["unknown key", { init: [], extra: 1 }, /extra/],
      ["negative uid", { boot: [{ name: "a", stages: [{ argv: ["x"], uid: -1 }] }] }, /uid/],
      [
        "duplicate names",
        {
          boot: [
            { name: "a", stages: [{ argv: ["x"] }] },
            { name: "a", stages: [{ argv: ["y"] }] },
          ],
        },
        /duplicate step a/,
      ],
    ];
    for (const [what, input, message] of bad) assert.throws(() => parsePlans(input), message, what);
  });
});
