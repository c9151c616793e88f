// The tar writer against GNU tar: long paths (pax), symlinks, modes and contents survive.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createWriteStream } from "node:fs";
import { lstat, mkdtemp, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { test } from "node:test";
import { promisify } from "node:util";
import { command, requires } from "./preconditions.js";
import { hashEntries, resolveEntries, tarStream, treeEntries, type RootfsEntry } from "./rootfs-tar.js";

const execFileP = promisify(execFile);

void test("rootfs tar: GNU tar extracts exactly the entries, and the hash follows content", async (t) => {
  if (!requires(t, command("tar"))) return;
  const dir = await mkdtemp(join(tmpdir(), "rootfs-tar-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const hostFile = join(dir, "host.bin");
  const bytes = Buffer.alloc(1500, 7); // not a multiple of 512: exercises padding
  await writeFile(hostFile, bytes, { mode: 0o750 });
  const longPath = `/deep/${"d".repeat(60)}/${"e".repeat(60)}/file.txt`;
  const entries: RootfsEntry[] = [
    { kind: "file", path: "/bin/tool", source: hostFile },
    { kind: "file", path: longPath, content: "long path ok\n", mode: 0o600 },
    { kind: "symlink", path: "/bin/alias", target: "/bin/tool" },
    { kind: "symlink", path: "/long-link", target: `/${"t".repeat(120)}` },
    { kind: "dir", path: "/tmp", mode: 0o1777 },
  ];
  const resolved = await resolveEntries(entries);
  const tarFile = join(dir, "root.tar");
  await pipeline(Readable.from(tarStream(resolved)), createWriteStream(tarFile));
  const out = join(dir, "out");
  await execFileP("mkdir", [out]);
  await execFileP("tar", ["-xpf", tarFile, "-C", out]);

  assert.deepEqual(await readFile(join(out, "bin/tool")), bytes);
  assert.equal((await lstat(join(out, "bin/tool"))).mode & 0o7777, 0o750);
  assert.equal(await readFile(join(out, longPath), "utf8"), "long path ok\n");
  assert.equal((await lstat(join(out, longPath))).mode & 0o7777, 0o600);
  assert.equal(await readlink(join(out, "bin/alias")), "/bin/tool");
  assert.equal(await readlink(join(out, "long-link")), `/${"t".repeat(120)}`);
  assert.equal((await lstat(join(out, "tmp"))).mode & 0o7777, 0o1777);
  const { stdout } = await execFileP("tar", ["-tf", tarFile]);
  assert.ok(
    stdout.split("\n").indexOf("deep/") < stdout.split("\n").indexOf(longPath.slice(1)),
    "parents first",
  );

  // The hash is stable for equal content and changes with one byte.
  const first = await hashEntries(resolved);
  assert.equal(await hashEntries(await resolveEntries(entries)), first);
  await writeFile(hostFile, Buffer.alloc(1500, 8));
  assert.notEqual(await hashEntries(await resolveEntries(entries)), first);
});

void test("treeEntries copies a directory tree with its symlinks", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "rootfs-tree-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  await execFileP("mkdir", ["-p", join(dir, "pkg/lib")]);
  await writeFile(join(dir, "pkg/lib/a.js"), "a");
  await execFileP("ln", ["-s", "lib/a.js", join(dir, "pkg/main.js")]);
  const entries = await treeEntries(join(dir, "pkg"), "/app");
  assert.deepEqual(
    entries.map((e) => [e.kind, e.path, e.kind === "symlink" ? e.target : ""]),
    [
      ["dir", "/app", ""],
      ["dir", "/app/lib", ""],
      ["file", "/app/lib/a.js", ""],
      ["symlink", "/app/main.js", "lib/a.js"],
    ],
  );
  const filtered = await treeEntries(join(dir, "pkg"), "/app", { filter: (rel) => rel !== "lib" });
  assert.deepEqual(
    filtered.map((e) => e.path),
    ["/app", "/app/main.js"],
  );
});
