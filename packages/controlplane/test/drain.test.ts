// The drain of a real daemon (clawker-cp from source, embedded authserver): the fixed order of
// ARCHITECTURE.md "Shutdown and drain", one `drain_step` record per step, one deadline for the whole
// drain, and a failing step (a real one: a frozen helper that must be SIGKILLed) kept in the exit code.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { helperPid, startControlPlane, type ControlPlane } from "../../../test/harness/controlplane.js";
import { isAlive } from "../../../test/harness/leftovers.js";
import { waitFor } from "../../../test/harness/wait-for.js";

/** The drain order: eBPF state after the firewall stack (ARCHITECTURE.md). */
const ORDER = [
  "memory_relief",
  "firewall_queue",
  "watcher",
  "agent_sessions",
  "grpc",
  "bypass_timers",
  "egress_triage",
  "firewall_stack",
  "firewall_events",
  "audit",
  "ebpf",
  "healthz",
  "refusal_log",
  "introspector",
  "topics",
  "registry",
  "auth_processes",
];

const steps = (cp: ControlPlane): Array<Record<string, unknown>> =>
  cp.logs.filter((l) => l["event"] === "drain_step");

describe("drain of a real daemon", () => {
  test("SIGTERM: every step in the fixed order, each ok with its duration; exit 0", async (t) => {
    const cp = await startControlPlane();
    t.after(() => cp.close());
    assert.equal(await cp.close(), 0);
    assert.deepEqual(
      steps(cp).map((l) => [l["step"], l["outcome"]]),
      ORDER.map((name) => [name, "ok"]),
    );
    for (const l of steps(cp)) assert.equal(typeof l["ms"], "number", `${String(l["step"])} has a duration`);
    const stopped = cp.logs.find((l) => l["event"] === "stopped");
    assert.deepEqual([stopped?.["code"], stopped?.["failedSteps"]], [0, []]);
  });

  test("a frozen helper is SIGKILLed at the one deadline: its step fails, the order holds, a second SIGTERM is logged, exit 1", async (t) => {
    const graceMs = 2_000;
    const cp = await startControlPlane({ config: { shutdownGraceMs: graceMs } });
    t.after(() => cp.close());
    const auth = helperPid(cp, "authserver");
    // SIGSTOP: its SIGTERM stays pending, so the drain has to force it (a real failure, no mock).
    process.kill(auth, "SIGSTOP");
    t.after(() => {
      if (isAlive(auth)) process.kill(auth, "SIGKILL");
    });

    const began = Date.now();
    cp.proc.kill("SIGTERM");
    await waitFor(() => cp.logs.some((l) => l["event"] === "drain"), { what: "the drain to start" });
    cp.proc.kill("SIGTERM");
    assert.equal(await cp.exited, 1, "a failed drain step makes the exit code non-zero");
    const took = Date.now() - began;

    assert.deepEqual(
      steps(cp).map((l) => [l["step"], l["outcome"]]),
      ORDER.map((name) => [name, name === "auth_processes" ? "failed" : "ok"]),
    );
    const failed = steps(cp).find((l) => l["step"] === "auth_processes");
    assert.equal((failed?.["err"] as { reason?: string } | undefined)?.reason, "forced_kill");
    assert.match(JSON.stringify(failed?.["err"]), /authserver did not stop on SIGTERM before the deadline/);
    assert.equal(isAlive(auth), false, "the frozen helper is gone");

    const late = cp.logs.find((l) => l["event"] === "stop_cause_during_drain");
    assert.deepEqual(
      [late?.["cause"], late?.["signal"]],
      ["signal", "SIGTERM"],
      "the second signal is logged",
    );
    const stopped = cp.logs.find((l) => l["event"] === "stopped");
    assert.deepEqual(
      [stopped?.["code"], stopped?.["cause"], stopped?.["failedSteps"]],
      [1, "signal", ["auth_processes"]],
    );
    // One deadline for the whole drain, not one per step: 2 s plus the kill, whatever the steps.
    const drainMs = stopped?.["drainMs"] as number;
    assert.ok(drainMs >= graceMs - 100 && drainMs < graceMs + 1_000, `drain took ${drainMs} ms`);
    assert.ok(took < graceMs + 3_000, `exit took ${took} ms after SIGTERM`);
  });
});
