// What happens to helpers when their supervisor is SIGKILLed (no exit hook runs): a helper with a
// lifeline exits by itself, the kernel kills one started with dieWithParent; one with neither (an
// Ory binary) is left, and the next manager kills exactly it from the record file, never a process
// that merely has a recorded pid. Real processes only.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import { isAlive, JsonLines, waitFor, type JsonLine } from "@clawker/test-support";
import { pino, type Logger } from "pino";
import type { SupervisorError } from "./errors.js";
import { readHelperRecords, writeHelperRecords, type HelperRecord } from "./helper-records.js";
import { readProcessIdentity } from "./process-identity.js";
import { SubprocessManager } from "./subprocess-manager.js";

const FIXTURE = fileURLToPath(new URL("../../test/fixtures/orphaning-supervisor.ts", import.meta.url));
const HELPER = fileURLToPath(new URL("../../test/fixtures/helper.js", import.meta.url));
const REPO = fileURLToPath(new URL("../../../../", import.meta.url));

type LogLine = JsonLine;

/** A trace-level logger whose records land, parsed, in `lines`. */
function capture(): { logger: Logger; lines: LogLine[] } {
  const sink = new JsonLines();
  return { logger: pino({ level: "trace" }, sink), lines: sink.lines };
}

function tempDir(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), "supervisor-orphans-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Kills `pid` at the end of the test if it still runs, whatever the test did. */
function reapAfter(t: TestContext, pid: number): void {
  t.after(() => {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  });
}

function sleeper(t: TestContext): ChildProcess {
  const child = spawn("sleep", ["60"], { stdio: "ignore" });
  t.after(() => void child.kill("SIGKILL"));
  return child;
}

void test("SIGKILL of the supervisor: the lifeline helper exits at once, the dieWithParent one is killed, the next manager kills only the verified leftover", async (t) => {
  const dir = tempDir(t);
  const stateFile = join(dir, "state", "helpers.json");
  const record = join(dir, "record");
  const supervisor = spawn(
    process.execPath,
    ["--import", "tsx", "--conditions=source", FIXTURE, stateFile, record],
    { cwd: REPO, stdio: ["ignore", "pipe", "inherit"] },
  );
  reapAfter(t, supervisor.pid!);
  const firstLine = await new Promise<string>((resolve, reject) => {
    let out = "";
    supervisor.stdout.setEncoding("utf8").on("data", (c: string) => {
      out += c;
      if (out.includes("\n")) resolve(out.slice(0, out.indexOf("\n")));
    });
    supervisor.once("exit", (code) => reject(new Error(`fixture exited ${code}`)));
  });
  const { watching, deaf, bound } = JSON.parse(firstLine) as {
    watching: number;
    deaf: number;
    bound: number;
  };
  reapAfter(t, watching);
  reapAfter(t, deaf);
  reapAfter(t, bound);

  // The record is private and names both running helpers with their /proc identity.
  assert.equal(statSync(stateFile).mode & 0o777, 0o600);
  assert.equal(statSync(join(dir, "state")).mode & 0o777, 0o700);
  const recorded = readHelperRecords(stateFile).records;
  assert.deepEqual(
    recorded.map((r) => [r.name, r.pid]),
    [
      ["watching", watching],
      ["deaf", deaf],
      ["bound", bound],
    ],
  );
  assert.deepEqual(recorded[1]?.cmdline, readProcessIdentity(deaf)?.cmdline);
  // The program's own argv, not its launcher's (setpriv), so a later manager can recognise it.
  assert.deepEqual(recorded[2]?.cmdline, readProcessIdentity(bound)?.cmdline);
  assert.equal(recorded[2]?.cmdline[0], process.execPath);

  supervisor.kill("SIGKILL");
  const began = Date.now();
  await waitFor(() => !isAlive(watching), { timeoutMs: 5_000, what: "the lifeline helper to exit" });
  const ms = Date.now() - began;
  assert.ok(ms < 2_000, `the lifeline helper took ${ms} ms`);
  assert.match(readFileSync(record, "utf8"), /^watching LIFELINE_EOF /m);
  await waitFor(() => !isAlive(bound), { timeoutMs: 5_000, what: "the dieWithParent helper to be killed" });
  assert.equal(isAlive(deaf), true, "without a lifeline the helper outlives its supervisor");

  // Two records that name a live unrelated process by pid: a recycled pid (other start time) and
  // a matching start time with another argv. Neither may be signalled.
  const bystander = sleeper(t);
  const real = readProcessIdentity(bystander.pid!)!;
  const deafRecord = recorded.find((r) => r.name === "deaf")!;
  const forged: HelperRecord[] = [
    { ...deafRecord, name: "recycled", pid: real.pid, startTime: String(Number(real.startTime) - 1) },
    { ...real, name: "other-argv", cmdline: [...deafRecord.cmdline] },
  ];
  writeHelperRecords(stateFile, [...recorded, ...forged]);

  const { logger, lines } = capture();
  const next = new SubprocessManager({ logger, stateFile });
  t.after(() => next.close());
  const report = await next.reapLeftovers();
  assert.deepEqual(
    report.killed.map((r) => r.name),
    ["deaf"],
  );
  assert.deepEqual(
    report.skipped.map((r) => r.name),
    ["watching", "bound", "recycled", "other-argv"],
  );
  assert.equal(isAlive(deaf), false, "the verified leftover is gone");
  assert.equal(isAlive(bystander.pid!), true, "the unrelated process survived");
  assert.equal(bystander.signalCode, null);
  const killed = lines.find((l) => l["event"] === "leftover_killed");
  assert.equal(killed?.["helper"], "deaf");
  assert.equal(killed?.["pid"], deaf);
  assert.deepEqual(readHelperRecords(stateFile).records, [], "the record is cleared");
});

void test("the record follows starts and exits and is empty after shutdown", async (t) => {
  const dir = tempDir(t);
  const stateFile = join(dir, "helpers.json");
  const { logger } = capture();
  const m = new SubprocessManager({ logger, stateFile, graceMs: 2_000 });
  t.after(() => m.close());
  assert.deepEqual((await m.reapLeftovers()).killed, [], "no file: nothing to do");
  const a = await m.start("a", { file: process.execPath, args: [HELPER] });
  const b = await m.start("b", { file: process.execPath, args: [HELPER] });
  assert.deepEqual(
    readHelperRecords(stateFile).records.map((r) => [r.name, r.pid]),
    [
      ["a", a],
      ["b", b],
    ],
  );
  await assert.rejects(m.reapLeftovers(), (e: SupervisorError) => e.reason === "already_started");
  m.beginShutdown();
  process.kill(a, "SIGKILL");
  await waitFor(() => readHelperRecords(stateFile).records.length === 1, { what: "a's record to go" });
  await m.shutdown(2_000);
  assert.deepEqual(readHelperRecords(stateFile).records, []);
  assert.equal(statSync(stateFile).mode & 0o777, 0o600);
});

void test("a record file that is not one is reported and ignored; nothing is signalled", async (t) => {
  const dir = tempDir(t);
  const stateFile = join(dir, "helpers.json");
  const bystander = sleeper(t);
  writeFileSync(stateFile, JSON.stringify({ version: 1, helpers: [{ name: "x", pid: bystander.pid }] }));
  const { logger, lines } = capture();
  const m = new SubprocessManager({ logger, stateFile });
  t.after(() => m.close());
  assert.deepEqual(await m.reapLeftovers(), { killed: [], skipped: [] });
  assert.ok(lines.some((l) => l["event"] === "helper_record_unreadable"));
  assert.equal(isAlive(bystander.pid!), true);
});
