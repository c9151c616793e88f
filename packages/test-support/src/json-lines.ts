// Newline-delimited JSON captured from a child's stdout or from a pino destination.
import type { Readable } from "node:stream";

/** One captured line: the parsed object, or `{ raw }` when the line was not a JSON object. */
export type JsonLine = Record<string, unknown>;

/**
 * Collects newline-delimited JSON. Feed it with `write` (it is a valid pino destination) or
 * `attach` a stream; a line split across chunks is parsed once it is complete.
 */
export class JsonLines {
  /** Every complete line so far, in order. */
  readonly lines: JsonLine[] = [];
  #partial = "";

  /** Takes a chunk of text; complete lines are parsed and appended to `lines`. */
  write(chunk: string): void {
    const parts = (this.#partial + chunk).split("\n");
    this.#partial = parts.pop() ?? "";
    for (const line of parts) {
      if (line === "") continue;
      this.lines.push(parseLine(line));
    }
  }

  /** Reads `stream` (utf8) into this capture until it ends; a last line without "\n" counts too. */
  attach(stream: Readable): this {
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => this.write(chunk));
    stream.once("end", () => this.flush());
    return this;
  }

  /** Parses what is left after the last newline (a child that exited mid-line). */
  flush(): void {
    if (this.#partial === "") return;
    this.lines.push(parseLine(this.#partial));
    this.#partial = "";
  }
}

/** A JsonLines fed from `stream` (e.g. a child's stdout). */
export function captureJsonLines(stream: Readable): JsonLines {
  return new JsonLines().attach(stream);
}

function parseLine(line: string): JsonLine {
  try {
    const value: unknown = JSON.parse(line);
    // Only objects are log records; a bare number or string is kept as text like any other line.
    if (typeof value === "object" && value !== null && !Array.isArray(value)) return value as JsonLine;
  } catch {
    // not JSON: kept raw below
  }
  return { raw: line };
}
