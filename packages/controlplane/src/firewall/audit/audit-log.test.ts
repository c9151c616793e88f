// AuditLog on real files in a temp dir: round trips, rotation, the backlog bound and its gap
// record, a torn tail from an earlier run, modes, close. The kill -9, ENOSPC/EFBIG and second-user
// tests are in ../../../test/audit-log.test.ts.
import assert from "node:assert/strict";
import { appendFile, mkdtemp, readFile, readdir, rm, stat, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { egress } from "@clawker/proto";
import { waitFor } from "@clawker/test-support";
import { AuditLog } from "./audit-log.js";
import { auditFileName } from "./audit-files.js";
import { parseRecord } from "./audit-record.js";

/** A denied proxy decision numbered `seq` (test/fixtures/firewall-event.ts is outside this project). */
function sampleEvent(seq: bigint, overrides: Partial<egress.FirewallEvent> = {}): egress.FirewallEvent {
  return {
    ...egress.FirewallEvent.fromPartial({
      schemaVersion: 1,
      timeUnixNanos: 1_764_936_000_000_000_000n + seq * 1_000n,
      agentName: "dev",
      project: "web",
      containerId: "ab12".repeat(16),
      dstName: "api.example.test",
      dstAddr: "203.0.113.7",
      port: 443,
      protocol: "https",
      verdict: egress.Verdict.VERDICT_DENIED,
      layer: egress.Layer.LAYER_PROXY,
      reason: "no_rule",
    }),
    seq,
    ...overrides,
  };
}

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), "audit-"));
  dirs.push(d);
  return join(d, "audit");
}

async function readAll(audit: AuditLog, since = 0n): Promise<egress.FirewallEvent[]> {
  const out: egress.FirewallEvent[] = [];
  for await (const e of audit.readEvents(since, () => true)) out.push(e);
  return out;
}

async function lines(dir: string): Promise<Record<string, unknown>[]> {
  const out: Record<string, unknown>[] = [];
  for (const name of (await readdir(dir)).sort()) {
    for (const line of (await readFile(join(dir, name), "utf8")).split("\n")) {
      if (line !== "") out.push(JSON.parse(line) as Record<string, unknown>);
    }
  }
  return out;
}

