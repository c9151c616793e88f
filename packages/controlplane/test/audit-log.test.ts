// The audit log against what really happens to a log: a writer process SIGKILLed mid-write, a
// file size limit (EFBIG, RLIMIT_FSIZE through prlimit), a full file system (ENOSPC, a small
// tmpfs mounted here), another local user trying to read it, and an operator action through the
// real daemon's admin RPC landing in it with the caller's identity.
import assert from "node:assert/strict";
import { spawn, execFile } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readFile, readdir, rm, stat, writeFile, mkdir, unlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, describe, test } from "node:test";
import { CLI_CN, openAdminClient } from "@clawker/adminclient";
import type { egress } from "@clawker/proto";
import { admin } from "@clawker/proto";
import { AuditLog } from "../src/firewall/audit/audit-log.js";
import { auditFileName } from "../src/firewall/audit/audit-files.js";
import { sampleEvent } from "./fixtures/firewall-event.js";
import { startControlPlane } from "../../../test/harness/controlplane.js";
import { command, requires, root } from "../../../test/harness/preconditions.js";
import { runNodeAsSecondUser, secondUser } from "../../../test/harness/second-user.js";
import { waitFor } from "../../../test/harness/wait-for.js";

const run = promisify(execFile);
const WRITER = new URL("./fixtures/audit-writer.ts", import.meta.url).pathname;

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
async function tempDir(prefix = "audit-it-"): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

async function readAll(dir: string): Promise<egress.FirewallEvent[]> {
  const reader = new AuditLog({ dir });
  const out: egress.FirewallEvent[] = [];
  for await (const e of reader.readEvents(0n, () => true)) out.push(e);
  return out;
}

/** Every line of every audit file, in file order, raw. */
async function rawLines(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const name of (await readdir(dir)).sort()) {
    out.push(...(await readFile(join(dir, name), "utf8")).split("\n"));
  }
  return out;
}

/**
 * Decisions read back are 1..n in order with no hole, except where a gap record says how many
 * are missing; returns the highest seq and the total the gaps account for.
 */
function assertAccountedFor(events: readonly egress.FirewallEvent[]): { last: bigint; lost: bigint } {
  let expected = 1n;
  let lost = 0n;
  let gapBudget = 0n;
  for (const e of events) {
    if (e.gapCount > 0n) {
      gapBudget += e.gapCount;
      lost += e.gapCount;
      continue;
    }
    // A hole is allowed only as large as the gaps recorded so far and not yet used.
    const hole = e.seq - expected;
    assert.ok(hole >= 0n, `seq ${e.seq} after ${expected - 1n}: out of order or repeated`);
    assert.ok(hole <= gapBudget, `seq ${expected}..${e.seq - 1n} missing without a gap record`);
    gapBudget -= hole;
    expected = e.seq + 1n;
  }
  return { last: expected - 1n, lost };
}

describe("the audit log survives a writer killed mid-write", () => {
  test("SIGKILL during writes: every complete record reads, the torn tail is skipped, a restart says so", async (t) => {
    const base = await tempDir();
    const dir = join(base, "audit");
    const child = spawn(
      process.execPath,
      ["--import", "tsx", "--conditions=source", WRITER, dir, "forever"],
      {
        stdio: ["ignore", "pipe", "inherit"],
        env: { ...process.env, AUDIT_MAX_FILE_BYTES: String(512 * 1024) },
      },
    );
    t.after(() => child.kill("SIGKILL"));
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    await waitFor(() => out.includes("started"), { timeoutMs: 60_000, what: "the writer's first batch" });
    // Kill it once a few files were written (rotation included), while it is writing.
    await waitFor(async () => (await readdir(dir)).length >= 3, { timeoutMs: 60_000, what: "three files" });
    child.kill("SIGKILL");
    await once(child, "exit");

    const files = (await readdir(dir)).sort();
    const newest = await readFile(join(dir, files.at(-1)!));
    const tornByKill = newest.length > 0 && newest[newest.length - 1] !== 0x0a;
    // SIGKILL lands inside write(2) only sometimes; when it did not, leave what it does leave.
    if (!tornByKill)
      await writeFile(join(dir, files.at(-1)!), '{"v":1,"kind":"decision","time_', { flag: "a" });
    t.diagnostic(`torn by the kill itself: ${tornByKill}; ${files.length} files`);

    const completeLines = (await rawLines(dir)).filter((l) => {
      try {
        JSON.parse(l);
        return true;
      } catch {
        return false;
      }
    }).length;
    const before = await readAll(dir);
    assert.equal(before.length, completeLines, "every complete line is a record that reads");
    const { last, lost } = assertAccountedFor(before);
    assert.equal(lost, 0n, "nothing dropped: the writer's backlog never filled");
    assert.ok(last > 1000n, `${last} records before the kill`);

    // The next start closes off the torn line, writes a gap record, and appends after it.
    const next = new AuditLog({ dir, maxFileBytes: 512 * 1024, maxFiles: 100_000 });
    await next.start();
    next.event(sampleEvent(last + 1n));
    await next.close();
    const afterRestart = await readAll(dir);
    assert.deepEqual(afterRestart.slice(0, before.length), before, "earlier records untouched");
    assert.deepEqual(
      afterRestart.slice(before.length).map((e) => [e.seq, e.gapCount, e.reason]),
      [
        [0n, 1n, "audit_gap"],
        [last + 1n, 0n, "no_rule"],
      ],
    );
  });
});

