#!/usr/bin/env node
/* global process, URL */
// The `clawker` bin of a checkout (`npx clawker`). npm links a workspace's bins at install time and
// only to files that exist then; dist/ appears later (npm run build), this file is always there.
// Without a linked bin, `npx clawker` would fetch whatever the registry has under that name.
// Plain JavaScript importing only node:fs, so the version gate in dist/main.js runs on any Node.
import { existsSync } from "node:fs";

const entry = new URL("../dist/main.js", import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write("clawker: this checkout is not built yet: run `npm run build` first\n");
  process.exit(1);
}
await import(entry.href);
