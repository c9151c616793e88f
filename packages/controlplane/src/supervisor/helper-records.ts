// The record of the helpers a daemon is running (pid, start time, boot, argv), kept in a 0600 file
// in its data dir. When the daemon is SIGKILLed, helpers that cannot watch a lifeline (Hydra,
// Kratos, Oathkeeper, HAProxy) outlive it; the next daemon reads this file and kills exactly those.
import { mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { dirname } from "node:path";
import { parseProcessIdentity, type ProcessIdentity } from "./process-identity.js";

/** One running helper as recorded. */
export interface HelperRecord extends ProcessIdentity {
  readonly name: string;
}

/** What a record file held: the records that parse, and whether anything did not. */
export interface RecordFileContents {
  readonly records: readonly HelperRecord[];
  /** Set when the file exists but is not a record file (then `records` is empty). */
  readonly problem?: string;
}

const VERSION = 1;

/** Reads the record file; a missing file is an empty list, never an error. */
export function readHelperRecords(file: string): RecordFileContents {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { records: [] };
    return { records: [], problem: `cannot read: ${(err as NodeJS.ErrnoException).code ?? String(err)}` };
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { records: [], problem: "not JSON" };
  }
  const helpers = (parsed as { version?: unknown; helpers?: unknown } | null)?.helpers;
  if ((parsed as { version?: unknown }).version !== VERSION || !Array.isArray(helpers)) {
    return { records: [], problem: `not a version ${VERSION} helper record` };
  }
  const records: HelperRecord[] = [];
  for (const entry of helpers as unknown[]) {
    const identity = parseProcessIdentity(entry);
    const name = (entry as { name?: unknown }).name;
    if (identity === undefined || typeof name !== "string") {
      return { records: [], problem: "an entry is not a helper record" };
    }
    records.push({ name, ...identity });
  }
  return { records };
}

/** Replaces the record file atomically (temp file + rename), mode 0600, in a 0700 directory. */
export function writeHelperRecords(file: string, records: readonly HelperRecord[]): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const body = { version: VERSION, helpers: records };
  const tmp = `${file}.${randomBytes(4).toString("hex")}.tmp`;
  writeFileSync(tmp, JSON.stringify(body) + "\n", { mode: 0o600, flag: "wx" });
  try {
    renameSync(tmp, file);
  } catch (err) {
    unlinkSync(tmp);
    throw err;
  }
}
