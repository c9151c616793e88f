// The entry (main.ts) enables Node's compile cache only on a folder nobody else can write: a root
// daemon loading bytecode another user wrote runs their code. Each case runs the real entry,
// transformed as the install tree ships it, in a tree layout whose run.js reports the cache.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test, type TestContext } from "node:test";
import { fileURLToPath } from "node:url";
import { transformSync } from "esbuild";
import { requires, root } from "../../../test/harness/preconditions.js";

const MAIN = fileURLToPath(new URL("../src/main.ts", import.meta.url));

/** A tree with the real entry and a run.js that prints the cache folder in use; returns the tree. */
function tree(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), "clawker-cc-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const dist = join(dir, "packages/controlplane/dist");
  mkdirSync(dist, { recursive: true });
  const { code } = transformSync(readFileSync(MAIN, "utf8"), {
    loader: "ts",
    format: "esm",
    target: "node20",
  });
  writeFileSync(join(dist, "main.js"), code);
  writeFileSync(
    join(dist, "run.js"),
    'import { getCompileCacheDir } from "node:module";\nprocess.stdout.write(String(getCompileCacheDir()));\n',
  );
  writeFileSync(join(dir, "package.json"), '{ "type": "module" }\n');
  return dir;
}

function start(dir: string): { cache: string; stderr: string } {
  const env = { ...process.env };
  delete env["NODE_COMPILE_CACHE"]; // Node would enable that one itself, before main.ts
  const r = spawnSync(process.execPath, [join(dir, "packages/controlplane/dist/main.js")], {
    env,
    encoding: "utf8",
  });
  assert.equal(r.status, 0, r.stderr);
  return { cache: r.stdout, stderr: r.stderr };
}

describe("the compile cache of clawker-cp", () => {
  test("is created 0700 in the install tree and used", (t) => {
    const dir = tree(t);
    const { cache, stderr } = start(dir);
    // Node keeps it in a folder per Node version and V8 flags, inside ours.
    assert.ok(cache.startsWith(join(dir, ".compile-cache") + "/"), cache);
    assert.equal(stderr, "");
    assert.equal(lstatSync(join(dir, ".compile-cache")).mode & 0o777, 0o700);
  });

  test("is not used when others can write it", (t) => {
    const dir = tree(t);
    mkdirSync(join(dir, ".compile-cache"));
    chmodSync(join(dir, ".compile-cache"), 0o777);
    const { cache, stderr } = start(dir);
    assert.equal(cache, "undefined");
    assert.match(stderr, /not using the compile cache .*others can write it \(mode 777\)/);
  });

  test("is not used when it is a symlink", (t) => {
    const dir = tree(t);
    mkdirSync(join(dir, "elsewhere"), { mode: 0o700 });
    symlinkSync(join(dir, "elsewhere"), join(dir, ".compile-cache"));
    const { cache, stderr } = start(dir);
    assert.equal(cache, "undefined");
    assert.match(stderr, /it is not a directory/);
  });

  test("is not used when another user owns it", (t) => {
    if (!requires(t, root)) return;
    const dir = tree(t);
    mkdirSync(join(dir, ".compile-cache"), { mode: 0o700 });
    chownSync(join(dir, ".compile-cache"), 65534, 65534);
    const { cache, stderr } = start(dir);
    assert.equal(cache, "undefined");
    assert.match(stderr, /it is owned by uid 65534, not 0/);
  });
});
