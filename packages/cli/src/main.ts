#!/usr/bin/env node
// clawker's entry: refuses an unsupported Node before anything else loads (a dependency that needs
// a newer Node fails while being linked, with a stack trace instead of a reason), then loads the
// CLI. Nothing is imported statically and no syntax is newer than Node 20's, so the check runs there.
const NEEDED_MAJOR = 24;

if (Number(process.versions.node.split(".")[0]) !== NEEDED_MAJOR) {
  process.stderr.write(`clawker: needs Node.js ${NEEDED_MAJOR} (found ${process.version})\n`);
  process.exit(2);
}
await import("./run.js");

export {};
