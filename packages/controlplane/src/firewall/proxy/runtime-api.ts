// Client of HAProxy's runtime API (the `stats socket`, level admin) over its Unix socket: one
// connection per command (HAProxy answers and closes), or one interactive (`prompt`) connection for
// a whole conversation; a timeout on each command, arguments checked so nothing we send can split
// into a second command, and the typed operations the proxy needs.
import { createConnection, type Socket } from "node:net";
import { ProxyError } from "./errors.js";
import type { MapEntry } from "./map-files.js";
import { hasControl } from "./policy.js";

/** Options of a RuntimeApi client. */
export interface RuntimeApiOptions {
  readonly socketPath: string;
  /** Per command, connect to last byte; default 5 s. */
  readonly timeoutMs?: number;
  /** A larger answer is cut off and fails with `refused`; default 64 MiB. */
  readonly maxResponseBytes?: number;
}

/**
 * HAProxy's CLI reads a command (with its payload) into one 16 KiB buffer; more is silently
 * dropped. Chunks stay well below, leaving room for the command line itself.
 */
export const DEFAULT_MAX_CHUNK_BYTES = 15_000;

/** One line of `show sess`. */
export interface SessionInfo {
  /** The session pointer, the argument of `shutdown session`. */
  readonly id: string;
  readonly proto: string;
  /** Client address `ip:port`, or `unix:N`. */
  readonly src: string;
  readonly frontend: string;
  readonly backend: string;
  readonly server: string;
}

/** The outcome of a map push. */
export interface PushResult {
  readonly version: number;
  readonly entries: number;
  readonly chunks: number;
}

// A CLI argument may not hold whitespace (argument separator), `;` (command separator) or
// control characters, nor be empty.
function isSafeArg(a: string): boolean {
  return a.length > 0 && !/[\s;]/.test(a) && !hasControl(a);
}

/**
 * Typed client of HAProxy's runtime API. Stateless between calls and safe to share; a client
 * bound by `interactive()` runs its commands one after another on its one connection.
 */
export class RuntimeApi {
  readonly #socketPath: string;
  readonly #timeoutMs: number;
  readonly #maxResponseBytes: number;
  #conn: PromptConnection | undefined;

  constructor(options: RuntimeApiOptions) {
    this.#socketPath = options.socketPath;
    this.#timeoutMs = options.timeoutMs ?? 5_000;
    this.#maxResponseBytes = options.maxResponseBytes ?? 64 * 1024 * 1024;
  }

