// `clawker firewall denials|approve|dismiss`: usage errors before anything is sent, and the
// approval durations. Against the real daemon and real agents: test/e2e/firewall-triage.test.ts.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { COMMANDS } from "../cli.js";
import { parseFlags } from "../command-spec.js";
import { CliError, ExitCode } from "../exit-codes.js";
import type { Io } from "../io.js";
import { approvalSeconds, firewallApprove, firewallDismiss } from "./firewall-triage.js";

const spec = (words: string) => COMMANDS.find((c) => c.spec.words.join(" ") === words)!.spec;
const usage = (message: RegExp) => (e: unknown) =>
  e instanceof CliError && e.exitCode === ExitCode.usage && message.test(e.message);
// Never reached: every case fails before a connection is opened.
const io = {} as Io;

describe("firewall approve / dismiss", () => {
  test("--for takes s, m, h, d up to 30 days", () => {
    assert.deepEqual(
      ["30s", "45m", "1h", "7d", "30d"].map(approvalSeconds),
      [30, 2700, 3600, 604_800, 2_592_000],
    );
    for (const bad of ["", "1", "1.5h", "-1h", "0s", "31d", "1w", "1h30m"]) {
      assert.throws(() => approvalSeconds(bad), usage(/--for must be/), bad);
    }
  });

  test("usage errors before anything is sent: the id, the scope flags, --for", async () => {
    const approve = (...args: string[]) => firewallApprove(parseFlags(spec("firewall approve"), args), io);
    await assert.rejects(approve(), usage(/give the ID/));
    await assert.rejects(approve("x-1"), usage(/is not a denial \(d-\.\.\.\) or request \(r-\.\.\.\) id/));
    await assert.rejects(approve("d-1", "d-2"), usage(/unexpected argument/));
    await assert.rejects(approve("d-1", "--agent", "--global"), usage(/one of --agent, --project, --global/));
    await assert.rejects(approve("r-1", "--for", "2y"), usage(/--for must be/));
    await assert.rejects(
      firewallDismiss(parseFlags(spec("firewall dismiss"), ["nope"]), io),
      usage(/is not a denial/),
    );
  });
});
