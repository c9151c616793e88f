// A root filesystem described as a list of entries, streamed as a POSIX (ustar + pax) tar for
// `docker import`. Deterministic: uid/gid 0, mtime 0, entries sorted, parents added.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { lstat, readdir, readlink, stat } from "node:fs/promises";
import { join, posix } from "node:path";

/** One entry of an image's root filesystem. Paths are absolute inside the image. */
export type RootfsEntry =
  | { readonly kind: "dir"; readonly path: string; readonly mode?: number }
  /** A host file copied in (symlinks on the host are followed). */
  | { readonly kind: "file"; readonly path: string; readonly source: string; readonly mode?: number }
  /** A file with inline content. */
  | {
      readonly kind: "file";
      readonly path: string;
      readonly content: string | Uint8Array;
      readonly mode?: number;
    }
  | { readonly kind: "symlink"; readonly path: string; readonly target: string };

interface Resolved {
  readonly entry: RootfsEntry;
  readonly name: string; // tar name: no leading slash
  readonly size: number;
  readonly mode: number;
}

/**
 * Normalises entries: absolute paths, parents added as 0755 dirs, later duplicates win, sorted so
 * every directory precedes its contents. Host files are stat-ed for their size and mode.
 */
export async function resolveEntries(entries: readonly RootfsEntry[]): Promise<Resolved[]> {
  const byPath = new Map<string, RootfsEntry>();
  for (const entry of entries) {
    const path = posix.normalize(entry.path);
    if (!path.startsWith("/") || path === "/" || path.includes("/../")) {
      throw new Error(`rootfs entry path must be absolute and below /: ${entry.path}`);
    }
    byPath.set(path, { ...entry, path });
    for (let dir = posix.dirname(path); dir !== "/"; dir = posix.dirname(dir)) {
      if (!byPath.has(dir)) byPath.set(dir, { kind: "dir", path: dir });
    }
  }
  const out: Resolved[] = [];
  for (const [path, entry] of [...byPath].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const name = path.slice(1);
    switch (entry.kind) {
      case "dir":
        out.push({ entry, name: name + "/", size: 0, mode: entry.mode ?? 0o755 });
        break;
      case "symlink":
        out.push({ entry, name, size: 0, mode: 0o777 });
        break;
      case "file":
        if ("source" in entry) {
          const st = await stat(entry.source);
          out.push({ entry, name, size: st.size, mode: entry.mode ?? st.mode & 0o7777 });
        } else {
          const size =
            typeof entry.content === "string" ? Buffer.byteLength(entry.content) : entry.content.byteLength;
          out.push({ entry, name, size, mode: entry.mode ?? 0o644 });
        }
        break;
    }
  }
  return out;
}

/**
 * A content hash of a root filesystem: names, modes, link targets and the SHA-256 of every
 * file's bytes. Equal hashes mean byte-identical tars.
 */
export async function hashEntries(resolved: readonly Resolved[]): Promise<string> {
  const hash = createHash("sha256");
  for (const r of resolved) {
    let content = "";
    if (r.entry.kind === "symlink") content = r.entry.target;
    else if (r.entry.kind === "file") {
      content = "source" in r.entry ? await hashFile(r.entry.source) : sha256(r.entry.content);
    }
    hash.update(`${r.entry.kind}\0${r.name}\0${r.mode.toString(8)}\0${r.size}\0${content}\n`);
  }
  return hash.digest("hex");
}

/** Streams the tar of resolved entries (with two zero blocks at the end). */
export async function* tarStream(resolved: readonly Resolved[]): AsyncGenerator<Buffer> {
  for (const r of resolved) {
    const type = r.entry.kind === "dir" ? "5" : r.entry.kind === "symlink" ? "2" : "0";
    const linkname = r.entry.kind === "symlink" ? r.entry.target : "";
    yield* header(r.name, r.mode, r.size, type, linkname);
    if (r.entry.kind !== "file") continue;
    if ("source" in r.entry) {
      let sent = 0;
      if (r.size > 0) {
        for await (const chunk of createReadStream(r.entry.source, { start: 0, end: r.size - 1 })) {
          sent += (chunk as Buffer).length;
          yield chunk as Buffer;
        }
      }
      if (sent !== r.size) throw new Error(`${r.entry.source} changed size while being archived`);
    } else {
      yield Buffer.from(r.entry.content);
    }
    const pad = (512 - (r.size % 512)) % 512;
    if (pad > 0) yield Buffer.alloc(pad);
  }
  yield Buffer.alloc(1024);
}

/** Options for treeEntries. */
export interface TreeOptions {
  /** Keep a path (relative to the tree's root, `/`-separated) or drop it, with its subtree. */
  readonly filter?: (relativePath: string) => boolean;
}