  /**
   * Runs `fn` with a client bound to one interactive (`prompt`) connection: each command costs a
   * round trip on it instead of a connection of its own. The connection closes when `fn` settles;
   * a command that fails on it (timeout, HAProxy gone) fails every later one with `unavailable`.
   */
  async interactive<T>(fn: (api: RuntimeApi) => Promise<T>): Promise<T> {
    const conn = await PromptConnection.open(this.#socketPath, this.#timeoutMs, this.#maxResponseBytes);
    const bound = new RuntimeApi({
      socketPath: this.#socketPath,
      timeoutMs: this.#timeoutMs,
      maxResponseBytes: this.#maxResponseBytes,
    });
    bound.#conn = conn;
    try {
      return await fn(bound);
    } finally {
      conn.close();
    }
  }

  /**
   * Sends one command (arguments joined by spaces, each checked) with an optional payload and
   * resolves with HAProxy's whole answer. Rejects with `unavailable` (no socket, refused),
   * `timeout`, or `invalid_argument` before sending anything malformed.
   */
  async command(args: readonly string[], payload?: string): Promise<string> {
    for (const a of args) {
      if (!isSafeArg(a))
        throw new ProxyError("invalid_argument", `runtime API argument not allowed: ${JSON.stringify(a)}`);
    }
    let request = args.join(" ");
    if (payload !== undefined) {
      // The payload ends at the first empty line; a line with a control character could smuggle one.
      if (
        payload.includes("\n\n") ||
        payload.includes("\r") ||
        payload.includes("\0") ||
        payload.startsWith("\n")
      ) {
        throw new ProxyError("invalid_argument", "runtime API payload may not hold empty lines or CR/NUL");
      }
      request += ` <<\n${payload.endsWith("\n") ? payload : payload + "\n"}\n`;
    } else {
      request += "\n";
    }
    return this.#roundTrip(request, args[0] === undefined ? "" : `${args[0]} ${args[1] ?? ""}`.trim());
  }

  /** `show info` as a key -> value record (Pid, Uptime_sec, CurrConns, ...). */
  async showInfo(): Promise<Record<string, string>> {
    const out = await this.command(["show", "info"]);
    const info: Record<string, string> = {};
    for (const line of out.split("\n")) {
      const i = line.indexOf(":");
      if (i > 0) info[line.slice(0, i).trim()] = line.slice(i + 1).trim();
    }
    if (info["Pid"] === undefined) throw refused("show info", out);
    return info;
  }

  /**
   * Replaces a map atomically: `prepare map`, `add map @ver` in payload chunks under
   * `maxChunkBytes`, `show map @ver` to count what HAProxy holds, and `commit map` only when the
   * count equals the entries sent. On any failure the current version stays in place (the
   * uncommitted version is dropped by HAProxy at the next commit) and this rejects with
   * `count_mismatch` or the transport reason.
   */
  async pushMap(
    file: string,
    entries: readonly MapEntry[],
    options: { readonly maxChunkBytes?: number } = {},
  ): Promise<PushResult> {
    const version = await this.prepareMap(file);
    const chunks = await this.addMapEntries(version, file, entries, options.maxChunkBytes);
    const held = await this.countMapVersion(version, file);
    if (held !== entries.length) {
      throw new ProxyError(
        "count_mismatch",
        `map ${file} version ${version} holds ${held} entries, expected ${entries.length}: not committed`,
      );
    }
    await this.commitMap(version, file);
    return { version, entries: entries.length, chunks };
  }

  /** `prepare map`: allocates a new version of a map; resolves with its number. */
  async prepareMap(file: string): Promise<number> {
    const out = await this.command(["prepare", "map", file]);
    const m = /New version created: (\d+)/.exec(out);
    if (m?.[1] === undefined) throw refused(`prepare map ${file}`, out);
    return Number(m[1]);
  }

  /** Adds entries to an uncommitted version in payload chunks; resolves with the number of chunks. */
  async addMapEntries(
    version: number,
    file: string,
    entries: readonly MapEntry[],
    maxChunkBytes: number = DEFAULT_MAX_CHUNK_BYTES,
  ): Promise<number> {
    let lines: string[] = [];
    let size = 0;
    let chunks = 0;
    const flush = async (): Promise<void> => {
      if (lines.length === 0) return;
      const out = await this.command(["add", "map", `@${version}`, file], lines.join("\n"));
      if (out.trim() !== "") throw refused(`add map @${version} ${file}`, out);
      chunks++;
      lines = [];
      size = 0;
    };
    for (const e of entries) {
      if (!isSafeArg(e.key) || hasControl(e.value) || e.value.trim() === "") {
        throw new ProxyError("invalid_argument", `map entry not expressible: ${JSON.stringify(e.key)}`);
      }
      const line = `${e.key} ${e.value}`;
      if (size + line.length + 1 > maxChunkBytes) await flush();
      lines.push(line);
      size += Buffer.byteLength(line) + 1;
    }
    await flush();
    return chunks;
  }

  /** Counts the entries of one version of a map (`show map @ver`). */
  async countMapVersion(version: number, file: string): Promise<number> {
    const out = await this.command(["show", "map", `@${version}`, file]);
    let n = 0;
    for (const line of out.split("\n")) {
      if (line === "") continue;
      if (!line.startsWith("0x")) throw refused(`show map @${version} ${file}`, out);
      n++;
    }
    return n;
  }

  /** `commit map @ver`: makes that version the one lookups see, atomically. */
  async commitMap(version: number, file: string): Promise<void> {
    const out = await this.command(["commit", "map", `@${version}`, file]);
    if (out.trim() !== "") throw refused(`commit map @${version} ${file}`, out);
  }

  /** Entries of the current version of a map, as HAProxy holds them. */
  async showMap(file: string): Promise<MapEntry[]> {
    const out = await this.command(["show", "map", file]);
    const entries: MapEntry[] = [];
    for (const line of out.split("\n")) {
      if (line === "") continue;
      const parts = /^0x[0-9a-f]+ (\S+) (.*)$/.exec(line);
      if (parts?.[1] === undefined || parts[2] === undefined) throw refused(`show map ${file}`, out);
      entries.push({ key: parts[1], value: parts[2] });
    }
    return entries;
  }

  /** Every live session (`show sess`), the CLI's own connection included. */
  async showSessions(): Promise<SessionInfo[]> {
    const out = await this.command(["show", "sess"]);
    const sessions: SessionInfo[] = [];
    for (const line of out.split("\n")) {
      const m = /^(0x[0-9a-f]+): proto=(\S+) src=(\S+) fe=(\S+) be=(\S+) srv=(\S+)/.exec(line);
      if (m === null) continue;
      sessions.push({ id: m[1]!, proto: m[2]!, src: m[3]!, frontend: m[4]!, backend: m[5]!, server: m[6]! });
    }
    return sessions;
  }

  /** Ends one session by its pointer; a session that already ended is not an error. */
  async shutdownSession(id: string): Promise<void> {
    const out = await this.command(["shutdown", "session", id]);
    if (out.trim() !== "" && !/No such session/i.test(out)) throw refused(`shutdown session ${id}`, out);
  }

  /**
   * Loads (or replaces) a certificate + key under `file` through a transaction: `new ssl cert`
   * (when `isNew`), `set ssl cert` with the PEM, `commit ssl cert`. The PEM never appears in errors.
   */
  async loadCertificate(file: string, pem: string, isNew: boolean): Promise<void> {
    if (isNew) {
      const created = await this.command(["new", "ssl", "cert", file]);
      if (!created.includes("New empty certificate store")) throw refused(`new ssl cert ${file}`, created);
    }
    const set = await this.command(["set", "ssl", "cert", file], pem.trim());
    if (!/Transaction (created|updated)/.test(set)) {
      await this.command(["abort", "ssl", "cert", file]).catch(() => undefined);
      throw refused(`set ssl cert ${file}`, set);
    }
    const committed = await this.command(["commit", "ssl", "cert", file]);
    if (!committed.includes("Success!")) throw refused(`commit ssl cert ${file}`, committed);
  }

  /** Appends a certificate line to a crt-list, loading it on every bind that uses the list. */
  async addToCrtList(list: string, line: string): Promise<void> {
    const out = await this.command(["add", "ssl", "crt-list", list], line);
    if (!out.includes("Success!")) throw refused(`add ssl crt-list ${list}`, out);
  }

  #roundTrip(request: string, what: string): Promise<string> {
    if (this.#conn !== undefined) return this.#conn.send(request, what);
    return new Promise<string>((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let settled = false;
      const sock = createConnection(this.#socketPath);
      const finish = (err: ProxyError | undefined, out?: string): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        sock.destroy();
        if (err !== undefined) reject(err);
        else resolve(out ?? "");
      };
      const timer = setTimeout(
        () =>
          finish(new ProxyError("timeout", `runtime API: no answer to ${what} within ${this.#timeoutMs} ms`)),
        this.#timeoutMs,
      );
      sock.on("data", (d: Buffer) => {
        size += d.length;
        if (size > this.#maxResponseBytes) {
          finish(
            new ProxyError(
              "refused",
              `runtime API: answer to ${what} exceeds ${this.#maxResponseBytes} bytes`,
            ),
          );
          return;
        }
        chunks.push(d);
      });
      sock.on("end", () => finish(undefined, Buffer.concat(chunks).toString("utf8")));
      sock.on("error", (err: NodeJS.ErrnoException) =>
        finish(
          new ProxyError("unavailable", `runtime API unreachable (${err.code ?? err.message})`, {
            cause: err,
          }),
        ),
      );
      sock.write(request);
    });
  }
}

/**
 * One interactive CLI connection (`prompt`): HAProxy ends every answer with the prompt `\n> `
 * and echoes `+ ` for each payload line it reads; both are stripped, so an answer reads as it
 * would on a connection of its own. Commands go one at a time.
 */
class PromptConnection {
  readonly #sock: Socket;
  readonly #timeoutMs: number;
  readonly #maxResponseBytes: number;
  #chunks: Buffer[] = [];
  #size = 0;
  #tail = "";
  #waiter: { resolve: (answer: string) => void; reject: (err: ProxyError) => void } | undefined;
  #failed: ProxyError | undefined;

