// The daemon on embedded defaults, run from the build (cold start also from the install tree): cold
// start to /healthz 200 with the start-up timeline's medians, helper SIGKILL to exit, and idle
// resident memory of the daemon's own process. The authorized unary call against the bare grpc-js
// baseline is controlplane-authz.bench.ts (the filter `controlplane` runs both).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { mintTrustSet, writeTrustSet } from "@clawker/adminclient";
import { buildInstallTree } from "../scripts/install-tree.js";
import { helperPid, startControlPlane } from "../test/harness/controlplane.js";
import { waitFor } from "../test/harness/wait-for.js";
import { summarise, type Benchmark, type Figure } from "./lib.js";
import { cpuMs } from "./proc-stat.js";
import { rssMiB } from "../test/harness/proc-status.js";

const repoRoot = fileURLToPath(new URL("../", import.meta.url));

function median(xs: readonly number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

const bench: Benchmark = {
  name: "controlplane",
  async run(ctx) {
    const figures: Figure[] = [];

    // Cold start: exec to /healthz 200, from the spawn to the first 200 (polled every 5 ms), on
    // trust material minted once (minting is the CLI's work, not the daemon's start). Two forms side
    // by side: the install tree users run (`npm run pack:cli`, the image: esbuild bundles behind
    // the version gate) and the workspace's tsc output (`npm run build`, a checkout's daemon).
    const treeDir = mkdtempSync(join(tmpdir(), "clawker-bench-tree-"));
    const trustDir = mkdtempSync(join(tmpdir(), "clawker-bench-trust-"));
    try {
      await buildInstallTree(treeDir);
      const trustSet = await mintTrustSet();
      await writeTrustSet(trustDir, trustSet);
      const forms = [
        { name: "install tree (bundles)", entry: join(treeDir, "packages/controlplane/dist/main.js") },
        { name: "workspace dist (tsc)", entry: join(repoRoot, "packages/controlplane/dist/main.js") },
      ];
      const cold = new Map<string, number[]>(forms.map((f) => [f.name, []]));
      const readyTotal: number[] = [];
      // CPU (user + system) of the daemon and the auth server until /healthz 200: what the start
      // costs, which machine load distorts far less than the wall-clock figure.
      const readyCpu = { daemon: [] as number[], authserver: [] as number[], both: [] as number[] };
      const crashToExit: number[] = [];
      const steps = new Map<string, { start: number[]; ms: number[] }>();
      // The auth server's own timeline (its startup_step lines, forwarded by the supervisor as the
      // helper's output): what healthy_authserver waits for, in ms since the auth server's exec.
      const authSteps = new Map<string, { start: number[]; ms: number[] }>();
      // Interleaved, so both forms see the same machine load; the first round fills the compile caches.
      for (let i = 0; i < ctx.warmup + ctx.runs; i++) {
        for (const form of forms) {
          const cp = await startControlPlane({ entry: form.entry, trustDir, trustSet, healthPollMs: 5 });
          try {
            const measured = i >= ctx.warmup;
            if (measured) cold.get(form.name)!.push(cp.healthyAt! - cp.spawnedAt);
            if (measured && form === forms[0]) {
              const daemonCpu = cpuMs(cp.proc.pid!);
              const authCpu = cpuMs(helperPid(cp, "authserver"));
              readyCpu.daemon.push(daemonCpu);
              readyCpu.authserver.push(authCpu);
              readyCpu.both.push(daemonCpu + authCpu);
              const ready = cp.logs.find((l) => l["event"] === "ready" && l["totalMs"] !== undefined);
              readyTotal.push(ready!["totalMs"] as number);
              for (const l of cp.logs.filter((l) => l["event"] === "startup_step")) {
                const s = steps.get(l["step"] as string) ?? { start: [], ms: [] };
                s.start.push(l["startMs"] as number);
                s.ms.push(l["ms"] as number);
                steps.set(l["step"] as string, s);
              }
              for (const l of cp.logs) {
                const line =
                  l["helper"] === "authserver" ? (l["line"] as Record<string, unknown>) : undefined;
                if (line?.["event"] !== "startup_step") continue;
                const s = authSteps.get(line["step"] as string) ?? { start: [], ms: [] };
                s.start.push(line["startMs"] as number);
                s.ms.push(line["ms"] as number);
                authSteps.set(line["step"] as string, s);
              }
            }
            // Crash: SIGKILL the auth server; the daemon must drain and exit 1.
            const pid = helperPid(cp, "authserver");
            const killedAt = performance.now();
            process.kill(pid, "SIGKILL");
            const code = await cp.exited;
            if (code !== 1) throw new Error(`daemon exited ${code} after a helper crash, expected 1`);
            if (measured && form === forms[0]) crashToExit.push(performance.now() - killedAt);
          } finally {
            await cp.close();
          }
        }
      }
      for (const form of forms) {
        figures.push(
          summarise(
            `cold start, exec to /healthz 200: ${form.name}`,
            "ms",
            cold.get(form.name)!,
            "lower",
            form === forms[0] ? "median <= 800" : undefined,
          ),
        );
      }
      figures.push(
        summarise("ready record's totalMs (install tree, the daemon's own clock)", "ms", readyTotal, "lower"),
      );
      figures.push(
        summarise("CPU until /healthz 200, daemon (install tree)", "ms", readyCpu.daemon, "lower"),
      );
      figures.push(
        summarise("CPU until /healthz 200, auth server (install tree)", "ms", readyCpu.authserver, "lower"),
      );
      figures.push(summarise("CPU until /healthz 200, both (install tree)", "ms", readyCpu.both, "lower"));
      for (const [name, s] of steps) {
        ctx.log(`startup_step ${name}: starts at ${median(s.start)} ms, takes ${median(s.ms)} ms (medians)`);
      }
      for (const [name, s] of authSteps) {
        ctx.log(
          `authserver startup_step ${name}: starts at ${median(s.start)} ms, takes ${median(s.ms)} ms (medians, its own clock)`,
        );
      }
      figures.push(summarise("helper SIGKILL to daemon exit 1 (whole drain)", "ms", crashToExit, "lower"));
    } finally {
      rmSync(treeDir, { recursive: true, force: true });
      rmSync(trustDir, { recursive: true, force: true });
    }

    // Idle memory of the daemon's own process; the authorized-throughput figures are in
    // controlplane-authz.bench.ts (`npm run bench -- controlplane-authz` runs them alone).
    const cp = await startControlPlane({ built: true });
    try {
      // Idle: after start-up, before any traffic.
      const idle: number[] = [];
      for (let i = 0; i < ctx.runs; i++) {
        await new Promise((r) => setTimeout(r, 200));
        idle.push(rssMiB(cp.proc.pid!));
      }
      figures.push(summarise("daemon idle RSS after start (own process)", "MiB", idle, "lower", "<= 100"));
      // Idle for good: once memory relief has collected the start-up's garbage (in the first quiet
      // 100 ms after ready, trigger startup), which is where an idle daemon stays.
      await waitFor(() => cp.logs.some((l) => l["event"] === "memory_relief"), { timeoutMs: 60_000 });
      const settled: number[] = [];
      for (let i = 0; i < ctx.runs; i++) {
        await new Promise((r) => setTimeout(r, 200));
        settled.push(rssMiB(cp.proc.pid!));
      }
      figures.push(
        summarise(
          "daemon idle RSS once memory relief ran after start-up (own process)",
          "MiB",
          settled,
          "lower",
        ),
      );
    } finally {
      await cp.close();
    }
    return figures;
  },
};
export default bench;
