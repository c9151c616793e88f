// Builds the install tree that the control-plane image and the CLI's npm package ship, from the
// TypeScript sources (no `npm run build` needed). Each binary's entry is its version gate
// (`src/main.ts`, transformed, never bundled, so Node 20 can still parse it) and the module the
// gate imports is an esbuild bundle of everything behind it. The tree has the workspace's own
// layout (`packages/<name>/dist/...`, `ory/`), and every `import.meta` in our sources is rewritten
// to the location tsc would have given that module, so paths computed from it (the authserver
// entry, `ory/`, the compile cache, `package.json`) resolve as they do in a built checkout.
//
// Usage: tsx scripts/install-tree.ts OUT_DIR
import { createHash } from "node:crypto";
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { build, transform, type Plugin } from "esbuild";

/** The repository root (this file is scripts/install-tree.ts). */
export const REPO_ROOT = fileURLToPath(new URL("../", import.meta.url));

/** One program in the tree: its gate (if any) and the module behind it, bundled. */
interface Program {
  readonly pkg: string;
  /** The version gate, copied as the entry; it dynamically imports `bundle`. */
  readonly gate?: string;
  /** The module bundled with everything it imports. */
  readonly bundle: string;
}

// The authserver and the DNS gate have no gate: only clawker-cp starts them, under its own
// (checked) Node. The DNS gate is a process of its own (firewall/dns/entry.ts runs dist's main.js
// beside the daemon's bundle), so it is a bundle of its own too.
const PROGRAMS: readonly Program[] = [
  { pkg: "cli", gate: "src/main.ts", bundle: "src/run.ts" },
  { pkg: "controlplane", gate: "src/main.ts", bundle: "src/run.ts" },
  { pkg: "controlplane", bundle: "src/firewall/dns/main.ts" },
  { pkg: "authserver", bundle: "src/main.ts" },
];

/** What the tree holds, for the callers that package it. */
export interface InstallTree {
  readonly dir: string;
  /** The CLI package's version (the tree's package.json carries it). */
  readonly version: string;
  /** sha256 over every file's path and bytes: the same sources give the same digest. */
  readonly digest: string;
}

