// The firewall's audit log (issue 11 §2): append-only JSON lines in `<dataDir>/audit/` (dir 0700,
// files 0600), rotated by size with a bounded number of files. Callers never wait: records are
// serialized into a bounded in-memory backlog and written in batches by one asynchronous writer;
// what cannot be queued or written is counted and written later as a `gap` record. See README.md
// for the schema and the fsync policy.
import { createInterface } from "node:readline";
import { mkdir, chmod, open, unlink, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import type { egress } from "@clawker/proto";
import type { Logger } from "pino";
import { auditFileName, listAuditFiles, openForAppend, syncDir } from "./audit-files.js";
import {
  encodeAction,
  encodeDecision,
  encodeGap,
  parseRecord,
  type AuditActionKind,
  type AuditWho,
  type GapCause,
} from "./audit-record.js";

/** Default size at which the current file is closed and the next one started. */
export const DEFAULT_MAX_FILE_BYTES = 64 * 1024 * 1024;
/** Default number of files kept (the current one included). */
export const DEFAULT_MAX_FILES = 8;
/** Default records waiting to be written, beyond which decisions are dropped and counted. */
export const DEFAULT_MAX_BACKLOG = 65_536;
/** Default longest time written records wait for their fdatasync. */
export const DEFAULT_SYNC_INTERVAL_MS = 1_000;
/** Bytes of one write at most, so a large backlog is not copied into one huge buffer. */
const MAX_BATCH_BYTES = 1024 * 1024;
/**
 * Under a sustained stream, a write waits until this long after the previous one (or until
 * COALESCE_LINES are queued): one write of many records instead of one per turn of the event
 * loop, each of which costs a thread-pool round trip and a wake-up.
 */
const COALESCE_MS = 10;
const COALESCE_LINES = 1024;
/** After a failed write (full disk), the next attempt waits this long. */
const RETRY_MS = 100;
/**
 * An event's time may lag its write a little (it was taken where the decision happened), so a
 * file last written this long before `since` may still hold events at or after it.
 */
const MTIME_SLACK_NS = 60_000_000_000n;

/** What the audit log is built from. */
export interface AuditLogOptions {
  /** Its folder (created 0700): `<dataDir>/audit` in the daemon. */
  readonly dir: string;
  readonly maxFileBytes?: number;
  readonly maxFiles?: number;
  /** Records queued at most; beyond, decisions are dropped (actions get as many again). */
  readonly maxBacklog?: number;
  readonly syncIntervalMs?: number;
  readonly log?: Logger;
  /** Clock in nanoseconds since the epoch (tests). */
  readonly now?: () => bigint;
}

/** Counters the metrics read; cheap (a copy of numbers). */
export interface AuditStats {
  /** Records written (gap records included). */
  readonly written: number;
  readonly bytesWritten: number;
  /** Records lost since start: dropped (backlog full), refused by the disk, or unserializable. */
  readonly lost: number;
  /** Of those, dropped because the backlog was full. */
  readonly droppedBacklog: number;
  /** Writes or syncs the disk refused (ENOSPC, EFBIG, EIO, ...). */
  readonly writeErrors: number;
  /** The errno code of the last refused write or sync. */
  readonly lastError: string | undefined;
  readonly gapRecords: number;
  /** Records waiting to be written. */
  readonly backlog: number;
  readonly rotations: number;
  readonly syncs: number;
  /** Write calls made (each takes every record queued that fits). */
  readonly writes: number;
  /** Lines readEvents skipped because they were not complete records (a torn tail). */
  readonly unreadableLines: number;
}

/** The subset of AuditLog that records actions (what the firewall and triage take). */
export interface AuditSink {
  action(kind: AuditActionKind, who: AuditWho, detail: Record<string, unknown>): void;
}

interface Waiter {
  readonly through: number;
  readonly resolve: () => void;
}

const defaultNow = (): bigint => BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));

/** The audit log (see the file comment). */
export class AuditLog implements AuditSink {
  readonly #dir: string;
  readonly #maxFileBytes: number;
  readonly #maxFiles: number;
  readonly #maxBacklog: number;
  readonly #syncIntervalMs: number;
  readonly #log: Logger | undefined;
  readonly #now: () => bigint;