describe("a file that cannot grow (EFBIG)", () => {
  test("RLIMIT_FSIZE: the failed batch is counted, the next file takes a gap record, nothing else is lost", async (t) => {
    if (!requires(t, command("prlimit"))) return;
    const base = await tempDir();
    const dir = join(base, "audit");
    const total = 20_000;
    // Files may grow to 4 MiB but the process may write only 1 MiB into any file.
    const { stdout } = await run(
      "prlimit",
      [
        `--fsize=${1024 * 1024}`,
        process.execPath,
        "--import",
        "tsx",
        "--conditions=source",
        WRITER,
        dir,
        "count",
        String(total),
      ],
      { env: { ...process.env, AUDIT_MAX_FILE_BYTES: String(4 * 1024 * 1024) }, timeout: 120_000 },
    );
    const stats = JSON.parse(stdout) as { lost: number; writeErrors: number; lastError: string };
    assert.ok(stats.writeErrors >= 1, JSON.stringify(stats));
    assert.equal(stats.lastError, "EFBIG");
    assert.ok(stats.lost > 0);
    const sizes = await Promise.all((await readdir(dir)).map(async (n) => (await stat(join(dir, n))).size));
    assert.ok(sizes.length >= 2, "rotated past the full file");
    assert.ok(
      sizes.every((s) => s <= 1024 * 1024),
      `${sizes.join(", ")}`,
    );
    const events = await readAll(dir);
    const { last, lost } = assertAccountedFor(events);
    assert.equal(last, BigInt(total));
    assert.equal(lost, BigInt(stats.lost), "every lost record is in a gap record");
    assert.equal(events.filter((e) => e.gapCount === 0n).length + stats.lost, total);
  });
});

describe("a full file system (ENOSPC)", () => {
  test("drops are counted, earlier records stay intact, and a gap record follows once there is room", async (t) => {
    if (!requires(t, root, command("mount"))) return;
    const mnt = await tempDir("audit-tmpfs-");
    await run("mount", ["-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", mnt]);
    t.after(() => run("umount", ["-l", mnt]));
    const dir = join(mnt, "audit");
    const audit = new AuditLog({ dir, maxFileBytes: 4 * 1024 * 1024, maxFiles: 4 });
    await audit.start();
    // Leave about 64 KiB free.
    await writeFile(join(mnt, "filler"), Buffer.alloc(448 * 1024));
    let seq = 0n;
    while (audit.stats().writeErrors === 0 && seq < 100_000n) {
      for (let i = 0; i < 200; i++) audit.event(sampleEvent(++seq));
      await audit.flush();
    }
    assert.equal(audit.stats().lastError, "ENOSPC");
    // Still full: more records are refused and counted, none throws.
    for (let i = 0; i < 500; i++) audit.event(sampleEvent(++seq));
    await audit.flush();
    const lostWhileFull = audit.stats().lost;
    assert.ok(lostWhileFull >= 500, `${lostWhileFull}`);
    const whileFull = await readAll(dir);
    const head = assertAccountedFor(whileFull);
    assert.ok(head.last > 50n, `${head.last} records before the disk filled`);

    // Room again: the gap record goes first, with every record lost while full.
    await unlink(join(mnt, "filler"));
    audit.event(sampleEvent(++seq));
    await audit.flush();
    await audit.close();
    const events = await readAll(dir);
    assert.deepEqual(events.slice(0, whileFull.length), whileFull, "earlier records intact");
    const { last, lost } = assertAccountedFor(events);
    assert.equal(last, seq);
    assert.equal(lost, BigInt(lostWhileFull));
    assert.equal(events.filter((e) => e.gapCount === 0n).length + lostWhileFull, Number(seq));
    assert.equal(events.at(-2)!.gapCount, BigInt(lostWhileFull));
  });
});