/** Where tsc writes a source file of the workspace (`packages/x/src/a/b.ts` -> `packages/x/dist/a/b.js`). */
export function distPathOf(repoRelative: string): string {
  return repoRelative.replace(/(^|\/)src\//, "$1dist/").replace(/\.ts$/, ".js");
}

// Our sources see `import.meta` as their dist/ module would; third-party code keeps the bundle's.
function importMetaPlugin(): Plugin {
  return {
    name: "clawker-import-meta",
    setup(b) {
      b.onLoad({ filter: /\.ts$/ }, (args) => {
        const rel = relative(REPO_ROOT, args.path).split(sep).join("/");
        if (rel.startsWith("..") || rel.includes("node_modules/")) return undefined;
        const source = readFileSync(args.path, "utf8");
        if (!source.includes("import.meta")) return { contents: source, loader: "ts" };
        const url = `new URL(${JSON.stringify(distPathOf(rel))}, __clawkerTreeRoot)`;
        const contents = source
          .replaceAll("import.meta.url", `${url}.href`)
          .replaceAll("import.meta.filename", `__clawkerFileURLToPath(${url})`)
          .replaceAll("import.meta.dirname", `__clawkerDirname(__clawkerFileURLToPath(${url}))`);
        return { contents, loader: "ts" };
      });
    },
  };
}

// Dependencies that import node:http as an ES module (oidc-provider) get it by
// process.getBuiltinModule instead: the ES module facade reads http's lazy WebSocket getters and so
// loads Node's bundled undici (~90 ms of CPU at start, and its memory). A name missing here fails
// the build, never the run. `require("http")` (CommonJS) is left alone: it reads no getter.
function nodeHttpPlugin(): Plugin {
  const namespace = "clawker-node-http";
  return {
    name: namespace,
    setup(b) {
      b.onResolve({ filter: /^(node:)?http$/ }, (args) =>
        args.kind === "import-statement" || args.kind === "dynamic-import"
          ? { path: "node:http", namespace }
          : undefined,
      );
      b.onLoad({ filter: /.*/, namespace }, () => ({
        contents: [
          'const http = process.getBuiltinModule("node:http");',
          "export default http;",
          "export const { METHODS, STATUS_CODES, Agent, ClientRequest, IncomingMessage, OutgoingMessage, Server,",
          "  ServerResponse, createServer, get, request, setMaxIdleHTTPParsers, validateHeaderName,",
          "  validateHeaderValue } = http;",
        ].join("\n"),
        loader: "js",
      }));
    },
  };
}

// JSON modules (mime-db's 200 KB table above all) as `JSON.parse` of one string instead of esbuild's
// default object literal: V8 parses JSON text several times faster than it builds the same object
// from JavaScript, even from the compile cache (mime-db: ~5 ms instead of ~16 ms at every start).
function jsonParsePlugin(): Plugin {
  return {
    name: "clawker-json-parse",
    setup(b) {
      b.onLoad({ filter: /\.json$/ }, (args) => {
        const text = readFileSync(args.path, "utf8");
        JSON.parse(text); // a malformed file fails the build, as esbuild's own loader would
        return { contents: `module.exports = JSON.parse(${JSON.stringify(text)});`, loader: "js" };
      });
    },
  };
}

// Packages bundled once although a dependency pins an older copy of its own. mime-types builds its
// extension maps from mime-db's whole table when it loads (~20 ms each, plus the table): koa and
// type-is use 3.x, accepts pins 2.1 for `lookup()` alone, which 3.x answers the same way, so the
// auth server's start paid for both copies. Only packages whose API the pinning importer uses
// unchanged belong here.
const SINGLE_COPY: readonly string[] = ["mime-types"];

function singleCopyPlugin(): Plugin {
  const fromRoot = createRequire(join(REPO_ROOT, "package.json"));
  // Bare names only (no subpaths): the filter is their exact list.
  const filter = new RegExp(`^(${SINGLE_COPY.join("|")})$`);
  return {
    name: "clawker-single-copy",
    setup(b) {
      b.onResolve({ filter }, (args) => ({ path: fromRoot.resolve(args.path) }));
    },
  };
}

// Runs before any bundled module: CommonJS inside the bundle needs `require` (and a few packages
// `__dirname`), and the rewritten import.meta needs the tree root, found from the bundle's depth.
function banner(bundleRel: string): string {
  const up = "../".repeat(bundleRel.split("/").length - 1);
  return [
    'import { createRequire as __clawkerCreateRequire } from "node:module";',
    'import { fileURLToPath as __clawkerFileURLToPath } from "node:url";',
    'import { dirname as __clawkerDirname } from "node:path";',
    "const require = __clawkerCreateRequire(import.meta.url);",
    "const __filename = __clawkerFileURLToPath(import.meta.url);",
    "const __dirname = __clawkerDirname(__filename);",
    `const __clawkerTreeRoot = new URL(${JSON.stringify(up)}, import.meta.url);`,
  ].join("\n");
}

/** Builds the tree into `outDir` (emptied first) and returns what it holds. */
export async function buildInstallTree(outDir: string): Promise<InstallTree> {
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  const inputs = new Set<string>();
  for (const program of PROGRAMS) {
    const pkgDir = `packages/${program.pkg}`;
    if (program.gate !== undefined) {
      const source = readFileSync(join(REPO_ROOT, pkgDir, program.gate), "utf8");
      // node20: the gate must still parse (and then refuse) on an unsupported Node.
      const { code } = await transform(source, { loader: "ts", format: "esm", target: "node20" });
      writeTree(outDir, distPathOf(`${pkgDir}/${program.gate}`), code);
    }
    const bundleRel = distPathOf(`${pkgDir}/${program.bundle}`);
    const result = await build({
      entryPoints: [join(REPO_ROOT, pkgDir, program.bundle)],
      // What a program imports dynamically is a chunk file beside its bundle, loaded when imported:
      // clawker-cp forks the auth server before it imports the daemon's own modules (run.ts), and
      // each file's top-level code, compiled when the file loads, is in Node's compile cache. Inlined,
      // that code sat in lazily compiled wrappers the cache did not hold, compiled at every start.
      // A CommonJS package imported lazily is a chunk that exports only `default` (module.exports),
      // as Node guarantees: the importer reads `.default`, never the names Node guesses from source.
      outdir: join(outDir, dirname(bundleRel)),
      entryNames: "[name]",
      chunkNames: "[name]-[hash]",
      splitting: true,
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node24",
      conditions: ["source"],
      // One prebuilt addon per platform: take this machine's directly instead of the runtime
      // lookup, so esbuild copies the .node file beside the bundle and requires it from there.
      alias: { "better-sqlite3": `better-sqlite3/${process.platform}-${process.arch}` },
      loader: { ".node": "copy" },
      // dockerode's ssh2 tries this optional addon (never built here: its install script is
      // denied) inside a try; left out, the require fails at run time and ssh2 goes without it.
      external: ["cpu-features"],
      banner: { js: banner(bundleRel) },
      plugins: [importMetaPlugin(), nodeHttpPlugin(), jsonParsePlugin(), singleCopyPlugin()],
      minifyWhitespace: true,
      minifySyntax: true,
      keepNames: true,
      legalComments: "none",
      metafile: true,
      logLevel: "error",
    });
    for (const input of Object.keys(result.metafile.inputs)) inputs.add(input);
    writePackageJson(outDir, pkgDir);
  }
  cpSync(join(REPO_ROOT, "ory"), join(outDir, "ory"), { recursive: true });
  const version = packageVersion("packages/cli");
  writeTree(
    outDir,
    "package.json",
    JSON.stringify(
      {
        name: "@clawker/cli",
        version,
        private: true,
        description: "The clawker command and the control plane daemon it starts (clawker-cp), bundled.",
        type: "module",
        license: "Apache-2.0",
        engines: { node: ">=24 <25" },
        os: [process.platform],
        cpu: [process.arch],
        bin: {
          clawker: distPathOf("packages/cli/src/main.ts"),
          "clawker-cp": distPathOf("packages/controlplane/src/main.ts"),
        },
      },
      null,
      2,
    ) + "\n",
  );
  writeTree(outDir, "THIRD_PARTY_LICENSES.txt", thirdPartyLicenses(inputs));
  return { dir: outDir, version, digest: treeDigest(outDir) };
}

function packageVersion(pkgDir: string): string {
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, pkgDir, "package.json"), "utf8")) as {
    version: string;
  };
  return pkg.version;
}

