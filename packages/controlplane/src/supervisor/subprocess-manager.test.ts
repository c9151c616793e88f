// SubprocessManager against real child processes (test/fixtures/helper.js run by our own node).
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import { freePort, isAlive, JsonLines, waitFor, type JsonLine } from "@clawker/test-support";
import { pino, type Logger } from "pino";
import {
  HealthAbortedError,
  HealthTimeoutError,
  HelperExitedError,
  HelperNotOursError,
  SpawnError,
  type SupervisorError,
} from "./errors.js";
import { ProbeError } from "./probes.js";
import { SubprocessManager, type HelperCommand, type HelperCrash } from "./subprocess-manager.js";

const FIXTURE = fileURLToPath(new URL("../../test/fixtures/helper.js", import.meta.url));

type LogLine = JsonLine;

/** A trace-level logger whose records land, parsed, in `lines`. */
function capture(): { logger: Logger; lines: LogLine[] } {
  const sink = new JsonLines();
  return { logger: pino({ level: "trace" }, sink), lines: sink.lines };
}

function helper(env: Record<string, string>): HelperCommand {
  return { file: process.execPath, args: [FIXTURE], env };
}

/** A manager whose children are stopped (and temp dir removed) when the test ends, even on failure. */
function setup(t: TestContext): { m: SubprocessManager; lines: LogLine[]; dir: string } {
  const { logger, lines } = capture();
  const m = new SubprocessManager({ logger, graceMs: 2_000 });
  const dir = mkdtempSync(join(tmpdir(), "supervisor-test-"));
  t.after(async () => {
    await m.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { m, lines, dir };
}

async function ready(lines: LogLine[], name: string): Promise<void> {
  await waitFor(() => lines.some((l) => l["helper"] === name && l["msg"] === "ready"), {
    what: `${name} ready`,
  });
}

function recorded(file: string): string[][] {
  if (!existsSync(file)) return [];
  return readFileSync(file, "utf8")
    .trim()
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => l.split(" "));
}

function crashState(m: SubprocessManager): { crash: HelperCrash | undefined } {
  const state: { crash: HelperCrash | undefined } = { crash: undefined };
  void m.crashed.then((c) => (state.crash = c));
  return state;
}

void test("the first unexpected exit is reported exactly once, also when two helpers die together", async (t) => {
  const { m, lines } = setup(t);
  const a = await m.start("a", helper({}));
  const b = await m.start("b", helper({}));
  const c = await m.start("c", helper({}));
  await Promise.all(["a", "b", "c"].map((n) => ready(lines, n)));

  process.kill(b, "SIGKILL");
  const crash = await m.crashed;
  assert.deepEqual(crash, { name: "b", pid: b, code: null, signal: "SIGKILL" });

  // Two more die in the same tick: still only the one report.
  process.kill(a, "SIGKILL");
  process.kill(c, "SIGKILL");
  await waitFor(() => m.running().size === 0, { what: "all helpers gone" });
  assert.equal(lines.filter((l) => l["event"] === "helper_crash").length, 1);
  assert.equal(lines.filter((l) => l["msg"] === "helper exited unexpectedly (not the first)").length, 2);
  assert.deepEqual(await m.crashed, crash);
});

void test("a helper exiting with code 0 before shutdown is a crash too", async (t) => {
  const { m } = setup(t);
  await m.start("quitter", helper({ HELPER_EXIT_AFTER_MS: "10", HELPER_EXIT_CODE: "0" }));
  const crash = await m.crashed;
  assert.equal(crash.name, "quitter");
  assert.equal(crash.code, 0);
});

void test("after beginShutdown an exit is not a crash", async (t) => {
  const { m, lines } = setup(t);
  const state = crashState(m);
  const pid = await m.start("a", helper({}));
  await ready(lines, "a");
  m.beginShutdown();
  process.kill(pid, "SIGKILL");
  await waitFor(() => !m.running().has("a"), { what: "a gone" });
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(state.crash, undefined);
  assert.ok(
    lines.some((l) => l["helper"] === "a" && l["msg"] === "helper stopped" && l["signal"] === "SIGKILL"),
  );
  await assert.rejects(m.start("late", helper({})), (e: SupervisorError) => e.reason === "shutting_down");
});

void test("stop() ends one helper without a crash report; the others run on and the name is free again", async (t) => {
  const { m, lines, dir } = setup(t);
  const record = join(dir, "record");
  const state = crashState(m);
  const keep = await m.start("keep", helper({ HELPER_NAME: "keep", HELPER_RECORD: record }));
  const proxy = await m.start("proxy", helper({ HELPER_NAME: "proxy", HELPER_RECORD: record }));
  await Promise.all([ready(lines, "keep"), ready(lines, "proxy")]);
  assert.equal(await m.stop("proxy"), "stopped");
  assert.equal(isAlive(proxy), false);
  assert.deepEqual([...m.running().keys()], ["keep"]);
  assert.ok(isAlive(keep));
  assert.deepEqual(
    recorded(record).map(([name, signal]) => `${name}:${signal}`),
    ["proxy:SIGTERM"],
  );
  // The same name again, and a helper that ignores SIGTERM is killed after the grace.
  const again = await m.start("proxy", helper({ HELPER_NAME: "proxy", HELPER_IGNORE_TERM: "1" }));
  await waitFor(() => lines.filter((l) => l["helper"] === "proxy" && l["msg"] === "ready").length === 2, {
    what: "second proxy ready",
  });
  assert.equal(await m.stop("proxy", 200), "killed");
  assert.equal(isAlive(again), false);
  assert.equal(await m.stop("never-started"), "stopped");
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(state.crash, undefined, "a stopped helper is no crash");
  // A later crash of another helper is still reported.
  process.kill(keep, "SIGKILL");
  assert.equal((await m.crashed).name, "keep");
});

void test("a channel helper's fd 3 is ours to talk over; what it wrote before we read is kept", async (t) => {
  const { m } = setup(t);
  const pid = await m.start("chatty", { ...helper({ HELPER_ECHO_CHANNEL: "1" }), channel: true });
  const channel = m.channel("chatty");
  assert.ok(channel !== undefined);
  assert.equal(m.channel("nobody"), undefined);
  // The greeting is written at once; reading starts well after it arrived.
  await waitFor(() => channel.readableLength > 0, { what: "the greeting to be buffered" });
  let text = "";
  channel.setEncoding("utf8").on("data", (d: string) => (text += d));
  channel.write("ping\n");
  await waitFor(() => text === `hello ${pid}\nping\n`, {
    what: `the greeting and the echo (got ${JSON.stringify(text)})`,
  });
  const closed = new Promise((resolve) => channel.once("close", resolve));
  await m.stop("chatty");
  await closed;
  assert.equal(m.channel("chatty"), undefined, "the name is gone with its channel");
});

void test("shutdown stops helpers in reverse start order with SIGTERM and leaves no process", async (t) => {
  const { m, lines, dir } = setup(t);
  const record = join(dir, "record");
  const state = crashState(m);
  const pids: number[] = [];
  for (const name of ["first", "second", "third"]) {
    pids.push(await m.start(name, helper({ HELPER_NAME: name, HELPER_RECORD: record })));
    await ready(lines, name);
  }
  const closing = m.shutdown(5_000);
  assert.equal(m.shutdown(1), closing, "a second shutdown shares the running one");
  await m.close();
  assert.deepEqual(await closing, { forced: [], survived: [] }, "all stopped on SIGTERM");
  const rows = recorded(record);
  assert.deepEqual(
    rows.map(([name, signal]) => `${name}:${signal}`),
    ["third:SIGTERM", "second:SIGTERM", "first:SIGTERM"],
  );
  for (const pid of pids) assert.equal(isAlive(pid), false, `pid ${pid} still alive`);
  assert.equal(m.running().size, 0);
  assert.equal(state.crash, undefined);
});

void test("a helper that ignores SIGTERM is killed after the timeout", async (t) => {
  const { m, lines, dir } = setup(t);
  const record = join(dir, "record");
  const pid = await m.start("stubborn", helper({ HELPER_RECORD: record, HELPER_IGNORE_TERM: "1" }));
  await ready(lines, "stubborn");
  assert.deepEqual(await m.shutdown(300), { forced: ["stubborn"], survived: [] });
  assert.equal(isAlive(pid), false);
  assert.deepEqual(
    recorded(record).map((r) => r[1]),
    ["SIGTERM"],
  );
  assert.ok(lines.some((l) => l["event"] === "helper_forced_kill" && l["helper"] === "stubborn"));
  assert.ok(lines.some((l) => l["msg"] === "helper stopped" && l["signal"] === "SIGKILL"));
});

void test("shutdown has one deadline for all helpers, not a grace per helper that adds up", async (t) => {
  const { m, lines, dir } = setup(t);
  const record = join(dir, "record");
  const pids: number[] = [];
  for (const name of ["first", "second", "third"]) {
    pids.push(
      await m.start(name, helper({ HELPER_NAME: name, HELPER_RECORD: record, HELPER_IGNORE_TERM: "1" })),
    );
    await ready(lines, name);
  }
  const began = Date.now();
  const report = await m.shutdown(1_000);
  const took = Date.now() - began;
  // Per-helper graces would take 3 x 1000 ms; one deadline takes 1000 ms plus the kills.
  assert.ok(took >= 950 && took < 2_500, `shutdown took ${took} ms`);
  assert.deepEqual(report, { forced: ["third", "second", "first"], survived: [] });
  // Past the deadline a helper gets SIGKILL right after its SIGTERM and may die before it records
  // the SIGTERM; those that did record are in reverse start order, the last started first.
  const order = recorded(record).map(([name]) => name);
  assert.equal(order[0], "third");
  assert.deepEqual(
    order,
    ["third", "second", "first"].filter((name) => order.includes(name)),
  );
  for (const pid of pids) assert.equal(isAlive(pid), false);
});

void test("whatever a crashed helper spawned dies with it (process group sweep)", async (t) => {
  const { m, lines, dir } = setup(t);
  const pidfile = join(dir, "grandchild");
  const pid = await m.start("parent", helper({ HELPER_GRANDCHILD_PIDFILE: pidfile }));
  await ready(lines, "parent");
  const grandchild = Number(readFileSync(pidfile, "utf8"));
  assert.ok(isAlive(grandchild));
  process.kill(pid, "SIGKILL"); // the helper alone, not its group
  await m.crashed;
  await waitFor(() => !isAlive(grandchild), { what: "grandchild gone" });
});

void test("forwardSignal reaches every running helper", async (t) => {
  const { m, lines, dir } = setup(t);
  const record = join(dir, "record");
  for (const name of ["x", "y"]) await m.start(name, helper({ HELPER_NAME: name, HELPER_RECORD: record }));
  await Promise.all(["x", "y"].map((n) => ready(lines, n)));
  m.forwardSignal("SIGHUP");
  await waitFor(() => recorded(record).length === 2, { what: "two SIGHUP records" });
  assert.deepEqual(
    recorded(record)
      .map((r) => `${r[0]}:${r[1]}`)
      .sort(),
    ["x:SIGHUP", "y:SIGHUP"],
  );
  assert.equal(m.running().size, 2);
});

void test("a missing executable is a SpawnError, not a crash", async (t) => {
  const { m } = setup(t);
  const state = crashState(m);
  await assert.rejects(m.start("ghost", { file: "/nonexistent/clawker-helper" }), (e: unknown) => {
    assert.ok(e instanceof SpawnError);
    assert.equal(e.reason, "executable_not_found");
    assert.equal(e.code, "ENOENT");
    assert.equal(e.helper, "ghost");
    return true;
  });
  assert.equal(m.running().size, 0);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(state.crash, undefined);
  // A failed start leaves no trace; a name that did start cannot be reused.
  await m.start("ghost", helper({}));
  await assert.rejects(m.start("ghost", helper({})), (e: SupervisorError) => e.reason === "duplicate_helper");
});

void test("a file that is not executable is spawn_failed (EACCES)", async (t) => {
  const { m, dir } = setup(t);
  const file = join(dir, "not-executable");
  writeFileSync(file, "#!/bin/sh\n");
  chmodSync(file, 0o644);
  await assert.rejects(
    m.start("noexec", { file }),
    (e: SpawnError) => e.reason === "spawn_failed" && e.code === "EACCES",
  );
});

void test("helper output is forwarded line by line; JSON lines keep their level and fields", async (t) => {
  const { m, lines } = setup(t);
  const print = JSON.stringify([
    ["stdout", "plain one\nplain "],
    ["stdout", "two\r\n"],
    ["stderr", JSON.stringify({ level: 50, msg: "boom", token: "x", detail: 7 }) + "\n"],
    ["stderr", JSON.stringify({ level: "warning", message: "careful" }) + "\n"],
    ["stderr", "{not json\n"],
  ]);
  await m.start("talker", helper({ HELPER_PRINT: print }));
  await ready(lines, "talker");
  const from = (stream: string): LogLine[] =>
    lines.filter((l) => l["helper"] === "talker" && l["stream"] === stream);
  await waitFor(() => from("stderr").length === 3, { what: "stderr lines" });
  assert.deepEqual(
    from("stdout").map((l) => l["msg"]),
    ["plain one", "plain two", "ready"],
  );
  const [boom, careful, notJson] = from("stderr");
  assert.equal(boom?.["msg"], "boom");
  assert.equal(boom?.["level"], 50);
  assert.deepEqual(boom?.["line"], { level: 50, msg: "boom", token: "x", detail: 7 });
  assert.equal(careful?.["msg"], "careful");
  assert.equal(careful?.["level"], 40);
  assert.equal(notJson?.["msg"], "{not json");
  assert.equal(notJson?.["level"], 30);
});

void test("waitHealthy resolves once the helper answers 200", async (t) => {
  const { m, lines } = setup(t);
  const port = await freePort();
  await m.start("web", helper({ HELPER_HTTP_PORT: String(port), HELPER_HEALTHY_AFTER_MS: "300" }));
  await m.waitHealthy("web", { url: `http://127.0.0.1:${port}/health`, intervalMs: 50, timeoutMs: 10_000 });
  const done = lines.find((l) => l["msg"] === "helper healthy");
  assert.ok(typeof done?.["attempts"] === "number" && done["attempts"] > 1, "it polled through 503s first");
});

void test("waitHealthy asks again as soon as the helper writes a line, not a poll interval later", async (t) => {
  const { m } = setup(t);
  const port = await freePort();
  // The fixture prints "ready" once it listens. The first probe (right after the spawn) finds
  // nothing listening; with a 10-minute interval only the wake-up on that line can end the wait
  // within the budget.
  await m.start("web", helper({ HELPER_HTTP_PORT: String(port) }));
  await m.waitHealthy("web", {
    url: `http://127.0.0.1:${port}/health`,
    intervalMs: 600_000,
    timeoutMs: 20_000,
  });
});

void test("waitHealthy with an instance nonce accepts only the answer that echoes it", async (t) => {
  const { m } = setup(t);
  const port = await freePort();
  const body = JSON.stringify({ status: "ok", instance: "abcdefghijklmnop" });
  await m.start("ours", helper({ HELPER_HTTP_PORT: String(port), HELPER_HEALTH_BODY: body }));
  const url = `http://127.0.0.1:${port}/health`;
  await m.waitHealthy("ours", { url, intervalMs: 20, timeoutMs: 10_000, instance: "abcdefghijklmnop" });
  // The same answer for another start's nonce: not ours, at once rather than after the budget.
  const began = Date.now();
  await assert.rejects(
    m.waitHealthy("ours", { url, intervalMs: 20, timeoutMs: 60_000, instance: "qrstuvwxyz012345" }),
    (e: unknown) => e instanceof HelperNotOursError && e.reason === "not_ours" && e.url === url,
  );
  assert.ok(Date.now() - began < 5_000);
});

void test("waitHealthy fails fast when the helper exits before becoming healthy", async (t) => {
  const { m } = setup(t);
  const port = await freePort();
  await m.start(
    "doomed",
    helper({
      HELPER_HTTP_PORT: String(port),
      HELPER_HEALTHY_AFTER_MS: "600000",
      HELPER_EXIT_AFTER_MS: "200",
    }),
  );
  await assert.rejects(
    m.waitHealthy("doomed", { url: `http://127.0.0.1:${port}/health`, intervalMs: 20, timeoutMs: 60_000 }),
    (e: unknown) => e instanceof HelperExitedError && e.reason === "exited_before_healthy" && e.code === 3,
  );
  // Asking again after the exit fails at once the same way.
  await assert.rejects(
    m.waitHealthy("doomed", { url: `http://127.0.0.1:${port}/health` }),
    (e: unknown) => e instanceof HelperExitedError,
  );
});

void test("waitHealthy gives up when the budget runs out, with the last failure as cause", async (t) => {
  const { m, lines } = setup(t);
  const port = await freePort();
  await m.start("sick", helper({ HELPER_HTTP_PORT: String(port), HELPER_HEALTH_STATUS: "500" }));
  await ready(lines, "sick");
  await assert.rejects(
    m.waitHealthy("sick", { url: `http://127.0.0.1:${port}/health`, intervalMs: 20, timeoutMs: 400 }),
    (e: unknown) => {
      assert.ok(e instanceof HealthTimeoutError);
      assert.equal(e.reason, "health_timeout");
      assert.ok(e.attempts > 1);
      assert.ok(e.cause instanceof ProbeError && e.cause.reason === "unexpected_status");
      return true;
    },
  );
  assert.equal(m.running().has("sick"), true, "a failed wait does not stop the helper");
});

void test("waitHealthy stops when its signal aborts", async (t) => {
  const { m } = setup(t);
  const port = await freePort();
  await m.start("slow", helper({ HELPER_HTTP_PORT: String(port), HELPER_HEALTHY_AFTER_MS: "600000" }));
  const ac = new AbortController();
  const waiting = m.waitHealthy("slow", {
    url: `http://127.0.0.1:${port}/health`,
    intervalMs: 20,
    signal: ac.signal,
  });
  setTimeout(() => ac.abort(new Error("operator gave up")), 150);
  await assert.rejects(
    waiting,
    (e: unknown) => e instanceof HealthAbortedError && e.reason === "health_aborted",
  );
  await assert.rejects(
    m.waitHealthy("slow", { url: `http://127.0.0.1:${port}/health`, signal: AbortSignal.abort() }),
    (e: unknown) => e instanceof HealthAbortedError,
  );
  await assert.rejects(
    m.waitHealthy("nobody", { url: `http://127.0.0.1:${port}/health` }),
    (e: SupervisorError) => e.reason === "unknown_helper",
  );
});