describe("another local user", () => {
  test("cannot list the audit folder nor read a file in it (0700 / 0600)", async (t) => {
    if (!requires(t, ...secondUser)) return;
    const base = await tempDir();
    const dir = join(base, "audit");
    // The parent is world-traversable here, so only the audit folder's own mode stands between.
    await mkdir(base, { recursive: true, mode: 0o755 });
    await run("chmod", ["0755", base]);
    const audit = new AuditLog({ dir });
    await audit.start();
    audit.action("rule_change", { clientId: "clawker-cli", cn: "alice" }, { key: "secret.example" });
    await audit.close();
    const file = join(dir, auditFileName(1));
    assert.equal((await stat(dir)).mode & 0o777, 0o700);
    assert.equal((await stat(file)).mode & 0o777, 0o600);
    const script = `
      import { readdirSync, readFileSync } from "node:fs";
      const [dir, file] = process.argv.slice(1);
      const tryIt = (f) => { try { f(); return "ok"; } catch (e) { return e.code; } };
      console.log(JSON.stringify({ list: tryIt(() => readdirSync(dir)), read: tryIt(() => readFileSync(file)) }));
    `;
    const got = JSON.parse(await runNodeAsSecondUser(script, [dir, file])) as Record<string, string>;
    assert.deepEqual(got, { list: "EACCES", read: "EACCES" });
  });
});

describe("actions through the real admin RPC", () => {
  test("FirewallAddRules and a refused FirewallInit are on record with the token's client id and the CN", async (t) => {
    const base = await tempDir("audit-cp-");
    const dataDir = join(base, "data");
    const cp = await startControlPlane({ dataDir });
    t.after(() => cp.close());
    const client = openAdminClient({
      trust: cp.trust!,
      target: `127.0.0.1:${cp.ports.admin}`,
      tokenEndpoint: cp.tokenEndpoint,
    });
    t.after(() => client.close());
    await client.firewallAddRules([admin.EgressRule.fromPartial({ dst: "api.example.test" })]);
    // No eBPF enforcement in this daemon: refused (not_enforced), and that attempt is on record too.
    await assert.rejects(client.firewallInit(), /eBPF enforcement is off/);
    const records = (): Promise<Array<Record<string, unknown>>> =>
      rawLines(join(dataDir, "audit")).then((ls) =>
        ls.filter((l) => l !== "").map((l) => JSON.parse(l) as Record<string, unknown>),
      );
    const actions = await waitFor(
      async () => {
        const got = (await records()).filter((r) => r["kind"] === "action");
        return got.length >= 2 ? got : undefined;
      },
      { what: "two action records" },
    );
    const who = { client_id: "clawker-cli", cn: CLI_CN };
    const change = actions.find((r) => r["action"] === "rule_change")!;
    assert.deepEqual(change["who"], who);
    const detail = change["detail"] as Record<string, unknown>;
    assert.equal(detail["op"], "add");
    assert.equal(detail["before"], null);
    assert.equal((detail["after"] as Record<string, unknown>)["dst"], "api.example.test");
    assert.equal(typeof detail["change_seq"], "number");
    const init = actions.find((r) => r["action"] === "stack_up")!;
    assert.deepEqual(init["who"], who);
    assert.deepEqual(init["detail"], { request: {}, outcome: "failed", reason: "not_enforced" });
    assert.equal(await cp.close(), 0);
    // The drain closed the log: everything is complete lines, and the files are 0600.
    const lines = await rawLines(join(dataDir, "audit"));
    assert.equal(lines.at(-1), "", "the last record ends in its newline");
    for (const name of await readdir(join(dataDir, "audit"))) {
      assert.equal((await stat(join(dataDir, "audit", name))).mode & 0o777, 0o600);
    }
  });
});

describe("an audit folder that cannot be opened", () => {
  test("fails the daemon's start-up (exit 1, naming the path): no firewall runs without its log", async (t) => {
    const base = await tempDir("audit-cp-");
    // A regular file where the folder should be.
    await writeFile(join(base, "not-a-folder"), "");
    const cp = await startControlPlane({
      config: { audit: { dir: join(base, "not-a-folder") } },
      noWait: true,
    });
    t.after(() => cp.close());
    assert.equal(await cp.exited, 1);
    const failure = cp.logs.find((l) => l["event"] === "drain");
    assert.equal(failure?.["cause"], "startup_failed");
    assert.match(JSON.stringify(failure), /not-a-folder/);
    assert.equal(cp.logs.filter((l) => l["event"] === "firewall_opened").length, 0);
  });
});
