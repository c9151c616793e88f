// Runs every bench/*.bench.ts (or those named on the command line) and writes
// bench/results/latest.json and bench/results/latest.md.
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { basename, dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { Benchmark, Figure } from "./lib.js";

const here = dirname(fileURLToPath(import.meta.url));
const filters = process.argv.slice(2).filter((a) => !a.startsWith("-"));
const runs = Number(process.env["BENCH_RUNS"] ?? 7);
const warmup = Number(process.env["BENCH_WARMUP"] ?? 1);

interface Result {
  readonly benchmark: string;
  readonly skipped?: string;
  readonly error?: string;
  readonly figures: Figure[];
}

const files = readdirSync(here)
  .filter((f) => f.endsWith(".bench.ts"))
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort();

const loadBefore = loadavg();
const results: Result[] = [];
for (const file of files) {
  const mod = (await import(pathToFileURL(join(here, file)).href)) as { default: Benchmark };
  const bench = mod.default;
  const skipped = bench.skip?.();
  if (skipped !== undefined) {
    console.log(`# ${bench.name}: skipped (${skipped})`);
    results.push({ benchmark: bench.name, skipped, figures: [] });
    continue;
  }
  console.log(`# ${bench.name} (${basename(file)})`);
  try {
    const figures = await bench.run({ runs, warmup, log: (m) => console.log(`  ${m}`) });
    for (const f of figures) console.log(`  ${f.name}: median ${fmt(f.median)} ${f.unit}, p99 ${fmt(f.p99)}`);
    results.push({ benchmark: bench.name, figures });
  } catch (err) {
    console.error(err);
    results.push({ benchmark: bench.name, error: String(err), figures: [] });
    process.exitCode = 1;
  }
}

const report = {
  date: new Date().toISOString(),
  node: process.version,
  loadavg: { before: loadBefore, after: loadavg() },
  runs,
  warmup,
  results,
};
const outDir = join(here, "results");
mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, "latest.json"), JSON.stringify(report, null, 2) + "\n");
writeFileSync(join(outDir, "latest.md"), markdown(report));
console.log(`\nwrote ${join(outDir, "latest.json")} and latest.md`);

function fmt(n: number): string {
  return Math.abs(n) >= 100 ? n.toFixed(0) : n.toPrecision(3);
}

function markdown(r: typeof report): string {
  const lines = [
    `# Benchmarks ${r.date}`,
    "",
    `Node ${r.node}; load average before ${r.loadavg.before.map((x) => x.toFixed(2)).join(" ")}, after ${r.loadavg.after.map((x) => x.toFixed(2)).join(" ")}; ${r.warmup} warm-up + ${r.runs} runs.`,
    "",
    "| benchmark | figure | median | p99 | min | max | unit | runs | target |",
    "|---|---|---|---|---|---|---|---|---|",
  ];
  for (const res of r.results) {
    if (res.skipped !== undefined || res.error !== undefined) {
      lines.push(
        `| ${res.benchmark} | ${res.skipped ? `skipped: ${res.skipped}` : `error: ${res.error}`} | | | | | | | |`,
      );
    }
    for (const f of res.figures) {
      lines.push(
        `| ${res.benchmark} | ${f.name} | ${fmt(f.median)} | ${fmt(f.p99)} | ${fmt(f.min)} | ${fmt(f.max)} | ${f.unit} | ${f.runs} | ${f.target ?? ""} |`,
      );
    }
  }
  return lines.join("\n") + "\n";
}
