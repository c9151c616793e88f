// The root logger: pino JSON to stdout with secrets redacted. Components take `log.child({ component })`.
import { write, writeSync } from "node:fs";
import { pino, type Logger } from "pino";

/** Paths pino removes from every log object: credentials never reach the logs. */
export const REDACT_PATHS = [
  "authorization",
  "*.authorization",
  "headers.authorization",
  "*.headers.authorization",
  "metadata.authorization",
  "token",
  "*.token",
  "accessToken",
  "*.accessToken",
  "access_token",
  "*.access_token",
  "assertion",
  "*.assertion",
  "client_assertion",
  "*.client_assertion",
  "privateKey",
  "*.privateKey",
  "keyPem",
  "*.keyPem",
  "secret",
  "*.secret",
  "secrets",
  "*.secrets",
] as const;

/** How log writes fared: a full disk or a broken pipe is counted here, never thrown. */
export interface LogSinkStats {
  /** Writes the destination refused (ENOSPC, EIO, EPIPE, ...). */
  writeErrors: number;
  /** Lines lost: in a refused write, or over the buffer bound while writes could not keep up. */
  droppedLines: number;
  /** The errno code of the last refused write. */
  lastError: string | undefined;
}

/** Unwritten log bytes held while the destination is slow; lines beyond are dropped. */
export const LOG_BUFFER_BYTES = 4 * 1024 * 1024;

const countLines = (text: Buffer): number => {
  let n = 0;
  for (let i = text.indexOf(10); i >= 0; i = text.indexOf(10, i + 1)) n++;
  return n;
};

/**
 * The daemon's log destination: asynchronous, batched writes to `fd` (stdout) that never block the
 * event loop and never throw. A refused write (a full disk, a closed pipe) loses that batch, is
 * counted, and the next line tries again, so logging resumes by itself once there is room; the
 * first batch written after a failure starts with a line saying what was lost. At most
 * `maxBufferBytes` wait while writes are slow; later lines are dropped and counted. On process exit
 * whatever waits is written synchronously (errors ignored).
 */
export class LogSink implements pino.DestinationStream {
  /** What was lost so far. */
  readonly stats: LogSinkStats = { writeErrors: 0, droppedLines: 0, lastError: undefined };
  readonly #fd: number;
  readonly #maxBufferBytes: number;
  #queue: string[] = [];
  #queuedBytes = 0;
  #inFlight: Buffer | undefined;
  #failing = false;
  #closed = false;
  #idle: Array<() => void> = [];
  readonly #onExit = (): void => this.flushSync();

  constructor(fd = 1, maxBufferBytes = LOG_BUFFER_BYTES) {
    this.#fd = fd;
    this.#maxBufferBytes = maxBufferBytes;
    process.once("exit", this.#onExit);
  }

  /** Queues one line (pino calls this); drops it when the buffer is full. */
  write(line: string): void {
    if (this.#closed) return;
    if (this.#queuedBytes + line.length > this.#maxBufferBytes) {
      this.stats.droppedLines++;
      this.#failing = true;
      return;
    }
    this.#queue.push(line);
    this.#queuedBytes += line.length;
    if (this.#inFlight === undefined) this.#writeNext();
  }

  /** Calls `cb` once everything queued so far was written or lost. */
  flush(cb: () => void = () => {}): void {
    if (this.#inFlight === undefined && this.#queue.length === 0) cb();
    else this.#idle.push(cb);
  }

  /**
   * Writes what waits (the batch in flight included) synchronously; for process exit. Never throws.
   * A batch in flight may already be written, so it can appear twice: wait for `flush` first.
   */
  flushSync(): void {
    const pending = [this.#inFlight, ...this.#queue.map((l) => Buffer.from(l))];
    this.#inFlight = undefined;
    this.#queue = [];
    this.#queuedBytes = 0;
    for (const chunk of pending) {
      if (chunk === undefined) continue;
      try {
        writeSync(this.#fd, chunk);
      } catch (err) {
        this.#noteError(err, chunk);
      }
    }
  }

  /** Stops accepting lines (what waits is dropped) and unhooks from process exit. Idempotent. */
  destroy(): void {
    this.#closed = true;
    this.#queue = [];
    this.#queuedBytes = 0;
    process.off("exit", this.#onExit);
  }

  #writeNext(): void {
    if (this.#queue.length === 0 || this.#closed) {
      for (const cb of this.#idle.splice(0)) cb();
      return;
    }
    const chunk = Buffer.from(this.#queue.join(""));
    this.#queue = [];
    this.#queuedBytes = 0;
    this.#send(chunk);
  }

  #send(chunk: Buffer): void {
    this.#inFlight = chunk;
    write(this.#fd, chunk, 0, chunk.length, null, (err, written) => {
      if (this.#inFlight !== chunk) return; // flushSync took it over
      this.#inFlight = undefined;
      if (err !== null && err.code === "EAGAIN") {
        // A non-blocking pipe is full: try the same bytes again shortly.
        this.#inFlight = chunk;
        setTimeout(() => this.#send(chunk), 10).unref();
        return;
      }
      if (err !== null) this.#noteError(err, chunk);
      else if (written < chunk.length) {
        this.#send(chunk.subarray(written));
        return;
      } else if (this.#failing) {
        this.#failing = false;
        this.#queue.unshift(this.#recoveryLine());
      }
      this.#writeNext();
    });
  }

  #noteError(err: unknown, chunk: Buffer): void {
    this.stats.writeErrors++;
    this.stats.lastError = (err as NodeJS.ErrnoException).code ?? String(err);
    this.stats.droppedLines += countLines(chunk);
    this.#failing = true;
  }

  #recoveryLine(): string {
    const line = {
      level: "warn",
      time: new Date().toISOString(),
      service: "clawker-cp",
      event: "log_write_failed",
      writeErrors: this.stats.writeErrors,
      droppedLines: this.stats.droppedLines,
      error: this.stats.lastError,
      msg: "log writes failed; logging resumed",
    };
    return `${JSON.stringify(line)}\n`;
  }
}

/** Creates the daemon's root logger writing JSON lines to `destination` (stdout by default). */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: "clawker-cp" },
      redact: { paths: [...REDACT_PATHS], censor: "[redacted]" },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? new LogSink(),
  );
}

export type { Logger } from "pino";
