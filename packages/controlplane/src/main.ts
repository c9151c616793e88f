#!/usr/bin/env node
// clawker-cp entry point. First it refuses an unsupported Node: nothing is imported statically and
// no syntax is newer than Node 20's, so the check runs before a dependency fails to link there.
// Then Node's on-disk compile cache is enabled before any of the daemon's modules load (module
// loading is most of the cold start). It lives in the install tree, never in a shared /tmp: a root
// daemon must not load bytecode others can write. So the folder is made 0700 and used only while
// it is a real directory of our own that nobody else can write; otherwise the start goes without.
const NEEDED_MAJOR = 24;

if (Number(process.versions.node.split(".")[0]) !== NEEDED_MAJOR) {
  process.stderr.write(`clawker-cp: needs Node.js ${NEEDED_MAJOR} (found ${process.version})\n`);
  process.exit(2);
}
const { enableCompileCache } = await import("node:module");
const { lstatSync, mkdirSync } = await import("node:fs");
const { fileURLToPath } = await import("node:url");

/** Why the compile cache folder must not be used, or undefined when it is ours alone. */
function notPrivate(dir: string): string | undefined {
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== "EEXIST") return `cannot create it (${code ?? String(err)})`;
  }
  const st = lstatSync(dir);
  const uid = process.geteuid?.();
  if (!st.isDirectory()) return "it is not a directory";
  if (uid !== undefined && st.uid !== uid) return `it is owned by uid ${st.uid}, not ${uid}`;
  if ((st.mode & 0o022) !== 0) return `others can write it (mode ${(st.mode & 0o777).toString(8)})`;
  return undefined;
}

const cacheDir = fileURLToPath(new URL("../../../.compile-cache", import.meta.url));
const refused = notPrivate(cacheDir);
if (refused === undefined) enableCompileCache(cacheDir);
else process.stderr.write(`clawker-cp: not using the compile cache ${cacheDir}: ${refused}\n`);
await import("./run.js");

export {};