  // The backlog from #head on: actions as their lines (serialized at once: the caller may change
  // its detail object later), decisions as the events themselves, serialized by the writer right
  // into its buffer, so no line outlives its batch (young garbage only, at 100,000 a second).
  #lines: Array<string | egress.FirewallEvent> = [];
  /** The writer's buffer, reused: one write is in flight at a time. */
  #buf: Buffer | undefined;
  #head = 0;
  /** Lines ever queued / taken into a write (monotonic), for flush() and the sync rule. */
  #queued = 0;
  #taken = 0;
  /** Lines up to here (queued count) want an fdatasync as soon as they are written (actions). */
  #syncThrough = 0;
  /** Lines up to here are written and synced, or lost. */
  #settled = 0;
  /** The last write attempt failed (flush() then does not wait for the gap record). */
  #lastFailed = false;
  #waiters: Waiter[] = [];

  // The pending gap: lost records not yet reported in a written gap record.
  #gapLost = 0;
  #gapCauses: Partial<Record<GapCause, number>> = {};

  #fh: FileHandle | undefined;
  #files: number[] = [];
  #size = 0;
  /** The file does not end in a newline (a torn tail, a partial write): the next write starts one. */
  #midLine = false;
  #unsynced = false;
  #rotateNext = false;
  #lastSyncMs = 0;
  /** performance.now() of the last write started (coalescing). */
  #lastWriteMs = -Infinity;
  #syncTimer: NodeJS.Timeout | undefined;
  #syncDue = false;

  #pumping: Promise<void> | undefined;
  #scheduled = false;
  #wake: (() => void) | undefined;
  #closing = false;
  #closed: Promise<void> | undefined;

