// Regenerates the TypeScript for the wire contract, or (--check) proves the committed code is fresh.
//
//   npm run gen        buf generate into proto/src/gen
//   npm run gen:check  buf lint + buf format check + generate into a temp dir and compare
//
// Exit codes: 0 ok; 1 lint, format or drift failure; 2 a tool could not be run.
import { spawnSync } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { delimiter, join, relative, resolve } from "node:path";

const protoDir = resolve(import.meta.dirname, "..");
const repoRoot = resolve(protoDir, "..");
const binDir = join(repoRoot, "node_modules", ".bin");
/** Where buf.gen.yaml writes, relative to proto/. */
const genDir = join("src", "gen");

/** A tool failed to run at all (as opposed to reporting a problem): exit code 2. */
class ToolError extends Error {
  readonly reason = "tool_failed";
}

/** Runs buf (from proto/ unless `cwd` says otherwise) with node_modules/.bin first on PATH; returns its exit status. */
function buf(args: readonly string[], cwd = protoDir): number {
  const result = spawnSync(join(binDir, "buf"), args, {
    cwd,
    stdio: "inherit",
    env: { ...process.env, PATH: `${binDir}${delimiter}${process.env["PATH"] ?? ""}` },
  });
  if (result.error !== undefined) throw new ToolError(`buf ${args.join(" ")}`, { cause: result.error });
  if (result.status === null) throw new ToolError(`buf ${args.join(" ")} killed by ${result.signal}`);
  return result.status;
}

/**
 * Generates the code under `base`/proto/src/gen (buf.gen.yaml has clean: true, so stale files go).
 * buf runs from the repository root because one of its inputs, google/rpc's .proto files, comes
 * from node_modules/google-proto-files, and buf reads no input outside its working directory.
 */
function generate(base: string): void {
  const status = buf(["generate", "--template", join("proto", "buf.gen.yaml"), "-o", base], repoRoot);
  if (status !== 0) throw new ToolError(`buf generate exited with ${status}`);
}

/** Lists every file below `dir`, as paths relative to it; a missing dir has no files. */
async function listFiles(dir: string): Promise<string[]> {
  try {
    const entries = await readdir(dir, { recursive: true, withFileTypes: true });
    return entries.filter((e) => e.isFile()).map((e) => relative(dir, join(e.parentPath, e.name)));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
}

/** Compares two trees; returns one line per differing file. */
async function diffTrees(committed: string, fresh: string): Promise<string[]> {
  const [have, want] = await Promise.all([listFiles(committed), listFiles(fresh)]);
  const names = [...new Set([...have, ...want])].sort();
  const problems: string[] = [];
  for (const name of names) {
    if (!have.includes(name)) problems.push(`missing (not committed): ${name}`);
    else if (!want.includes(name)) problems.push(`extra (not generated): ${name}`);
    else {
      const [a, b] = await Promise.all([readFile(join(committed, name)), readFile(join(fresh, name))]);
      if (!a.equals(b)) problems.push(`differs: ${name}`);
    }
  }
  return problems;
}

/** Lint, format check and drift check; returns the process exit code. */
async function check(): Promise<number> {
  let failed = false;
  if (buf(["lint"]) !== 0) {
    console.error("gen:check: buf lint failed");
    failed = true;
  }
  if (buf(["format", "--diff", "--exit-code"]) !== 0) {
    console.error("gen:check: .proto files are not buf-formatted (run: npx buf format -w proto)");
    failed = true;
  }
  const tmp = await mkdtemp(join(tmpdir(), "clawker-proto-gen-"));
  try {
    generate(tmp);
    const problems = await diffTrees(join(protoDir, genDir), join(tmp, "proto", genDir));
    if (problems.length > 0) {
      console.error(`gen:check: proto/${genDir} differs from a fresh generation (run: npm run gen)`);
      for (const line of problems) console.error(`  ${line}`);
      failed = true;
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  if (!failed) console.log("gen:check: lint, format and generated code are up to date");
  return failed ? 1 : 0;
}

async function main(argv: readonly string[]): Promise<number> {
  const unknown = argv.filter((a) => a !== "--check");
  if (unknown.length > 0) {
    console.error(`usage: gen.ts [--check] (unknown: ${unknown.join(" ")})`);
    return 2;
  }
  if (argv.includes("--check")) return check();
  generate(".");
  for (const file of (await listFiles(join(protoDir, genDir))).sort())
    console.log(`wrote proto/${genDir}/${file}`);
  return 0;
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (err) {
  console.error("gen: could not run:", err);
  process.exitCode = 2;
}