// `type: module` makes the .js files ESM; name and version are what `--version` reads.
function writePackageJson(outDir: string, pkgDir: string): void {
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, pkgDir, "package.json"), "utf8")) as {
    name: string;
    version: string;
  };
  writeTree(
    outDir,
    `${pkgDir}/package.json`,
    JSON.stringify({ name: pkg.name, version: pkg.version, private: true, type: "module" }, null, 2) + "\n",
  );
}

function writeTree(outDir: string, rel: string, content: string): void {
  const file = join(outDir, rel);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, content);
}

// Every third-party package in a bundle, with its license text (the bundles drop their comments).
function thirdPartyLicenses(inputs: ReadonlySet<string>): string {
  const packages = new Map<string, string>();
  for (const input of inputs) {
    const m = /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(input);
    if (m?.[1] !== undefined) packages.set(m[1], m[1]);
  }
  const sections: string[] = [];
  for (const dir of [...packages.keys()].sort()) {
    const abs = join(REPO_ROOT, dir);
    const pkg = JSON.parse(readFileSync(join(abs, "package.json"), "utf8")) as {
      name: string;
      version: string;
      license?: string;
    };
    const file = readdirSync(abs).find((f) => /^(licen[cs]e|copying)(\.|$)/i.test(f));
    const text =
      file === undefined
        ? `(no license file; package.json says ${pkg.license ?? "nothing"})`
        : readFileSync(join(abs, file), "utf8").trim();
    sections.push(`${pkg.name}@${pkg.version} (${pkg.license ?? "unknown"})\n\n${text}\n`);
  }
  return `Third-party packages bundled into this tree\n\n${sections.join("\n" + "-".repeat(72) + "\n\n")}`;
}

/** sha256 over the sorted relative paths and contents of every file under `dir`. */
export function treeDigest(dir: string): string {
  const hash = createHash("sha256");
  const walk = (rel: string): void => {
    for (const entry of readdirSync(join(dir, rel), { withFileTypes: true }).sort((a, b) =>
      a.name < b.name ? -1 : 1,
    )) {
      const child = rel === "" ? entry.name : `${rel}/${entry.name}`;
      if (entry.isDirectory()) walk(child);
      else {
        hash.update(`${child}\0`);
        hash.update(readFileSync(join(dir, child)));
        hash.update("\0");
      }
    }
  };
  walk("");
  return hash.digest("hex");
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const out = process.argv[2];
  if (out === undefined) {
    process.stderr.write("usage: tsx scripts/install-tree.ts OUT_DIR\n");
    process.exit(2);
  }
  if (existsSync(out) && !existsSync(join(out, "package.json")) && readdirSync(out).length > 0) {
    process.stderr.write(`install-tree: ${out} is not empty and not an install tree; refusing to empty it\n`);
    process.exit(2);
  }
  const tree = await buildInstallTree(out);
  process.stdout.write(`${JSON.stringify(tree)}\n`);
}