/**
 * Entries for a host directory tree copied to `imageDir`: files (mode kept), directories and
 * symlinks (kept as symlinks, so relative links inside the tree stay valid).
 */
export async function treeEntries(
  hostDir: string,
  imageDir: string,
  options: TreeOptions = {},
): Promise<RootfsEntry[]> {
  const out: RootfsEntry[] = [{ kind: "dir", path: imageDir, mode: (await stat(hostDir)).mode & 0o7777 }];
  await walk(hostDir, imageDir, "", options.filter, out);
  return out;
}

async function walk(
  hostDir: string,
  imageDir: string,
  relative: string,
  filter: TreeOptions["filter"],
  out: RootfsEntry[],
): Promise<void> {
  for (const name of (await readdir(hostDir)).sort()) {
    const rel = relative === "" ? name : `${relative}/${name}`;
    if (filter !== undefined && !filter(rel)) continue;
    const host = join(hostDir, name);
    const inImage = posix.join(imageDir, name);
    const st = await lstat(host);
    if (st.isSymbolicLink()) out.push({ kind: "symlink", path: inImage, target: await readlink(host) });
    else if (st.isDirectory()) {
      out.push({ kind: "dir", path: inImage, mode: st.mode & 0o7777 });
      await walk(host, inImage, rel, filter, out);
    } else if (st.isFile()) out.push({ kind: "file", path: inImage, source: host, mode: st.mode & 0o7777 });
  }
}

function* header(
  name: string,
  mode: number,
  size: number,
  type: string,
  linkname: string,
): Generator<Buffer> {
  const nameBytes = Buffer.byteLength(name);
  const linkBytes = Buffer.byteLength(linkname);
  if (nameBytes > 100 || linkBytes > 100) {
    // POSIX.1-2001 pax extended header carrying the long path/linkpath.
    let records = "";
    if (nameBytes > 100) records += paxRecord("path", name);
    if (linkBytes > 100) records += paxRecord("linkpath", linkname);
    const body = Buffer.from(records);
    yield ustar(`PaxHeaders/${Buffer.from(name).subarray(0, 80).toString()}`, 0o644, body.length, "x", "");
    yield body;
    yield Buffer.alloc((512 - (body.length % 512)) % 512);
  }
  yield ustar(truncate(name, 100), mode, size, type, truncate(linkname, 100));
}

function ustar(name: string, mode: number, size: number, type: string, linkname: string): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, "utf8");
  h.write(octal(mode, 7), 100, 8, "ascii");
  h.write(octal(0, 7), 108, 8, "ascii"); // uid
  h.write(octal(0, 7), 116, 8, "ascii"); // gid
  h.write(octal(size, 11), 124, 12, "ascii");
  h.write(octal(0, 11), 136, 12, "ascii"); // mtime
  h.fill(0x20, 148, 156); // checksum is computed with its own field as spaces
  h.write(type, 156, 1, "ascii");
  h.write(linkname, 157, 100, "utf8");
  h.write("ustar\u000000", 257, 8, "ascii");
  let sum = 0;
  for (const byte of h) sum += byte;
  h.write(octal(sum, 6) + "\u0000 ", 148, 8, "ascii");
  return h;
}

function paxRecord(key: string, value: string): string {
  // "<len> <key>=<value>\n" where <len> counts the whole record including its own digits.
  const rest = ` ${key}=${value}\n`;
  let len = Buffer.byteLength(rest) + 1;
  while (String(len).length + Buffer.byteLength(rest) !== len)
    len = String(len).length + Buffer.byteLength(rest);
  return `${len}${rest}`;
}

function octal(n: number, width: number): string {
  const s = n.toString(8);
  if (s.length > width) throw new Error(`tar field overflow: ${n}`);
  return s.padStart(width, "0") + "\u0000";
}

function truncate(s: string, bytes: number): string {
  const b = Buffer.from(s);
  return b.length <= bytes ? s : b.subarray(0, bytes).toString();
}

function sha256(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

// Per-process memo: the node binary is ~120 MB and several tests build the same image.
const fileHashes = new Map<string, string>();

async function hashFile(path: string): Promise<string> {
  const st = await stat(path);
  const key = `${path}\0${st.dev}\0${st.ino}\0${st.size}\0${st.mtimeMs}\0${st.ctimeMs}`;
  const cached = fileHashes.get(key);
  if (cached !== undefined) return cached;
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  const digest = hash.digest("hex");
  // Timestamps are coarse (a jiffy): a file modified just now could change again without its
  // stat changing, so only settled files are memoised (git's "racy clean" rule).
  if (Date.now() - st.mtimeMs > 2_000) fileHashes.set(key, digest);
  return digest;
}
