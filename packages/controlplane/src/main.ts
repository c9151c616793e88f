#!/usr/bin/env node
// clawker-cp entry point. Two things must happen before any of the daemon's modules load:
// - V8 heap flags: a 1 MiB young-generation semi-space keeps the idle daemon near 110 MiB instead
//   of ~120 MiB (measured); V8 reads them only at start-up, so the process re-executes itself
//   once with them (execve: same pid, so pid files and signals still point at it);
// - Node's on-disk compile cache (module loading is most of the cold start). It lives in the
//   install tree, never in a shared /tmp: a root daemon must not load bytecode others can write.
import { enableCompileCache } from "node:module";
import { fileURLToPath } from "node:url";

/** V8 flags the daemon runs with. */
const HEAP_FLAGS = ["--max-semi-space-size=1"];

// execve exists on POSIX only; elsewhere the daemon runs with V8's defaults.
if (process.execve !== undefined && !HEAP_FLAGS.every((flag) => process.execArgv.includes(flag))) {
  process.execve(process.execPath, [
    process.execPath,
    ...HEAP_FLAGS,
    ...process.execArgv,
    ...process.argv.slice(1),
  ]);
}
enableCompileCache(fileURLToPath(new URL("../../../.compile-cache", import.meta.url)));
await import("./run.js");
