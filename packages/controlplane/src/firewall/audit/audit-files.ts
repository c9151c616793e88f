// The audit log's files: `audit-<10-digit number>.jsonl` in one 0700 folder, numbered in the
// order they were started, so the name order is the time order and no rename is ever needed.
import { constants } from "node:fs";
import { open, readdir, type FileHandle } from "node:fs/promises";
import { join } from "node:path";

const NAME = /^audit-(\d{10})\.jsonl$/;

/** The file name of audit file `n`. */
export function auditFileName(n: number): string {
  return `audit-${String(n).padStart(10, "0")}.jsonl`;
}

/** The numbers of the audit files in `dir`, oldest first (other names are ignored). */
export async function listAuditFiles(dir: string): Promise<number[]> {
  const names = await readdir(dir);
  return names
    .map((name) => NAME.exec(name))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
}

/**
 * Opens audit file `n` for appending: created 0600, never through a symlink; an existing file's
 * mode is set to 0600 too (a file left by an older version or copied in keeps no looser mode).
 * libuv adds O_CLOEXEC itself, so no helper inherits the descriptor.
 */
export async function openForAppend(dir: string, n: number): Promise<FileHandle> {
  const fh = await open(
    join(dir, auditFileName(n)),
    constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW,
    0o600,
  );
  try {
    await fh.chmod(0o600);
    return fh;
  } catch (err) {
    await fh.close();
    throw err;
  }
}

/** fsyncs a directory, so a created or removed entry survives a crash of the machine. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
