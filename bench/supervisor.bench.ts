// Supervisor figures: how fast a helper's death reaches the daemon (the drain starts on `crashed`),
// how long a trivial HTTP helper takes from spawn to healthy, and an ordered stop of three helpers.
import { performance } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { freePort } from "@clawker/test-support";
import { pino } from "pino";
import {
  SubprocessManager,
  type HelperCommand,
} from "../packages/controlplane/src/supervisor/subprocess-manager.js";
import { repeat, summarise, type Benchmark, type Figure } from "./lib.js";

const FIXTURE = fileURLToPath(new URL("../packages/controlplane/test/fixtures/helper.js", import.meta.url));
const silent = pino({ level: "silent" });

function helper(env: Record<string, string>): HelperCommand {
  return { file: process.execPath, args: [FIXTURE], env };
}

/** SIGKILL of a running helper until `crashed` resolves (what the daemon awaits to start the drain). */
async function killToCrash(): Promise<number> {
  const m = new SubprocessManager({ logger: silent });
  try {
    const pid = await m.start("victim", { file: "sleep", args: ["1000"] });
    const start = performance.now();
    process.kill(pid, "SIGKILL");
    await m.crashed;
    return performance.now() - start;
  } finally {
    await m.close();
  }
}

/** start() of a node HTTP helper until waitHealthy() resolves, at a given poll interval. */
async function spawnToHealthy(intervalMs: number): Promise<number> {
  const m = new SubprocessManager({ logger: silent });
  try {
    const port = await freePort();
    const start = performance.now();
    await m.start("web", helper({ HELPER_HTTP_PORT: String(port) }));
    await m.waitHealthy("web", { url: `http://127.0.0.1:${port}/health`, intervalMs, timeoutMs: 10_000 });
    return performance.now() - start;
  } finally {
    await m.close();
  }
}

/** shutdown() of three ready node helpers that honour SIGTERM (reverse order, one at a time). */
async function orderedStop(): Promise<number> {
  const m = new SubprocessManager({ logger: silent });
  try {
    const ports = await Promise.all([freePort(), freePort(), freePort()]);
    for (const [i, port] of ports.entries()) {
      await m.start(`h${i}`, helper({ HELPER_HTTP_PORT: String(port) }));
      await m.waitHealthy(`h${i}`, { url: `http://127.0.0.1:${port}/health`, intervalMs: 10 });
    }
    const start = performance.now();
    await m.shutdown(5_000);
    return performance.now() - start;
  } finally {
    await m.close();
  }
}

const bench: Benchmark = {
  name: "supervisor",
  async run(ctx): Promise<Figure[]> {
    const kill = await repeat(ctx, killToCrash);
    const healthy200 = await repeat(ctx, () => spawnToHealthy(200));
    const healthy20 = await repeat(ctx, () => spawnToHealthy(20));
    const stop = await repeat(ctx, orderedStop);
    return [
      summarise("SIGKILL of a helper -> crashed resolved", "ms", kill, "lower", "<= 100 ms (drain starts)"),
      summarise("spawn -> healthy, node HTTP helper, 200 ms poll (default)", "ms", healthy200, "lower"),
      summarise("spawn -> healthy, node HTTP helper, 20 ms poll", "ms", healthy20, "lower"),
      summarise("ordered shutdown of 3 helpers (SIGTERM honoured)", "ms", stop, "lower"),
    ];
  },
};

export default bench;
