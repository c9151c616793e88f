// Baseline: bare grpc-js unary echo over mTLS on loopback (sequential latency, 64-concurrent calls/s).
import type { Benchmark } from "./lib.js";
import { summarise } from "./lib.js";
import { startEcho } from "./grpc-baseline.js";
import { concurrentThroughput, sequentialLatencies } from "./unary-load.js";

const SEQUENTIAL_CALLS = 1000;
const CONCURRENT_CALLS = 5000;

const bench: Benchmark = {
  name: "grpc-baseline",
  async run(ctx) {
    const echo = await startEcho();
    try {
      await sequentialLatencies(200, echo.call); // warm the connection and the JIT
      const latencies: number[] = [];
      const throughput: number[] = [];
      for (let i = 0; i < ctx.warmup + ctx.runs; i++) {
        const lat = await sequentialLatencies(SEQUENTIAL_CALLS, echo.call);
        const tput = await concurrentThroughput(CONCURRENT_CALLS, 64, echo.call);
        if (i < ctx.warmup) continue;
        latencies.push(...lat);
        throughput.push(tput);
      }
      return [
        summarise("unary echo sequential latency", "ms", latencies, "lower"),
        summarise("unary echo 64-concurrent throughput", "calls/s", throughput, "higher"),
      ];
    } finally {
      await echo.close();
    }
  },
};
export default bench;