describe("AuditLog", () => {
  test("a sustained stream is written in batches (at most one write per 10 ms), every record in order", async () => {
    const dir = await tempDir();
    const audit = new AuditLog({ dir });
    await audit.start();
    const turns = 200;
    const start = performance.now();
    let seq = 0n;
    for (let turn = 0; turn < turns; turn++) {
      for (let i = 0; i < 50; i++) audit.event(sampleEvent(++seq));
      if (turn === turns / 2) audit.action("enable", { clientId: "clawker-cli", cn: "cli" }, { turn });
      await new Promise((resolve) => setImmediate(resolve));
    }
    await audit.flush();
    const elapsedMs = performance.now() - start;
    const { writes, written, lost } = audit.stats();
    assert.deepEqual([written, lost], [turns * 50 + 1, 0]);
    // One write per turn of the event loop would be ~200; the stream waits 10 ms between writes
    // (or until 1,024 records are queued), bounded by the time it took however loaded the machine.
    assert.ok(
      writes <= Math.ceil(elapsedMs / 10) + Math.ceil((turns * 50) / 1024) + 2,
      `writes ${writes} in ${elapsedMs.toFixed(0)} ms`,
    );
    const records = await lines(dir);
    assert.deepEqual(
      records.filter((r) => r["kind"] === "decision").map((r) => r["seq"]),
      Array.from({ length: turns * 50 }, (_, i) => String(i + 1)),
    );
    assert.equal(records[(turns / 2 + 1) * 50]!["kind"], "action", "the action where it was queued");
    await audit.close();
  });

  test("decisions round-trip every field, 64-bit values included; actions carry who and detail", async () => {
    const dir = await tempDir();
    const audit = new AuditLog({ dir });
    await audit.start();
    const full = sampleEvent(2n ** 63n - 1n, {
      timeUnixNanos: 1_764_936_000_123_456_789n,
      rule: { key: "api.example.test:https:443", project: "web", agentName: "dev", action: "deny" },
      method: "POST",
      path: '/v1/x?\n{"forged":true}',
      httpStatus: 403,
      bytesIn: 2n ** 64n - 1n,
      bytesOut: 12n,
      durationMicros: 9_007_199_254_740_993n,
      verdict: egress.Verdict.VERDICT_BYPASSED,
      layer: egress.Layer.LAYER_BPF,
    });
    const bare = sampleEvent(1n, { layer: egress.Layer.LAYER_DNS, dstAddr: "", port: 53, protocol: "dns" });
    audit.event(full);
    audit.event(bare);
    audit.action("rule_change", { clientId: "clawker-cli", cn: "clawker-cli" }, { op: "add", big: 5n });
    await audit.flush();
    assert.deepEqual(await readAll(audit), [full, bare]);

    const records = await lines(dir);
    assert.equal(records.length, 3, "a path with a newline did not split its record");
    assert.ok(records.every((r) => r["v"] === 1));
    assert.equal(records[0]!["time"], "2025-12-05T12:00:00.123456789Z");
    assert.equal(records[0]!["verdict"], "bypassed");
    assert.equal(records[0]!["bytes_in"], "18446744073709551615");
    assert.deepEqual(records[2]!["who"], { client_id: "clawker-cli", cn: "clawker-cli" });
    assert.deepEqual(records[2]!["detail"], { op: "add", big: "5" });
    assert.equal(records[2]!["action"], "rule_change");
    await audit.close();
  });

  test("folder 0700 and files 0600, also when they existed looser", async () => {
    const dir = await tempDir();
    await mkdir(dir, { mode: 0o755 });
    await writeFile(join(dir, auditFileName(1)), "", { mode: 0o644 });
    const audit = new AuditLog({ dir });
    await audit.start();
    audit.event(sampleEvent(1n));
    await audit.flush();
    assert.equal((await stat(dir)).mode & 0o777, 0o700);
    assert.equal((await stat(join(dir, auditFileName(1)))).mode & 0o777, 0o600);
    await audit.close();
  });

  test("rotation keeps at most maxFiles files of at most maxFileBytes; reading spans them in order", async () => {
    const dir = await tempDir();
    const audit = new AuditLog({ dir, maxFileBytes: 4096, maxFiles: 3 });
    await audit.start();
    for (let i = 1n; i <= 300n; i++) {
      audit.event(sampleEvent(i));
      // Several batches, so rotation happens between writes and within a backlog.
      if (i % 100n === 0n) await audit.flush();
    }
    await audit.flush();
    const names = (await readdir(dir)).sort();
    assert.equal(names.length, 3);
    for (const name of names) assert.ok((await stat(join(dir, name))).size <= 4096, name);
    assert.ok(audit.stats().rotations >= 10, `rotations: ${audit.stats().rotations}`);
    const seqs = (await readAll(audit)).map((e) => Number(e.seq));
    assert.ok(seqs.length > 20);
    // The newest records, contiguous, oldest first: nothing skipped inside what is kept.
    assert.deepEqual(
      seqs,
      Array.from({ length: seqs.length }, (_, i) => 300 - seqs.length + 1 + i),
    );
    await audit.close();
    // A restart continues the numbering in the newest file.
    const again = new AuditLog({ dir, maxFileBytes: 4096, maxFiles: 3 });
    await again.start();
    again.event(sampleEvent(301n));
    await again.close();
    const read = await readAll(again);
    assert.equal(read.at(-1)!.seq, 301n);
  });

  test("beyond the backlog decisions are dropped, counted, and reported by a gap record", async () => {
    const dir = await tempDir();
    const audit = new AuditLog({ dir, maxBacklog: 10 });
    await audit.start();
    // All in one turn of the event loop: the writer has not run yet.
    for (let i = 1n; i <= 100n; i++) audit.event(sampleEvent(i));
    audit.action("bypass_start", { clientId: "c" }, { seconds: 5 });
    assert.equal(audit.stats().droppedBacklog, 90);
    assert.equal(audit.stats().backlog, 11, "the action had room beyond the decisions' bound");
    await audit.flush();
    const events = await readAll(audit);
    const gaps = events.filter((e) => e.gapCount > 0n);
    assert.equal(gaps.length, 1);
    assert.equal(gaps[0]!.gapCount, 90n);
    assert.equal(gaps[0]!.reason, "audit_gap");
    assert.deepEqual(
      events.filter((e) => e.gapCount === 0n).map((e) => e.seq),
      Array.from({ length: 10 }, (_, i) => BigInt(i + 1)),
    );
    const gapRecord = (await lines(dir)).find((r) => r["kind"] === "gap")!;
    assert.deepEqual(gapRecord["causes"], { backlog_full: 90 });
    assert.equal(audit.stats().lost, 90);
    assert.equal(audit.stats().gapRecords, 1);
    await audit.close();
  });

  test("a torn last line from an earlier run is skipped and reported; later records read", async () => {
    const dir = await tempDir();
    const first = new AuditLog({ dir });
    await first.start();
    first.event(sampleEvent(1n));
    first.event(sampleEvent(2n));
    await first.close();
    const file = join(dir, auditFileName(1));
    const whole = await readFile(file, "utf8");
    // What a writer killed inside write(2) leaves: half a record, no newline.
    await appendFile(file, whole.slice(0, 40));

    const second = new AuditLog({ dir });
    await second.start();
    second.event(sampleEvent(3n));
    await second.close();
    const events = await readAll(second);
    assert.deepEqual(
      events.map((e) => [e.seq, e.gapCount]),
      [
        [1n, 0n],
        [2n, 0n],
        [0n, 1n],
        [3n, 0n],
      ],
    );
    assert.equal(second.stats().unreadableLines, 1);
    const text = await readFile(file, "utf8");
    assert.ok(text.includes(`${whole.slice(0, 40)}\n{"v":1,"kind":"gap"`), "the torn line was closed off");
    assert.match(text, /"causes":\{"torn_tail":1\}/);
  });

  test("readEvents: since and accept filter; actions are not events", async () => {
    const dir = await tempDir();
    const audit = new AuditLog({ dir });
    await audit.start();
    for (let i = 1n; i <= 10n; i++) {
      audit.event(sampleEvent(i, { agentName: i % 2n === 0n ? "even" : "odd" }));
    }
    audit.action("enable", {}, { containerId: "x" });
    await audit.flush();
    const since = sampleEvent(6n).timeUnixNanos;
    const seqs: bigint[] = [];
    for await (const e of audit.readEvents(since, (e) => e.agentName === "even")) seqs.push(e.seq);
    assert.deepEqual(seqs, [6n, 8n, 10n]);
    await audit.close();
  });

  test("never throws: an unserializable action and records after close are counted", async () => {
    const dir = await tempDir();
    const audit = new AuditLog({ dir });
    await audit.start();
    const cyclic: Record<string, unknown> = {};
    cyclic["self"] = cyclic;
    audit.action("approval", { clientId: "c" }, cyclic);
    await audit.close();
    await audit.close();
    audit.event(sampleEvent(1n));
    audit.action("enable", {}, {});
    assert.equal(audit.stats().lost, 3);
    const records = await lines(dir);
    assert.deepEqual(records.length, 1);
    assert.equal(records[0]!["kind"], "gap");
    assert.deepEqual(records[0]!["causes"], { unserializable: 1 });
  });

  test("close syncs what a quiet log's sync timer would have, and leaves no timer holding the process", async () => {
    const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
    const before = timers();
    const audit = new AuditLog({ dir: await tempDir(), syncIntervalMs: 60_000 });
    await audit.start();
    audit.event(sampleEvent(1n));
    // Written, not synced: the (unref'd) sync timer waits for the interval.
    await waitFor(() => audit.stats().written === 1);
    assert.equal(audit.stats().syncs, 0);
    await audit.close();
    assert.equal(audit.stats().syncs, 1);
    assert.equal(timers(), before);
  });

  test("records queued before start are written by start", async () => {
    const dir = await tempDir();
    const audit = new AuditLog({ dir });
    audit.event(sampleEvent(1n));
    const flushed = audit.flush();
    await audit.start();
    await flushed;
    assert.deepEqual(
      (await readAll(audit)).map((e) => e.seq),
      [1n],
    );
    await audit.close();
  });

  test("parseRecord refuses torn, foreign and later-version lines", () => {
    const line = JSON.stringify({ v: 1, kind: "decision", time_unix_nanos: "1", seq: "1" });
    assert.equal(parseRecord(line)?.kind, "decision");
    for (const bad of [
      line.slice(0, -1),
      "",
      "null",
      "[1]",
      JSON.stringify({ v: 2, kind: "decision", time_unix_nanos: "1", seq: "1" }),
      JSON.stringify({ v: 1, kind: "decision", seq: "1" }),
      JSON.stringify({ v: 1, kind: "decision", time_unix_nanos: "1", seq: "x" }),
      JSON.stringify({ v: 1, kind: "other", time_unix_nanos: "1" }),
      "\u0000\u0000{}",
    ]) {
      assert.equal(parseRecord(bad), undefined, bad);
    }
  });
});
