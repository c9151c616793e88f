// clawkerd as a process: bootstrap refusal (exit 2, nothing bound), AgentReady running the main
// command with privileges dropped and clawkerd exiting with its code, signal forwarding,
// exit_on_non_zero, and a console whose reader is gone.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { chmod, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { BOOTSTRAP_FILES } from "@clawker/proto";
import { cpuMs } from "../../../test/harness/proc-status.js";
import { waitFor } from "../../../test/harness/wait-for.js";
import { makeTestAgent } from "./fixtures/bootstrap.js";
import { spawnClawkerd } from "./fixtures/clawkerd-process.js";
import { STDIN_WINDOW_BYTES } from "../src/session.js";
import { controlPlaneIdentity, SessionClient, shell, stage } from "./fixtures/session-client.js";

test("missing or malformed bootstrap material: a clear message on stderr and exit 2, nothing bound", async (t) => {
  const agent = await makeTestAgent();
  t.after(() => agent.close());

  const missing = spawnClawkerd({ bootstrapDir: join(agent.dir, "nope"), stateDir: agent.stateDir });
  t.after(() => missing.kill());
  assert.equal((await missing.exited).code, 2);
  assert.match(missing.stderr, /bootstrap file missing: .*nope/);
  assert.equal(
    missing.lines.find((l) => l["event"] === "listening"),
    undefined,
  );

  await chmod(agent.bootstrapDir, 0o700);
  const cfg = join(agent.bootstrapDir, BOOTSTRAP_FILES.config);
  await chmod(cfg, 0o600);
  await writeFile(cfg, JSON.stringify({ agentName: "", project: "p" }));
  const bad = spawnClawkerd(agent);
  t.after(() => bad.kill());
  assert.equal((await bad.exited).code, 2);
  assert.match(bad.stderr, /agent\.json: agentName must be a non-empty string; controlPlaneAddr/);

  await writeFile(cfg, JSON.stringify(agent.config));
  const key = join(agent.bootstrapDir, BOOTSTRAP_FILES.key);
  await chmod(key, 0o600);
  await writeFile(key, (await agent.trust.issueAgent("x", "cd".repeat(32))).keyPem);
  const mismatch = spawnClawkerd(agent);
  t.after(() => mismatch.kill());
  assert.equal((await mismatch.exited).code, 2);
  assert.match(mismatch.stderr, /agent\.key: not the private key of the agent certificate/);
});

test("AgentReady runs default_cmd with privileges dropped; clawkerd exits with its code", async (t) => {
  const agent = await makeTestAgent();
  t.after(() => agent.close());
  const work = await mkdtemp(join(tmpdir(), "clawkerd-main-"));
  t.after(() => rm(work, { recursive: true, force: true }));
  await chmod(work, 0o777);
  const proc = spawnClawkerd(agent);
  t.after(() => proc.kill());
  await proc.waitListening();

  const c = new SessionClient(proc.address, controlPlaneIdentity(agent.trust));
  t.after(() => c.close());
  assert.deepEqual(await c.hello(), {
    initialized: false,
    cmdRunning: false,
    flowControl: { stdinWindowBytes: STDIN_WINDOW_BYTES },
  });
  const script = `while [ ! -e ${work}/go ]; do sleep 0.05; done; id -u > ${work}/ids; id -g >> ${work}/ids; exit 7`;
  c.send("ready", { $case: "agentReady", value: { defaultCmd: script } });
  await waitFor(() => proc.lines.some((l) => l["event"] === "main_started"), { what: "main_started" });

  const second = new SessionClient(proc.address, controlPlaneIdentity(agent.trust));
  t.after(() => second.close());
  assert.equal((await second.hello()).cmdRunning, true);
  second.send("ready-again", { $case: "agentReady", value: { defaultCmd: "exit 99" } });

  await writeFile(join(work, "go"), "");
  const exit = await proc.exited;
  assert.deepEqual(exit, { code: 7, signal: null });
  const isRoot = process.getuid?.() === 0;
  const want = isRoot ? "1000\n1000\n" : `${process.getuid?.()}\n${process.getgid?.()}\n`;
  assert.equal(await readFile(join(work, "ids"), "utf8"), want);
  assert.equal(
    proc.lines.filter((l) => l["event"] === "main_started").length,
    1,
    "a second AgentReady started nothing",
  );
});

test("argv after `--` is the main command; SIGTERM is forwarded to it and its code mirrored", async (t) => {
  const agent = await makeTestAgent();
  t.after(() => agent.close());
  const work = await mkdtemp(join(tmpdir(), "ckd-term-"));
  t.after(() => rm(work, { recursive: true, force: true }));
  // The trap is set before the marker is written: a SIGTERM sent before the shell ran `trap`
  // would end it with 143 and test nothing of the forwarding.
  const trapped = join(work, "trapped");
  const proc = spawnClawkerd(agent, {
    args: ["--", "sh", "-c", `trap 'exit 42' TERM; : > ${trapped}; while :; do sleep 0.05; done`],
    env: { CLAWKERD_RUN_AS: `${process.getuid?.()}:${process.getgid?.()}` },
  });
  t.after(() => proc.kill());
  await proc.waitListening();
  const c = new SessionClient(proc.address, controlPlaneIdentity(agent.trust));
  t.after(() => c.close());
  await c.hello();
  c.send("ready", { $case: "agentReady", value: { defaultCmd: "exit 9" } });
  await waitFor(() => proc.lines.some((l) => l["event"] === "main_started"), { what: "main_started" });
  await waitFor(() => existsSync(trapped), { what: "the main command's TERM trap" });
  proc.child.kill("SIGTERM");
  assert.deepEqual(await proc.exited, { code: 42, signal: null });
  assert.ok(proc.lines.some((l) => l["event"] === "signal_forwarded"));
});

