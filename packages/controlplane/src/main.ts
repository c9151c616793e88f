#!/usr/bin/env node
// clawker-cp entry point. Node's on-disk compile cache must be enabled before any of the daemon's
// modules load (module loading is most of the cold start). It lives in the install tree, never in
// a shared /tmp: a root daemon must not load bytecode others can write.
import { enableCompileCache } from "node:module";
import { fileURLToPath } from "node:url";

enableCompileCache(fileURLToPath(new URL("../../../.compile-cache", import.meta.url)));
await import("./run.js");
