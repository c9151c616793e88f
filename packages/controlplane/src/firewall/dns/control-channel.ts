// The gate process's control channel: newline-delimited JSON on a stream the daemon owns (fd 3 of
// the gate process). Requests come in (`policy`, `stats`) and are answered by id; the gate sends
// events (`ready`, `decision`). EOF means the daemon is gone. Protocol in README.md.
import type { Readable, Writable } from "node:stream";
import type { Logger } from "pino";
import { decisionJson, type DnsDecision } from "./decision.js";
import { DnsGateError, InvalidPolicyError } from "./errors.js";
import type { DnsGateStats, PolicySummary } from "./gate.js";
import { lineSplitter } from "./line-splitter.js";

/** What the channel needs of the gate. */
export interface ControlledGate {
  applyPolicy(input: unknown): PolicySummary;
  stats(): DnsGateStats;
}

/** Options of a ControlChannel. */
export interface ControlChannelOptions {
  readonly input: Readable;
  readonly output: Writable;
  readonly gate: ControlledGate;
  readonly log: Logger;
  /** A request line longer than this many characters is refused (the rest skipped); default 64 Mi. */
  readonly maxLineBytes?: number;
  /** Decisions are dropped while this many bytes wait to be written; default 8 MiB. */
  readonly maxBufferedBytes?: number;
}

type RequestId = number | string | null;

/** Decisions are written at least this often (milliseconds)... */
const DECISION_FLUSH_MS = 20;
/** ...or once this many characters wait. */
const DECISION_FLUSH_CHARS = 256 * 1024;

/** One end of the control channel, in the gate process. */
export class ControlChannel {
  private readonly input: Readable;
  private readonly output: Writable;
  private readonly gate: ControlledGate;
  private readonly log: Logger;
  private readonly maxLineBytes: number;
  private readonly maxBufferedBytes: number;
  private droppedDecisions = 0;
  private closed = false;
  /** Lines waiting for this turn's single write (one syscall per turn, not one per decision). */
  private queued: string[] = [];
  private queuedChars = 0;
  private immediate = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(options: ControlChannelOptions) {
    this.input = options.input;
    this.output = options.output;
    this.gate = options.gate;
    this.log = options.log.child({ component: "dns-control" });
    this.maxLineBytes = options.maxLineBytes ?? 64 << 20;
    this.maxBufferedBytes = options.maxBufferedBytes ?? 8 << 20;
    // A write to a daemon that is gone fails with EPIPE; EOF on input ends the process anyway.
    this.output.on("error", (err) =>
      this.log.debug({ err, event: "control_write_failed" }, "control write failed"),
    );
  }

  /** Serves requests; resolves at EOF or when `signal` aborts (the caller then stops the gate). */
  serve(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        this.input.off("data", onData);
        signal.removeEventListener("abort", done);
        resolve();
      };
      // A line too long is refused at once, and the rest of it dropped when its newline arrives.
      const onData = lineSplitter(
        this.maxLineBytes,
        (line) => {
          if (line.trim() !== "") this.onLine(line);
        },
        () =>
          this.reply(null, {
            reason: "bad_request",
            message: `request line longer than ${this.maxLineBytes} characters`,
          }),
      );
      // A decoder keeps a UTF-8 character split across chunks whole.
      this.input.setEncoding("utf8");
      this.input.on("data", onData);
      this.input.once("end", done);
      this.input.once("close", done);
      this.input.once("error", (err) => {
        this.log.warn({ err, event: "control_read_failed" }, "control channel read failed");
        done();
      });
      if (signal.aborted) done();
      else signal.addEventListener("abort", done, { once: true });
    });
  }

  /** Sends an event line (`{"event": name, ...fields}`). */
  send(event: string, fields: Record<string, unknown> = {}): void {
    this.write({ event, ...fields });
  }

  /** The gate's decision sink: one `decision` event per decision, dropped while the daemon lags. */
  decision(d: DnsDecision): void {
    if (this.closed) return;
    if (this.output.writableLength + this.queuedChars > this.maxBufferedBytes) {
      this.droppedDecisions++;
      return;
    }
    if (this.droppedDecisions > 0) {
      this.write({ event: "decisions_dropped", count: this.droppedDecisions });
      this.log.warn({ count: this.droppedDecisions, event: "decisions_dropped" }, "decisions dropped");
      this.droppedDecisions = 0;
    }
    this.writeLine(`{"event":"decision","decision":${decisionJson(d)}}`, false);
  }

  /** Writes what is queued, then stops writing. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.flush();
    this.closed = true;
  }

  private onLine(line: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      this.reply(null, { reason: "bad_request", message: "request is not JSON" });
      return;
    }
    if (typeof msg !== "object" || msg === null || Array.isArray(msg)) {
      this.reply(null, { reason: "bad_request", message: "request is not a JSON object" });
      return;
    }
    const req = msg as Record<string, unknown>;
    const rawId = req["id"];
    const id: RequestId = typeof rawId === "number" || typeof rawId === "string" ? rawId : null;
    const op = req["op"];
    try {
      switch (op) {
        case "policy": {
          if (!("policy" in req)) throw new DnsGateError("bad_request", "policy: missing field policy");
          const extra = Object.keys(req).find((k) => k !== "id" && k !== "op" && k !== "policy");
          if (extra !== undefined)
            throw new DnsGateError("bad_request", `policy: unknown field ${JSON.stringify(extra)}`);
          // Acked only after the swap: when the daemon reads ok, the new policy answers.
          this.reply(id, undefined, this.gate.applyPolicy(req["policy"]));
          return;
        }
        case "stats":
          this.reply(id, undefined, this.gate.stats());
          return;
        default:
          throw new DnsGateError("bad_request", `unknown op ${JSON.stringify(op)}`);
      }
    } catch (err) {
      if (err instanceof InvalidPolicyError) {
        this.reply(id, { reason: err.reason, message: err.message, problems: err.problems });
      } else if (err instanceof DnsGateError) {
        this.reply(id, { reason: err.reason, message: err.message });
      } else {
        this.log.error({ err, op, event: "control_request_failed" }, "control request failed");
        this.reply(id, { reason: "internal", message: "internal error" });
      }
    }
  }

  private reply(id: RequestId, error: Record<string, unknown> | undefined, result?: unknown): void {
    this.write(error === undefined ? { id, ok: true, result } : { id, ok: false, error });
  }

  private write(obj: Record<string, unknown>): void {
    this.writeLine(JSON.stringify(obj));
  }

  /**
   * Queues a line. Replies and events go out after this turn's I/O (setImmediate); decisions
   * wait up to DECISION_FLUSH_MS or DECISION_FLUSH_CHARS, so a busy gate makes one write (and
   * wakes the daemon once) per batch instead of once per answer.
   */
  private writeLine(line: string, urgent = true): void {
    if (this.closed) return;
    this.queued.push(line);
    this.queuedChars += line.length + 1;
    if (urgent || this.queuedChars >= DECISION_FLUSH_CHARS) {
      if (!this.immediate) {
        this.immediate = true;
        setImmediate(() => this.flush());
      }
    } else {
      this.timer ??= setTimeout(() => this.flush(), DECISION_FLUSH_MS);
    }
  }

  private flush(): void {
    this.immediate = false;
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.queued.length === 0) return;
    const text = this.queued.join("\n") + "\n";
    this.queued = [];
    this.queuedChars = 0;
    if (this.closed || this.output.destroyed || this.output.writableEnded) return;
    this.output.write(text);
  }
}
