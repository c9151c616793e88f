// Jobs figures (issue 13) against clawkerd as a local process over real mTLS on loopback, on one
// channel as the control plane holds it: StartJob to the first output byte at a watcher, output
// to 8 concurrent watchers (aggregate), the same with a 9th watcher in a stopped process (a
// stalled reader: its cost to the others), and the GetJobStatus answer.
import { spawn } from "node:child_process";
import { performance } from "node:perf_hooks";
import tls from "node:tls";
import { fileURLToPath } from "node:url";
import { credentials, type ServiceError } from "@grpc/grpc-js";
import { jobs } from "@clawker/proto";
import { makeTestAgent, type TestAgent } from "../packages/clawkerd/test/fixtures/bootstrap.js";
import { repoRoot, spawnClawkerd } from "../packages/clawkerd/test/fixtures/clawkerd-process.js";
import { type Benchmark, type Figure, repeat, summarise } from "./lib.js";

const FIRST_BYTE_SAMPLES = 60;
const STATUS_SAMPLES = 400;
const WATCHERS = 8;
const FANOUT_MIB = 64;
const watcherChild = fileURLToPath(
  new URL("../packages/clawkerd/test/fixtures/job-watcher-child.ts", import.meta.url),
);

function unary<Res>(
  c: jobs.JobServiceClient,
  method: "startJob" | "getJobStatus",
  req: object,
): Promise<Res> {
  return new Promise((resolve, reject) =>
    (c[method].bind(c) as unknown as (r: object, cb: (e: ServiceError | null, v: Res) => void) => void)(
      req,
      (e, v) => (e === null ? resolve(v) : reject(e)),
    ),
  );
}

const start = (c: jobs.JobServiceClient, argv: string[]): Promise<jobs.StartJobResponse> =>
  unary(c, "startJob", { agentName: "dev", project: "proj", argv, cwd: "", env: {} });

/** Resolves with the bytes a watcher read when the job's output ended. */
function watchCount(c: jobs.JobServiceClient, name: string, onFirst?: () => void): Promise<number> {
  return new Promise((resolve, reject) => {
    let n = 0;
    const s = c.watchJobOutput({ name });
    s.on("data", (m: jobs.WatchJobOutputResponse) => {
      if (n === 0 && m.data.length > 0) onFirst?.();
      n += m.data.length;
    });
    s.on("end", () => resolve(n));
    s.on("error", reject);
  });
}

const bench: Benchmark = {
  name: "jobs",
  async run(ctx): Promise<Figure[]> {
    const agent = await makeTestAgent();
    const proc = spawnClawkerd(agent, { env: { CLAWKERD_JOB_OUTPUT_BYTES: String(256 << 20) } });
    const stopped: Array<ReturnType<typeof spawn>> = [];
    let client: jobs.JobServiceClient | undefined;
    try {
      await proc.waitListening();
      tls.DEFAULT_MIN_VERSION = "TLSv1.3";
      const set = agent.trust.set;
      client = new jobs.JobServiceClient(
        proc.address,
        credentials.createSsl(
          Buffer.from(set.ca.certPem),
          Buffer.from(set.controlPlaneClient.keyPem),
          Buffer.from(set.controlPlaneClient.certPem),
          { checkServerIdentity: () => undefined },
        ),
        { "grpc.ssl_target_name_override": "localhost", "grpc-node.flow_control_window": 4 << 20 },
      );
      const c = client;

      // StartJob -> first output byte at a watcher opened when StartJob answered.
      const firstByte = async (): Promise<number> => {
        const t0 = performance.now();
        const { job } = await start(c, ["echo", "x"]);
        let at = 0;
        await watchCount(c, job!.name, () => (at = performance.now()));
        return at - t0;
      };
      for (let i = 0; i < 5; i++) await firstByte();
      const firstBytes: number[] = [];
      for (let i = 0; i < FIRST_BYTE_SAMPLES; i++) firstBytes.push(await firstByte());

      // GetJobStatus of a running job.
      const { job: sleeper } = await start(c, ["sleep", "600"]);
      const statusMs: number[] = [];
      for (let i = 0; i < 20 + STATUS_SAMPLES; i++) {
        const t0 = performance.now();
        await unary(c, "getJobStatus", { name: sleeper!.name });
        if (i >= 20) statusMs.push(performance.now() - t0);
      }

      // Output to 8 watchers, with or without a 9th in a stopped process.
      const size = FANOUT_MIB << 20;
      const fanout = async (withStalled: boolean): Promise<number> => {
        const { job } = await start(c, ["/bin/sh", "-c", `head -c ${size} /dev/zero`]);
        if (withStalled) await stalledWatcher(agent, proc.address, job!.name, stopped);
        const t0 = performance.now();
        const counts = await Promise.all(Array.from({ length: WATCHERS }, () => watchCount(c, job!.name)));
        const seconds = (performance.now() - t0) / 1000;
        if (counts.some((n) => n !== size)) throw new Error(`a watcher got ${counts.join(",")} of ${size}`);
        return (WATCHERS * FANOUT_MIB) / seconds;
      };
      const free = await repeat(ctx, () => fanout(false));
      const withStall = await repeat(ctx, () => fanout(true));
      const freeMedian = summarise("x", "x", free, "higher").median;
      const stallMedian = summarise("x", "x", withStall, "higher").median;
      ctx.log(
        `stalled watcher costs the others ${(100 * (1 - stallMedian / freeMedian)).toFixed(1)}% (target < 10%)`,
      );
      await unary(c, "getJobStatus", { name: sleeper!.name });
      return [
        summarise(
          "StartJob to the first output byte at a watcher",
          "ms",
          firstBytes,
          "lower",
          "p50 <= 15 ms",
        ),
        summarise(
          `output to ${WATCHERS} concurrent watchers, aggregate`,
          "MiB/s",
          free,
          "higher",
          ">= 100 MiB/s",
        ),
        summarise(
          `output to ${WATCHERS} concurrent watchers with a 9th stalled (stopped process), aggregate`,
          "MiB/s",
          withStall,
          "higher",
          "< 10% below the line above",
        ),
        summarise("GetJobStatus answer", "ms", statusMs, "lower", "p50 <= 5 ms"),
      ];
    } finally {
      for (const p of stopped) {
        p.kill("SIGCONT");
        p.kill("SIGKILL");
      }
      client?.close();
      await proc.kill();
      await agent.close();
    }
  },
};

/** A watcher in its own process that read its first bytes and was then stopped (SIGSTOP). */
async function stalledWatcher(
  agent: TestAgent,
  address: string,
  name: string,
  stopped: Array<ReturnType<typeof spawn>>,
): Promise<void> {
  const set = agent.trust.set;
  const child = spawn(
    process.execPath,
    ["--import", "tsx", "--conditions=source", watcherChild, address, name],
    {
      cwd: repoRoot,
      env: {
        ...process.env,
        WATCH_CA: set.ca.certPem,
        WATCH_CERT: set.controlPlaneClient.certPem,
        WATCH_KEY: set.controlPlaneClient.keyPem,
      },
      stdio: ["ignore", "pipe", "ignore"],
    },
  );
  stopped.push(child);
  await new Promise<void>((resolve, reject) => {
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      out += d;
      if (out.includes("first")) {
        child.kill("SIGSTOP");
        resolve();
      }
    });
    child.once("exit", () => reject(new Error(`the stalled watcher exited: ${out}`)));
  });
}

export default bench;