  #stats = {
    written: 0,
    bytesWritten: 0,
    lost: 0,
    droppedBacklog: 0,
    writeErrors: 0,
    lastError: undefined as string | undefined,
    gapRecords: 0,
    rotations: 0,
    syncs: 0,
    writes: 0,
    unreadableLines: 0,
  };
  #errorLogged = false;

  constructor(options: AuditLogOptions) {
    this.#dir = options.dir;
    this.#maxFileBytes = Math.max(1024, options.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES);
    this.#maxFiles = Math.max(1, options.maxFiles ?? DEFAULT_MAX_FILES);
    this.#maxBacklog = Math.max(1, options.maxBacklog ?? DEFAULT_MAX_BACKLOG);
    this.#syncIntervalMs = Math.max(0, options.syncIntervalMs ?? DEFAULT_SYNC_INTERVAL_MS);
    this.#log = options.log?.child({ component: "audit" });
    this.#now = options.now ?? defaultNow;
  }

  /** The folder holding the files. */
  get dir(): string {
    return this.#dir;
  }

  /**
   * Creates the folder (0700), opens the newest file for appending (0600) and checks its tail: a
   * last line without its newline (a writer killed mid-write) is closed off and reported by a
   * `torn_tail` gap record, so the next record never joins it. Records queued before start are
   * written from here on.
   */
  async start(signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    await mkdir(this.#dir, { recursive: true, mode: 0o700 });
    await chmod(this.#dir, 0o700);
    this.#files = await listAuditFiles(this.#dir);
    const current = this.#files.at(-1) ?? 1;
    const fh = await openForAppend(this.#dir, current);
    try {
      this.#size = (await fh.stat()).size;
      if (this.#size > 0) {
        const last = Buffer.alloc(1);
        // O_APPEND ignores the position for writes only; a read needs its own handle.
        const reader = await open(join(this.#dir, auditFileName(current)), "r");
        try {
          await reader.read(last, 0, 1, this.#size - 1);
        } finally {
          await reader.close();
        }
        if (last[0] !== 0x0a) {
          this.#midLine = true;
          this.#addGap("torn_tail", 1);
          this.#log?.warn(
            { event: "audit_torn_tail", file: auditFileName(current) },
            "audit log ended in a torn record; it is skipped",
          );
        }
      }
    } catch (err) {
      await fh.close();
      throw err;
    }
    if (this.#files.at(-1) !== current) this.#files.push(current);
    this.#fh = fh;
    await syncDir(this.#dir);
    await this.#prune();
    this.#lastSyncMs = Date.now();
    this.#kick();
  }

  /**
   * Appends a decision. Never throws and never waits: beyond the backlog bound it is dropped and
   * counted (a gap record says so as soon as one can be written).
   */
  event(event: egress.FirewallEvent): void {
    if (this.#closing || this.#lines.length - this.#head >= this.#maxBacklog) {
      this.#stats.droppedBacklog++;
      this.#addGap("backlog_full", 1);
      return;
    }
    this.#push(event);
  }

  /**
   * Appends an operator or agent action with who caused it; like event(), it never throws or
   * waits. Actions may fill the backlog up to twice its bound (decisions cannot crowd them out),
   * and their batch is fdatasynced as soon as it is written.
   */
  action(kind: AuditActionKind, who: AuditWho, detail: Record<string, unknown>): void {
    if (this.#closing || this.#lines.length - this.#head >= 2 * this.#maxBacklog) {
      this.#stats.droppedBacklog++;
      this.#addGap("backlog_full", 1);
      return;
    }
    let line: string;
    try {
      line = encodeAction(kind, who, detail, this.#now());
    } catch {
      this.#addGap("unserializable", 1);
      this.#log?.error({ event: "audit_unserializable", action: kind }, "audit action not serializable");
      return;
    }
    this.#push(line);
    this.#syncThrough = this.#queued;
    this.#wake?.(); // an action is not held back by coalescing
  }

  /**
   * Resolves once every record queued before the call is written and fdatasynced, or counted
   * lost. Never rejects. Before start() it waits for start.
   */
  flush(): Promise<void> {
    const through = this.#queued;
    if (this.#isSettled(through)) return Promise.resolve();
    // Held until these lines are synced, however many batches they take.
    this.#syncThrough = Math.max(this.#syncThrough, through);
    if (this.#settled >= through) this.#syncDue = true; // only a gap record waits: write it now
    this.#wake?.();
    this.#kick();
    return new Promise((resolve) => this.#waiters.push({ through, resolve }));
  }

  /**
   * Decisions (and gap records, as events with `gapCount` set and reason `audit_gap`) from
   * `sinceUnixNanos` on, across the rotated files, oldest file first and in written order within
   * a file. `accept` filters; torn or foreign lines are skipped (counted in stats).
   */
  async *readEvents(
    sinceUnixNanos: bigint,
    accept: (event: egress.FirewallEvent) => boolean,
  ): AsyncIterable<egress.FirewallEvent> {
    for (const n of await listAuditFiles(this.#dir)) {
      let fh: FileHandle;
      try {
        fh = await open(join(this.#dir, auditFileName(n)), "r");
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") continue; // rotated away meanwhile
        throw err;
      }
      try {
        const st = await fh.stat({ bigint: true });
        if (st.mtimeNs + MTIME_SLACK_NS < sinceUnixNanos) continue;
        const lines = createInterface({
          input: fh.createReadStream({ autoClose: false }),
          crlfDelay: Infinity,
        });
        for await (const line of lines) {
          if (line.length === 0) continue;
          const record = parseRecord(line);
          if (record === undefined) {
            this.#stats.unreadableLines++;
            continue;
          }
          if (record.kind === "action") continue;
          const event =
            record.kind === "decision" ? record.event : gapEvent(record.lost, record.timeUnixNanos);
          if (event.timeUnixNanos >= sinceUnixNanos && accept(event)) yield event;
        }
      } finally {
        await fh.close();
      }
    }
  }

  /** The counters (a copy). */
  stats(): AuditStats {
    return { ...this.#stats, backlog: this.#lines.length - this.#head };
  }

  /**
   * Writes what is queued (one last try after a failure; what still fails is counted and logged),
   * fdatasyncs and closes the file. Records arriving after close are dropped and counted.
   * Idempotent.
   */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#closing = true;
      clearTimeout(this.#syncTimer);
      this.#wake?.();
      if (this.#fh !== undefined) {
        await this.#pump();
        if (this.#unsynced) await this.#sync();
        await this.#fh.close().catch(() => undefined);
        this.#fh = undefined;
      }
      const left = this.#lines.length - this.#head;
      if (left > 0) this.#addGap("write_failed", left);
      this.#lines = [];
      this.#head = 0;
      this.#settled = this.#queued;
      this.#unsynced = false;
      this.#release();
      if (this.#gapLost > 0) {
        this.#log?.error(
          { event: "audit_records_lost", lost: this.#gapLost, causes: this.#gapCauses },
          "audit records lost and not recorded in the log",
        );
      }
    })();
    return this.#closed;
  }

  // ---- internals ----

  #push(line: string | egress.FirewallEvent): void {
    this.#lines.push(line);
    this.#queued++;
    this.#kick();
  }

  #addGap(cause: GapCause, n: number): void {
    this.#gapLost += n;
    this.#gapCauses[cause] = (this.#gapCauses[cause] ?? 0) + n;
    this.#stats.lost += n;
  }

  /** Schedules the writer for the next turn of the event loop, so one turn's records go in one write. */
  #kick(): void {
    if (this.#scheduled || this.#pumping !== undefined || this.#fh === undefined) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      void this.#pump();
    });
  }

  #hasWork(): boolean {
    return (
      this.#lines.length > this.#head ||
      this.#gapLost > 0 ||
      this.#syncDue ||
      (this.#unsynced && this.#syncThrough > this.#settled)
    );
  }

  #pump(): Promise<void> {
    this.#pumping ??= this.#loop().finally(() => {
      this.#pumping = undefined;
      // Queued between the loop's last look and here: go again.
      if (!this.#closing && this.#hasWork()) this.#kick();
    });
    return this.#pumping;
  }

  async #loop(): Promise<void> {
    while (this.#fh !== undefined && this.#hasWork()) {
      if (this.#lines.length > this.#head || this.#gapLost > 0) {
        await this.#coalesce();
        this.#lastWriteMs = performance.now();
        this.#stats.writes++;
        const ok = await this.#writeBatch();
        this.#lastFailed = !ok;
        if (!ok) {
          // What was written before the failure is made durable; what failed is counted lost.
          if (this.#unsynced) await this.#sync();
          this.#settled = this.#taken;
          this.#release();
          if (this.#closing) return;
          // Not unref'd: records are waiting; close() cuts the wait short.
          await new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, RETRY_MS);
            this.#wake = () => {
              clearTimeout(timer);
              resolve();
            };
          });
          this.#wake = undefined;
          continue;
        }
      }
      if (this.#unsynced) {
        const actionWritten = this.#syncThrough > this.#settled && this.#taken >= this.#syncThrough;
        const intervalUp = Date.now() - this.#lastSyncMs >= this.#syncIntervalMs;
        if (actionWritten || this.#syncDue || intervalUp) await this.#sync();
        else this.#scheduleSync();
      }
      this.#syncDue = false;
      if (!this.#unsynced) this.#settled = this.#taken;
      this.#release();
    }
  }

  /**
   * Waits for more records when the last write was less than COALESCE_MS ago and few are queued
   * (a sustained stream); never for an action, a flush or close (they wake it).
   */
  async #coalesce(): Promise<void> {
    const wait = this.#lastWriteMs + COALESCE_MS - performance.now();
    if (
      wait <= 0 ||
      this.#closing ||
      this.#syncDue ||
      this.#syncThrough > this.#taken ||
      this.#lines.length - this.#head >= COALESCE_LINES
    )
      return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, wait);
      this.#wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.#wake = undefined;
  }

  /** Takes lines that fit the current file (rotating first when none fit) and writes them once. */
  async #writeBatch(): Promise<boolean> {
    const fh0 = this.#fh!;
    const gapLost = this.#gapLost;
    const gapCauses = { ...this.#gapCauses };
    const gapLine = gapLost > 0 ? encodeGap(gapLost, gapCauses, this.#now()) : undefined;
    const firstBytes = Buffer.byteLength(gapLine ?? this.#lineAt(this.#head) ?? "");
    if (this.#rotateNext || (this.#size > 0 && this.#size + firstBytes + 1 > this.#maxFileBytes)) {
      try {
        await this.#rotate();
        this.#rotateNext = false;
      } catch (err) {
        this.#noteError(err, "audit_rotate_failed");
        return false;
      }
    }
    const fh = this.#fh ?? fh0;
    const buf = (this.#buf ??= Buffer.allocUnsafe(MAX_BATCH_BYTES));
    const budget = Math.max(Math.min(this.#maxFileBytes - this.#size, MAX_BATCH_BYTES), 1);
    let used = 0;
    const lead = this.#midLine ? 1 : 0;
    if (lead === 1) buf[used++] = 0x0a;
    if (gapLine !== undefined) used += buf.write(gapLine, used);
    let end = this.#head;
    let big: string | undefined;
    let records = 0;
    while (end < this.#lines.length) {
      const line = this.#lineAt(end);
      if (line === undefined || line === "") {
        end++; // unserializable: counted by #lineAt
        continue;
      }
      // At most 3 UTF-8 bytes per UTF-16 unit: only a line that might not fit is measured.
      if (used + line.length * 3 > budget && used + Buffer.byteLength(line) > budget) {
        // At least one record per write, even one larger than the room or the buffer.
        if (records === 0 && gapLine === undefined) {
          big = line;
          records++;
          end++;
        }
        break;
      }
      used += buf.write(line, used);
      records++;
      end++;
    }
    const chunk =
      big === undefined ? buf.subarray(0, used) : Buffer.concat([buf.subarray(0, used), Buffer.from(big)]);
    this.#takeThrough(end);
    let written = 0;
    let failure: unknown;
    while (written < chunk.length) {
      try {
        const r = await fh.write(chunk, written, chunk.length - written);
        if (r.bytesWritten === 0) throw Object.assign(new Error("no progress"), { code: "EIO" });
        written += r.bytesWritten;
      } catch (err) {
        failure = err;
        break;
      }
    }
    this.#size += written;
    this.#stats.bytesWritten += written;
    if (written > 0) {
      this.#unsynced = true;
      this.#midLine = chunk[written - 1] !== 0x0a;
    }
    // Every record ends in its one newline (JSON escapes any other), so the newlines written
    // count the complete records.
    const complete =
      failure === undefined ? records + (gapLine === undefined ? 0 : 1) : newlines(chunk, lead, written);
    const gapWritten = gapLine !== undefined && complete > 0;
    const recordsWritten = complete - (gapLine === undefined ? 0 : gapWritten ? 1 : 0);
    this.#stats.written += complete;
    if (gapWritten) {
      this.#stats.gapRecords++;
      this.#gapLost -= gapLost;
      for (const [cause, n] of Object.entries(gapCauses) as [GapCause, number][]) {
        const left = (this.#gapCauses[cause] ?? 0) - n;
        if (left > 0) this.#gapCauses[cause] = left;
        else delete this.#gapCauses[cause];
      }
      // Counted again if it is lost in its turn; it was already counted in stats.lost.
    }
    if (failure === undefined) {
      if (this.#errorLogged) {
        this.#errorLogged = false;
        this.#log?.warn({ event: "audit_write_resumed" }, "audit log writes resumed");
      }
      return true;
    }
    const lost = records - recordsWritten;
    this.#gapLost += lost;
    this.#gapCauses.write_failed = (this.#gapCauses.write_failed ?? 0) + lost;
    this.#stats.lost += lost;
    // EFBIG: this file cannot grow (RLIMIT_FSIZE, the file system's limit); the next one can.
    if ((failure as NodeJS.ErrnoException).code === "EFBIG") this.#rotateNext = true;
    this.#noteError(failure, "audit_write_failed");
    return false;
  }

  /**
   * The line of backlog entry `i`: a decision is serialized here and kept in its slot (a batch it
   * did not fit into leaves it for the next). Undefined, and counted lost, if it cannot be.
   */
  #lineAt(i: number): string | undefined {
    const entry = this.#lines[i];
    if (entry === undefined || typeof entry === "string") return entry;
    try {
      const line = encodeDecision(entry);
      this.#lines[i] = line;
      return line;
    } catch {
      this.#lines[i] = "";
      this.#addGap("unserializable", 1);
      return undefined;
    }
  }

  /** Moves the backlog's head past `end`, compacting the array now and then. */
  #takeThrough(end: number): void {
    this.#taken += end - this.#head;
    this.#head = end;
    if (this.#head === this.#lines.length) {
      this.#lines = [];
      this.#head = 0;
    } else if (this.#head > 4096 && this.#head * 2 > this.#lines.length) {
      this.#lines = this.#lines.slice(this.#head);
      this.#head = 0;
    }
  }

  /** Closes the current file (synced) and starts the next; the oldest beyond maxFiles go. */
  async #rotate(): Promise<void> {
    const old = this.#fh!;
    if (this.#unsynced) await this.#sync();
    const next = (this.#files.at(-1) ?? 0) + 1;
    const fh = await openForAppend(this.#dir, next);
    this.#fh = fh;
    this.#files.push(next);
    this.#size = 0;
    this.#midLine = false;
    this.#stats.rotations++;
    await old.close().catch(() => undefined);
    await this.#prune();
    await syncDir(this.#dir).catch((err: unknown) => this.#noteError(err, "audit_dir_sync_failed"));
  }

  /** Removes the oldest files beyond maxFiles. */
  async #prune(): Promise<void> {
    while (this.#files.length > this.#maxFiles) {
      const n = this.#files.shift()!;
      try {
        await unlink(join(this.#dir, auditFileName(n)));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") this.#noteError(err, "audit_prune_failed");
      }
    }
  }

  async #sync(): Promise<void> {
    clearTimeout(this.#syncTimer);
    this.#syncTimer = undefined;
    try {
      await this.#fh!.datasync();
      this.#stats.syncs++;
    } catch (err) {
      this.#noteError(err, "audit_sync_failed");
    }
    this.#unsynced = false;
    this.#lastSyncMs = Date.now();
  }

  /** Written but not synced, and nothing else coming: sync when the interval is up. */
  #scheduleSync(): void {
    if (this.#syncTimer !== undefined || this.#closing) return;
    const wait = Math.max(0, this.#lastSyncMs + this.#syncIntervalMs - Date.now());
    this.#syncTimer = setTimeout(() => {
      this.#syncTimer = undefined;
      this.#syncDue = true;
      this.#kick();
    }, wait);
    this.#syncTimer.unref();
  }

  /** Records queued up to `through` are durable or counted lost, and no gap waits unwritten. */
  #isSettled(through: number): boolean {
    return this.#settled >= through && (this.#gapLost === 0 || this.#lastFailed || this.#closing);
  }

  #release(): void {
    const waiting = this.#waiters;
    this.#waiters = [];
    for (const w of waiting) {
      if (this.#isSettled(w.through)) w.resolve();
      else this.#waiters.push(w);
    }
  }

  #noteError(err: unknown, event: string): void {
    this.#stats.writeErrors++;
    this.#stats.lastError = (err as NodeJS.ErrnoException).code ?? String(err);
    if (this.#errorLogged) return;
    // Once per failing stretch: a full disk would otherwise log at every retry.
    this.#errorLogged = true;
    this.#log?.error({ err, event, dir: this.#dir }, "audit log write failed; records are counted as lost");
  }
}

/** Newlines in `chunk` from `from` to `to`. */
function newlines(chunk: Buffer, from: number, to: number): number {
  let n = 0;
  for (let i = chunk.indexOf(0x0a, from); i >= 0 && i < to; i = chunk.indexOf(0x0a, i + 1)) n++;
  return n;
}

/** A gap record as a FirewallEvent (what WatchFirewallEvents shows for lost audit records). */
function gapEvent(lost: number, timeUnixNanos: bigint): egress.FirewallEvent {
  return {
    schemaVersion: 1,
    seq: 0n,
    timeUnixNanos,
    agentName: "",
    project: "",
    containerId: "",
    dstName: "",
    dstAddr: "",
    port: 0,
    protocol: "",
    verdict: 0,
    layer: 0,
    rule: undefined,
    reason: "audit_gap",
    method: "",
    path: "",
    httpStatus: 0,
    bytesIn: 0n,
    bytesOut: 0n,
    durationMicros: 0n,
    gapCount: BigInt(lost),
  };
}
