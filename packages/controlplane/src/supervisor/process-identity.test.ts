// isSameProcess and hasExited on real processes: a running one, a zombie, a recycled pid, a gone
// pid, and a live process without a command line (a kernel thread), which is what an exiting
// process looks like between releasing its memory and becoming a zombie.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { waitFor } from "@clawker/test-support";
import {
  hasExited,
  isSameProcess,
  readProcessIdentity,
  readSpawnedIdentity,
  type ProcessIdentity,
} from "./process-identity.js";

/** PF_KTHREAD in the flags field of /proc/<pid>/stat (include/linux/sched.h). */
const PF_KTHREAD = 0x00200000;

/** The pid and start time of a kernel thread visible here, or undefined when none is. */
function kernelThread(): { pid: number; startTime: string } | undefined {
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if ((Number(fields[6]) & PF_KTHREAD) !== 0 && fields[0] !== "Z") {
        return { pid: Number(entry), startTime: fields[19]! };
      }
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}

void test("a running process is the same and has not exited; once gone it has", async (t) => {
  const child = spawn("sleep", ["60"], { stdio: "ignore" });
  t.after(() => void child.kill("SIGKILL"));
  const identity = readProcessIdentity(child.pid!);
  assert.ok(identity !== undefined);
  assert.deepEqual(identity.cmdline, ["sleep", "60"]);
  assert.equal(isSameProcess(identity), true);
  assert.equal(hasExited(identity), false);
  assert.equal(
    hasExited({ ...identity, startTime: String(Number(identity.startTime) - 1) }),
    true,
    "recycled",
  );
  assert.equal(isSameProcess({ ...identity, cmdline: ["sleep", "61"] }), false, "other argv");
  const gone = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGKILL");
  await gone;
  assert.equal(isSameProcess(identity), false);
  assert.equal(hasExited(identity), true);
});

void test("a zombie has exited", async (t) => {
  // `sleep 60` never waits for the child the shell forked before exec'ing it: that child stays a zombie.
  const parent = spawn("sh", ["-c", "sleep 0 & echo $!; exec sleep 60"], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  t.after(() => void parent.kill("SIGKILL"));
  const pid = await new Promise<number>((resolve) =>
    parent.stdout.setEncoding("utf8").once("data", (s: string) => resolve(Number(s.trim()))),
  );
  const stat = (): string => readFileSync(`/proc/${pid}/stat`, "utf8");
  await waitFor(
    () =>
      stat()
        .slice(stat().lastIndexOf(")") + 2)
        .startsWith("Z"),
    { what: "a zombie" },
  );
  const startTime = stat()
    .slice(stat().lastIndexOf(")") + 2)
    .split(" ")[19]!;
  const identity: ProcessIdentity = { pid, startTime, bootId: "x", cmdline: ["sleep", "0"] };
  assert.equal(readProcessIdentity(pid), undefined);
  assert.equal(hasExited(identity), true);
});

void test("a live process without a command line has not exited, though it no longer matches its record", (t) => {
  const kthread = kernelThread();
  if (kthread === undefined) {
    t.skip("no kernel thread is visible in this pid namespace");
    return;
  }
  const identity: ProcessIdentity = { ...kthread, bootId: "x", cmdline: ["helper"] };
  assert.equal(readProcessIdentity(kthread.pid), undefined, "no cmdline: no identity");
  assert.equal(isSameProcess(identity), false);
  // An exiting helper is in this state from exit_mm to exit_notify while it still holds its
  // sockets: waiting for !isSameProcess returned too early (orphans.test.ts flaked on it).
  assert.equal(hasExited(identity), false);
});

void test("a wrapper script read at 'spawn' while it execs its program still has an identity", async (t) => {
  // Read at 'spawn', a wrapper that execs at once is caught mid-exec now and then (empty cmdline:
  // one read in 16 here): readProcessIdentity says undefined for a live helper, which then went
  // unrecorded and survived a SIGKILLed daemon's restart. 80 spawns hit that window all but surely.
  const dir = mkdtempSync(join(tmpdir(), "clawker-wrapper-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const wrapper = join(dir, "helper");
  writeFileSync(wrapper, "#!/bin/sh\nexec sleep 60\n");
  chmodSync(wrapper, 0o755);
  for (let i = 0; i < 80; i++) {
    const child = spawn(wrapper, [], { stdio: "ignore" });
    try {
      await new Promise((resolve, reject) => child.once("spawn", resolve).once("error", reject));
      const identity = await readSpawnedIdentity(child.pid!);
      assert.ok(identity !== undefined, `spawn ${i}: no identity for a live helper`);
      assert.ok(
        identity.cmdline[0] === "/bin/sh" || identity.cmdline[0] === "sleep",
        `spawn ${i}: ${JSON.stringify(identity.cmdline)}`,
      );
    } finally {
      child.kill("SIGKILL");
    }
  }
});

void test("readSpawnedIdentity of a gone process answers undefined at once", async () => {
  const child = spawn("true", [], { stdio: "ignore" });
  await new Promise((resolve) => child.once("exit", resolve));
  const began = Date.now();
  assert.equal(await readSpawnedIdentity(child.pid!), undefined);
  assert.ok(Date.now() - began < 500, "it did not wait out its bound for a gone pid");
});