  private constructor(sock: Socket, timeoutMs: number, maxResponseBytes: number) {
    this.#sock = sock;
    this.#timeoutMs = timeoutMs;
    this.#maxResponseBytes = maxResponseBytes;
    sock.on("data", (d: Buffer) => this.#onData(d));
    sock.on("error", (err: NodeJS.ErrnoException) =>
      this.#fail(
        new ProxyError("unavailable", `runtime API unreachable (${err.code ?? err.message})`, { cause: err }),
      ),
    );
    sock.on("close", () => this.#fail(new ProxyError("unavailable", "runtime API closed the connection")));
  }

  /** Connects and switches the connection to interactive mode. */
  static async open(
    socketPath: string,
    timeoutMs: number,
    maxResponseBytes: number,
  ): Promise<PromptConnection> {
    const conn = new PromptConnection(createConnection(socketPath), timeoutMs, maxResponseBytes);
    try {
      await conn.send("prompt\n", "prompt");
    } catch (err) {
      conn.close();
      throw err;
    }
    return conn;
  }

  /** Sends one request (a command line, with its payload) and resolves with its answer. */
  send(request: string, what: string): Promise<string> {
    if (this.#failed !== undefined) return Promise.reject(this.#failed);
    if (this.#waiter !== undefined) {
      return Promise.reject(new ProxyError("invalid_argument", "runtime API: one command at a time"));
    }
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          this.#fail(
            new ProxyError("timeout", `runtime API: no answer to ${what} within ${this.#timeoutMs} ms`),
          ),
        this.#timeoutMs,
      );
      this.#waiter = {
        resolve: (answer) => {
          clearTimeout(timer);
          resolve(answer);
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      this.#sock.write(request);
    });
  }

