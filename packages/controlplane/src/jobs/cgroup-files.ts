// Reading cgroup files (v1 and v2 alike): a missing or unreadable file reads as empty, and the
// "key value" lines of the *.stat and *.events files as counters.
import { readFileSync } from "node:fs";

/** The file's text, or "" when it cannot be read (gone, absent controller). */
export function readOr(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

/** The `key value` lines of a cgroup stat file whose value is a whole number. */
export function keyed(text: string): Record<string, bigint> {
  const out: Record<string, bigint> = {};
  for (const line of text.split("\n")) {
    const [k, v] = line.split(" ");
    if (k !== undefined && v !== undefined && /^\d+$/.test(v)) out[k] = BigInt(v);
  }
  return out;
}

/** A single-number cgroup file's value (`memory.current`, `pids.current`); 0n for anything else. */
export function counter(text: string): bigint {
  const t = text.trim();
  return /^\d+$/.test(t) ? BigInt(t) : 0n;
}
