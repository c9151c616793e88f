#!/usr/bin/env node
// clawker-cp entry point: turns on Node's on-disk compile cache before any of the daemon's modules
// load (they are most of the cold start), then runs the daemon (run.ts). The cache lives in the
// install tree, never in a shared /tmp: a root daemon must not load bytecode others can write.
import { enableCompileCache } from "node:module";
import { fileURLToPath } from "node:url";

enableCompileCache(fileURLToPath(new URL("../../../.compile-cache", import.meta.url)));
await import("./run.js");
