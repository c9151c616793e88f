import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { test } from "node:test";
import { readUstar, writeUstar, type UstarEntry } from "./ustar.js";

const ENTRIES: UstarEntry[] = [
  { kind: "dir", name: "run/", mode: 0o755, mtime: 1_700_000_000 },
  { kind: "dir", name: "run/clawker", mode: 0o500, uid: 0, gid: 0, mtime: 1_700_000_000 },
  { kind: "file", name: "run/clawker/a.txt", mode: 0o400, content: "hello\n", mtime: 1_700_000_000 },
  // Exactly one block, and one byte over: the padding arithmetic at both edges.
  {
    kind: "file",
    name: "run/clawker/block",
    mode: 0o640,
    uid: 1000,
    gid: 1001,
    content: new Uint8Array(512).fill(7),
  },
  { kind: "file", name: "run/clawker/over", mode: 0o600, content: Buffer.alloc(513, 9) },
  { kind: "file", name: "empty", mode: 0o444, content: "" },
];

void test("GNU tar lists what writeUstar wrote: types, modes, owners, sizes, names", () => {
  const archive = writeUstar(ENTRIES);
  assert.equal(archive.length % 512, 0);
  const listing = execFileSync("tar", ["-tv", "--numeric-owner", "-f", "-"], {
    input: archive,
    encoding: "utf8",
  })
    .trim()
    .split("\n")
    .map((line) => line.split(/\s+/));
  // tar -tv: perms owner/group size date time name
  assert.deepEqual(
    listing.map((f) => [f[0], f[1], f[2], f[5]]),
    [
      ["drwxr-xr-x", "0/0", "0", "run/"],
      ["dr-x------", "0/0", "0", "run/clawker/"],
      ["-r--------", "0/0", "6", "run/clawker/a.txt"],
      ["-rw-r-----", "1000/1001", "512", "run/clawker/block"],
      ["-rw-------", "0/0", "513", "run/clawker/over"],
      ["-r--r--r--", "0/0", "0", "empty"],
    ],
  );
});

void test("GNU tar extracts the same bytes", () => {
  const archive = writeUstar(ENTRIES);
  const out = execFileSync("tar", ["-xO", "-f", "-", "run/clawker/a.txt", "run/clawker/over"], {
    input: archive,
  });
  assert.deepEqual(out, Buffer.concat([Buffer.from("hello\n"), Buffer.alloc(513, 9)]));
});

void test("readUstar reads back writeUstar's archive and one written by GNU tar", () => {
  const records = readUstar(writeUstar(ENTRIES));
  assert.deepEqual(
    records.map((r) => [r.kind, r.name, r.mode, r.uid, r.gid, r.content.length]),
    [
      ["dir", "run/", 0o755, 0, 0, 0],
      ["dir", "run/clawker/", 0o500, 0, 0, 0],
      ["file", "run/clawker/a.txt", 0o400, 0, 0, 6],
      ["file", "run/clawker/block", 0o640, 1000, 1001, 512],
      ["file", "run/clawker/over", 0o600, 0, 0, 513],
      ["file", "empty", 0o444, 0, 0, 0],
    ],
  );
  assert.equal(records[2]!.content.toString(), "hello\n");
  assert.equal(records[0]!.mtime, 1_700_000_000);

  // An archive GNU tar wrote must parse, too (Docker's getArchive output is the same family).
  const gnu = execFileSync("tar", ["-c", "--format=ustar", "-f", "-", "-C", "/", "etc/hostname"], {});
  const [hostname] = readUstar(gnu);
  assert.equal(hostname?.name, "etc/hostname");
  assert.equal(hostname?.kind, "file");
});

void test("a corrupted header is refused", () => {
  const archive = writeUstar(ENTRIES);
  archive[0] = archive[0]! ^ 1;
  assert.throws(() => readUstar(archive), /checksum/);
});

void test("names that escape the root or do not fit are refused", () => {
  for (const name of ["/etc/passwd", "../x", "a/../../x", "", "x".repeat(101)]) {
    assert.throws(() => writeUstar([{ kind: "file", name, mode: 0o400, content: "" }]), RangeError, name);
  }
  assert.throws(
    () => writeUstar([{ kind: "file", name: "a", mode: 0o400, content: "", uid: -1 }]),
    RangeError,
  );
});
