#!/usr/bin/env node
// clawker-cp entry point. First it refuses an unsupported Node: nothing is imported statically and
// no syntax is newer than Node 20's, so the check runs before a dependency fails to link there.
// Then Node's on-disk compile cache is enabled before any of the daemon's modules load (module
// loading is most of the cold start). It lives in the install tree, never in a shared /tmp: a root
// daemon must not load bytecode others can write.
const NEEDED_MAJOR = 24;

if (Number(process.versions.node.split(".")[0]) !== NEEDED_MAJOR) {
  process.stderr.write(`clawker-cp: needs Node.js ${NEEDED_MAJOR} (found ${process.version})\n`);
  process.exit(2);
}
const { enableCompileCache } = await import("node:module");
const { fileURLToPath } = await import("node:url");
enableCompileCache(fileURLToPath(new URL("../../../.compile-cache", import.meta.url)));
await import("./run.js");

export {};