test("without a main command SIGTERM stops clawkerd with 0; exit_on_non_zero ends it with the code", async (t) => {
  const agent = await makeTestAgent();
  t.after(() => agent.close());
  const idle = spawnClawkerd(agent);
  t.after(() => idle.kill());
  await idle.waitListening();
  idle.child.kill("SIGTERM");
  assert.deepEqual(await idle.exited, { code: 0, signal: null });

  const proc = spawnClawkerd(agent);
  t.after(() => proc.kill());
  await proc.waitListening();
  const c = new SessionClient(proc.address, controlPlaneIdentity(agent.trust));
  t.after(() => c.close());
  await c.hello();
  const ok = await c.run("fine", shell([stage(["true"])], { exitOnNonZero: true }));
  assert.equal(ok.at(-1)?.payload?.$case, "done");
  const rs = await c.run("fatal", shell([stage(["sh", "-c", "exit 4"])], { exitOnNonZero: true }));
  assert.deepEqual(rs.at(-1)?.payload, { $case: "done", value: { finalExitCode: 4 } });
  assert.deepEqual(await proc.exited, { code: 4, signal: null });
});

test("AgentReady with nothing to run answers an Error; a spawn failure too", async (t) => {
  const agent = await makeTestAgent();
  t.after(() => agent.close());
  const proc = spawnClawkerd(agent, { args: ["/nonexistent/main"] });
  t.after(() => proc.kill());
  await proc.waitListening();
  const c = new SessionClient(proc.address, controlPlaneIdentity(agent.trust));
  t.after(() => c.close());
  await c.hello();
  c.send("ready", { $case: "agentReady", value: { defaultCmd: "" } });
  const rs = await c.until("ready", (r) => r.length > 0);
  assert.equal(rs[0]?.payload?.$case, "error");
  assert.equal((rs[0].payload.value as { code: number }).code, 3, "ERROR_CODE_SPAWN_FAILED");
  assert.equal(proc.child.exitCode, null, "clawkerd keeps serving");

  const bare = spawnClawkerd(agent);
  t.after(() => bare.kill());
  await bare.waitListening();
  const c2 = new SessionClient(bare.address, controlPlaneIdentity(agent.trust));
  t.after(() => c2.close());
  await c2.hello();
  c2.send("ready", { $case: "agentReady", value: { defaultCmd: "  " } });
  const rs2 = await c2.until("ready", (r) => r.length > 0);
  assert.equal(
    (rs2[0]!.payload!.value as { code: number }).code,
    2,
    "ERROR_CODE_INVALID_REQUEST: nothing to run",
  );
});

test("with the reader of its stdout gone (EPIPE on every log line) clawkerd serves, idles, and stops on SIGTERM", async (t) => {
  const agent = await makeTestAgent();
  t.after(() => agent.close());
  const proc = spawnClawkerd(agent);
  t.after(() => proc.kill());
  await proc.waitListening();
  // What a container's log reader going away does: every later write to fd 1 and 2 fails EPIPE.
  proc.child.stdout!.destroy();
  proc.child.stderr!.destroy();
  await waitFor(() => proc.child.stdout!.destroyed && proc.child.stderr!.destroyed, {
    what: "our ends of its stdout and stderr closed",
  });
  // A Session and a command log several lines, each one a failed write; print_output copies the
  // command's output to the closed stderr as well.
  const c = new SessionClient(proc.address, controlPlaneIdentity(agent.trust));
  t.after(() => c.close());
  await c.hello();
  const rs = await c.run("after-epipe", shell([stage(["echo", "printed"])], { printOutput: true }));
  assert.deepEqual(rs.at(-1)?.payload, { $case: "done", value: { finalExitCode: 0 } });
  // Idle means idle: a log sink that turns each failed write into another logged error spins.
  const before = cpuMs(proc.child.pid!);
  await new Promise((r) => setTimeout(r, 1000));
  const used = cpuMs(proc.child.pid!) - before;
  assert.ok(used < 300, `clawkerd used ${used} ms of CPU in 1 s of idling`);
  const began = Date.now();
  proc.child.kill("SIGTERM");
  const exit = await Promise.race([
    proc.exited,
    new Promise((r) => setTimeout(() => r("hung"), 10_000).unref()),
  ]);
  assert.deepEqual(exit, { code: 0, signal: null }, "SIGTERM not honoured within 10 s");
  assert.ok(Date.now() - began < 4_000, `took ${Date.now() - began} ms`);
});
