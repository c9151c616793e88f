// A minimal JSON-lines logger with pino's calling convention (object first, short message).
// clawkerd depends only on grpc-js and the proto package, so it carries its own; the shape matches
// the rest of the project's logs ({level, time, pid, component, event, msg}).

/** Log levels, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error" | "fatal";

const RANK: Record<LogLevel | "silent", number> = {
  debug: 20,
  info: 30,
  warn: 40,
  error: 50,
  fatal: 60,
  silent: 99,
};

// Keys whose values never reach a log line (tokens, assertions, keys).
const REDACTED = new Set([
  "authorization",
  "token",
  "access_token",
  "assertion",
  "client_assertion",
  "key",
  "keyPem",
]);

/** The logger interface clawkerd's components take (a subset of pino's). */
export interface Logger {
  debug(fields: Record<string, unknown>, msg: string): void;
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
  error(fields: Record<string, unknown>, msg: string): void;
  fatal(fields: Record<string, unknown>, msg: string): void;
  child(bindings: Record<string, unknown>): Logger;
}

/** Where lines go: a function taking one complete line (with its newline). */
export type LineSink = (line: string) => void;

/**
 * The process's console as a sink: lines to `out` (stdout) until it refuses a write (EPIPE: the
 * container's log reader is gone), then dropped, with one notice on `err`. A refused write must
 * not reach the uncaughtException handler: its fatal line would be refused in turn, an endless
 * nextTick loop that starves the event loop, so clawkerd neither served nor stopped. `err` gets
 * the same guard, for it also carries commands' printed output (job.ts).
 */
export function consoleSink(
  out: NodeJS.WritableStream = process.stdout,
  err: NodeJS.WritableStream = process.stderr,
): LineSink {
  let open = true;
  let errOpen = true;
  err.on("error", () => (errOpen = false));
  out.on("error", (e: NodeJS.ErrnoException) => {
    if (!open) return;
    open = false;
    if (errOpen)
      err.write(`clawkerd: stdout refused a log line (${e.code ?? e.message}); logs are dropped\n`);
  });
  return (line) => {
    if (open) out.write(line);
  };
}

let processConsole: LineSink | undefined;

/** Creates a JSON logger writing to `sink` (the guarded console by default) at `level` and above. */
export function createLogger(
  level: LogLevel | "silent" = "info",
  sink: LineSink = (processConsole ??= consoleSink()),
  bindings: Record<string, unknown> = {},
): Logger {
  const min = RANK[level];
  const emit = (lvl: LogLevel, fields: Record<string, unknown>, msg: string): void => {
    if (RANK[lvl] < min) return;
    const record: Record<string, unknown> = { level: lvl, time: new Date().toISOString(), pid: process.pid };
    Object.assign(record, bindings);
    for (const [k, v] of Object.entries(fields)) record[k] = REDACTED.has(k) ? "[redacted]" : serialise(v);
    record["msg"] = msg;
    let line: string;
    try {
      line = JSON.stringify(record);
    } catch {
      line = JSON.stringify({ level: lvl, time: record["time"], msg, event: "log_unserialisable" });
    }
    sink(line + "\n");
  };
  return {
    debug: (f, m) => emit("debug", f, m),
    info: (f, m) => emit("info", f, m),
    warn: (f, m) => emit("warn", f, m),
    error: (f, m) => emit("error", f, m),
    fatal: (f, m) => emit("fatal", f, m),
    child: (more) => createLogger(level, sink, { ...bindings, ...more }),
  };
}

function serialise(v: unknown): unknown {
  if (v instanceof Error) {
    const out: Record<string, unknown> = { type: v.name, message: v.message };
    const code = (v as { code?: unknown }).code;
    if (code !== undefined) out["code"] = code;
    const reason = (v as { reason?: unknown }).reason;
    if (reason !== undefined) out["reason"] = reason;
    if (v.cause !== undefined) out["cause"] = serialise(v.cause);
    return out;
  }
  if (typeof v === "bigint") return v.toString();
  return v;
}
