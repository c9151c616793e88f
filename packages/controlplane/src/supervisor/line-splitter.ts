// Splits a child's output bytes into lines with a hard cap, so a helper that never prints a newline
// cannot grow our memory without bound (readline has no cap).
import { StringDecoder } from "node:string_decoder";

/** Default longest line (in UTF-16 code units) kept whole; longer lines are cut into pieces. */
export const DEFAULT_MAX_LINE_CHARS = 64 * 1024;

/** Receives one line (without the newline); `truncated` marks a piece cut at the cap, not at a newline. */
export type LineSink = (line: string, truncated: boolean) => void;

/** Incremental UTF-8 line splitter: `push(chunk)` as data arrives, `end()` flushes the last line. */
export class LineSplitter {
  readonly #decoder = new StringDecoder("utf8");
  readonly #sink: LineSink;
  readonly #maxChars: number;
  #pending = "";

  constructor(sink: LineSink, maxLineChars: number = DEFAULT_MAX_LINE_CHARS) {
    if (!(maxLineChars >= 1)) throw new RangeError("maxLineChars must be >= 1");
    this.#sink = sink;
    this.#maxChars = maxLineChars;
  }

  /** Feeds a chunk of output; emits every line it completes. */
  push(chunk: Buffer | string): void {
    this.#take(typeof chunk === "string" ? chunk : this.#decoder.write(chunk));
  }

  /** Flushes an unterminated last line (if any). */
  end(): void {
    this.#take(this.#decoder.end());
    if (this.#pending.length > 0) this.#emit(this.#pending);
    this.#pending = "";
  }

  #take(text: string): void {
    const data = this.#pending + text;
    let start = 0;
    for (let nl = data.indexOf("\n", start); nl !== -1; nl = data.indexOf("\n", start)) {
      this.#emit(data.slice(start, nl));
      start = nl + 1;
    }
    let rest = data.slice(start);
    while (rest.length > this.#maxChars) {
      this.#sink(rest.slice(0, this.#maxChars), true);
      rest = rest.slice(this.#maxChars);
    }
    this.#pending = rest;
  }

  #emit(raw: string): void {
    let line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    while (line.length > this.#maxChars) {
      this.#sink(line.slice(0, this.#maxChars), true);
      line = line.slice(this.#maxChars);
    }
    this.#sink(line, false);
  }
}