  /** Closes the connection; a command still waiting fails with `unavailable`. */
  close(): void {
    this.#fail(new ProxyError("unavailable", "runtime API connection closed"));
    this.#sock.destroy();
  }

  #onData(d: Buffer): void {
    this.#size += d.length;
    if (this.#size > this.#maxResponseBytes) {
      this.#fail(new ProxyError("refused", `runtime API: an answer exceeds ${this.#maxResponseBytes} bytes`));
      this.#sock.destroy();
      return;
    }
    this.#chunks.push(d);
    // The prompt may arrive split across reads: look at the last three bytes seen.
    this.#tail = (this.#tail + d.toString("latin1")).slice(-3);
    if (!this.#tail.endsWith("\n> ")) return;
    const text = Buffer.concat(this.#chunks).toString("utf8");
    this.#chunks = [];
    this.#size = 0;
    this.#tail = "";
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.resolve(text.slice(0, -2).replace(/^(?:\+ )+/, ""));
  }

  #fail(err: ProxyError): void {
    this.#failed ??= err;
    const waiter = this.#waiter;
    this.#waiter = undefined;
    waiter?.reject(this.#failed);
    this.#sock.destroy();
  }
}

function refused(what: string, answer: string): ProxyError {
  const text = answer.trim().replace(/\s+/g, " ").slice(0, 300);
  return new ProxyError("refused", `runtime API refused ${what}: ${text === "" ? "(empty answer)" : text}`);
}
