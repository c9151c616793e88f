// A minimal POSIX ustar writer and reader for small in-memory archives (the agent bootstrap files
// copied into a container with Docker's archive API). Regular files and directories only, names
// up to 100 bytes, explicit mode/uid/gid on every entry: nothing is taken from the host.

/** One archive entry. `name` is relative (`run/clawker/`); a directory's name ends with `/`. */
export type UstarEntry =
  | {
      readonly kind: "dir";
      readonly name: string;
      readonly mode: number;
      readonly uid?: number;
      readonly gid?: number;
      readonly mtime?: number;
    }
  | {
      readonly kind: "file";
      readonly name: string;
      readonly mode: number;
      readonly content: string | Uint8Array;
      readonly uid?: number;
      readonly gid?: number;
      readonly mtime?: number;
    };

/** An entry read back by readUstar. */
export interface UstarRecord {
  readonly kind: "dir" | "file" | "other";
  readonly name: string;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly mtime: number;
  readonly content: Buffer;
}

const BLOCK = 512;

/** Builds an archive (two zero blocks at the end). Throws on names or values ustar cannot hold. */
export function writeUstar(entries: readonly UstarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const entry of entries) {
    const content =
      entry.kind === "file"
        ? typeof entry.content === "string"
          ? Buffer.from(entry.content, "utf8")
          : Buffer.from(entry.content)
        : Buffer.alloc(0);
    const name = entry.kind === "dir" && !entry.name.endsWith("/") ? `${entry.name}/` : entry.name;
    if (name === "" || name.startsWith("/") || name.split("/").includes("..")) {
      throw new RangeError(
        `tar entry name must be relative and stay below the root: ${JSON.stringify(name)}`,
      );
    }
    if (Buffer.byteLength(name) > 100) throw new RangeError(`tar entry name longer than 100 bytes: ${name}`);
    const header = Buffer.alloc(BLOCK);
    header.write(name, 0, 100, "utf8");
    octal(header, 100, 8, entry.mode & 0o7777);
    octal(header, 108, 8, entry.uid ?? 0);
    octal(header, 116, 8, entry.gid ?? 0);
    octal(header, 124, 12, content.length);
    octal(header, 136, 12, Math.floor(entry.mtime ?? 0));
    header.write(entry.kind === "dir" ? "5" : "0", 156, 1, "latin1");
    header.write("ustar\0", 257, 6, "latin1");
    header.write("00", 263, 2, "latin1");
    // The checksum is computed with its own field as eight spaces (POSIX pax "ustar Interchange Format").
    header.fill(0x20, 148, 156);
    let sum = 0;
    for (const byte of header) sum += byte;
    header.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, 8, "latin1");
    parts.push(header, content, Buffer.alloc((BLOCK - (content.length % BLOCK)) % BLOCK));
  }
  parts.push(Buffer.alloc(2 * BLOCK));
  return Buffer.concat(parts);
}

/** Reads an uncompressed ustar/GNU archive (what Docker's archive API returns); pax headers are skipped. */
export function readUstar(archive: Uint8Array): UstarRecord[] {
  const buf = Buffer.from(archive.buffer, archive.byteOffset, archive.byteLength);
  const out: UstarRecord[] = [];
  let at = 0;
  while (at + BLOCK <= buf.length) {
    const header = buf.subarray(at, at + BLOCK);
    if (header.every((b) => b === 0)) break;
    const stored = parseOctal(header, 148, 8);
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : header[i]!;
    if (sum !== stored) throw new Error(`tar header checksum mismatch at offset ${at}`);
    const size = parseOctal(header, 124, 12);
    const type = String.fromCharCode(header[156]!);
    const prefix = cString(header, 345, 155);
    const base = cString(header, 0, 100);
    const name = prefix === "" ? base : `${prefix}/${base}`;
    const content = Buffer.from(buf.subarray(at + BLOCK, at + BLOCK + size));
    if (content.length !== size) throw new Error(`tar entry ${name} is truncated`);
    at += BLOCK + Math.ceil(size / BLOCK) * BLOCK;
    if (type === "x" || type === "g") continue;
    out.push({
      kind: type === "5" ? "dir" : type === "0" || type === "\0" ? "file" : "other",
      name,
      mode: parseOctal(header, 100, 8),
      uid: parseOctal(header, 108, 8),
      gid: parseOctal(header, 116, 8),
      mtime: parseOctal(header, 136, 12),
      content,
    });
  }
  return out;
}

function octal(header: Buffer, offset: number, width: number, value: number): void {
  const text = value.toString(8);
  if (!Number.isSafeInteger(value) || value < 0 || text.length > width - 1) {
    throw new RangeError(`tar field value out of range: ${value}`);
  }
  header.write(`${text.padStart(width - 1, "0")}\0`, offset, width, "latin1");
}

function parseOctal(header: Buffer, offset: number, width: number): number {
  const text = cString(header, offset, width).trim();
  return text === "" ? 0 : parseInt(text, 8);
}

function cString(header: Buffer, offset: number, width: number): string {
  const field = header.subarray(offset, offset + width);
  const end = field.indexOf(0);
  return field.subarray(0, end < 0 ? width : end).toString("utf8");
}
