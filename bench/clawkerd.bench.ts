// clawkerd Session figures against clawkerd as a local process over real mTLS on loopback:
// the round trip of `true` as a one-stage pipeline (Started..Done), and the output throughput of
// `cat` of a 100 MiB file streamed back as OutputChunks (with the Session's backpressure), both
// without and with per-command flow control (the control plane's window and credit batching).
//
// The baseline ("grpc-js alone") is output-server.ts: a bare grpc-js server in its own process that
// runs the same `cat` and sends what it reads from the pipe as OutputChunks of clawkerd's size
// (64 KiB) with clawkerd's serializer, read by the same client over the same mTLS and window, under
// clawkerd's heap settings (CLAWKERD_NODE_FLAGS and its heap-tuning.ts; the same server at node's
// defaults is reported too). Until issue 15's second round the baseline was grpc-js streaming
// pre-built chunks from memory with server and reader in this one process: it paid neither the
// child process, nor the pipe reads, nor its own event loop's wake-ups per write, which every
// server of a command's output pays, so its ratio measured grpc-js against a different job. That
// figure is still reported, as a reference.
import { randomBytes } from "node:crypto";
import { open, rm } from "node:fs/promises";
import tls from "node:tls";
import { credentials, Server, ServerCredentials, type ServerDuplexStream } from "@grpc/grpc-js";
import { clawkerd } from "@clawker/proto";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { DEFAULT_MAX_CHUNK_BYTES } from "../packages/clawkerd/src/output-buffer.js";
import { makeTestAgent } from "../packages/clawkerd/test/fixtures/bootstrap.js";
import { spawnClawkerd } from "../packages/clawkerd/test/fixtures/clawkerd-process.js";
import {
  controlPlaneIdentity,
  SessionClient,
  shell,
  stage,
  terminal,
} from "../packages/clawkerd/test/fixtures/session-client.js";
import { startOutputServer } from "./grpc-baseline.js";
import { type Benchmark, type Figure, ownCpuMs, repeat, summarise } from "./lib.js";
import { cpuMs } from "./proc-stat.js";

/** One cat through one server: throughput and CPU ms per MiB of the server and the reader. */
interface Sample {
  readonly rate: number;
  readonly serverCpu: number;
  readonly readerCpu: number;
}

const ROUND_TRIPS = 400;
const FILE_MIB = 100;
// The control plane dialer's HTTP/2 receive window (grpc-node.flow_control_window); 64 KiB by default.
const WINDOW = Number(process.env["CLAWKERD_BENCH_WINDOW"] ?? 4 << 20);
// The control plane's per-command output window (DEFAULT_OUTPUT_WINDOW in agents/command-flow.ts).
const OUTPUT_WINDOW = { bytes: 1 << 20, chunks: 256 };

const bench: Benchmark = {
  name: "clawkerd",
  async run(ctx): Promise<Figure[]> {
    const agent = await makeTestAgent();
    const proc = spawnClawkerd(agent);
    const clients: SessionClient[] = [];
    const stops: Array<() => Promise<void>> = [];
    try {
      await proc.waitListening();
      const identity = controlPlaneIdentity(agent.trust);

      // Round trip of `true`.
      const c = new SessionClient(proc.address, identity);
      clients.push(c);
      await c.hello();
      let n = 0;
      const once = async (): Promise<number> => {
        const id = `t${n++}`;
        const start = performance.now();
        const rs = await c.run(id, shell([stage(["true"])]));
        const ms = performance.now() - start;
        if (terminal(rs)?.payload?.$case !== "done") throw new Error(`true failed: ${JSON.stringify(rs)}`);
        c.byId.delete(id);
        return ms;
      };
      for (let i = 0; i < 20; i++) await once();
      const rtt: number[] = [];
      for (let i = 0; i < ROUND_TRIPS; i++) rtt.push(await once());
      ctx.log(`round trips: ${ROUND_TRIPS}`);

      // Throughput of cat of a 100 MiB file.
      const file = join(agent.dir, "big.bin");
      const fh = await open(file, "w");
      const block = randomBytes(1 << 20);
      for (let i = 0; i < FILE_MIB; i++) await fh.write(block);
      await fh.close();
      const size = FILE_MIB * (1 << 20);
      const leaf = {
        caPem: agent.trust.set.ca.certPem,
        certPem: agent.leaf.certPem,
        keyPem: agent.leaf.keyPem,
      };
      // The baseline runs under clawkerd's heap settings, so the ratio compares the servers' work
      // and not V8's collection schedules; the same server at node's defaults is a reference.
      const baseline = await startOutputServer(leaf, "clawkerd");
      stops.push(() => baseline.close());
      const defaults = await startOutputServer(leaf);
      stops.push(() => defaults.close());
      let k = 0;
      // One cat of the file through a server process: MiB/s, and CPU ms per MiB of the server
      // process itself (cat's own CPU is its child's, the same on both sides) and of this reader.
      const catRun = async (
        address: string,
        pid: number,
        outputWindow?: typeof OUTPUT_WINDOW,
      ): Promise<Sample> => {
        const s = new SessionClient(address, identity, {
          keepOutput: false,
          flowControlWindow: WINDOW,
          ...(outputWindow === undefined ? {} : { outputWindow }),
        });
        clients.push(s);
        await s.hello();
        const id = `cat${k++}`;
        const server0 = cpuMs(pid);
        const reader0 = ownCpuMs();
        const start = performance.now();
        const rs = await s.run(id, shell([stage(["cat", file])]), 120_000);
        const seconds = (performance.now() - start) / 1000;
        const sample = {
          rate: FILE_MIB / seconds,
          serverCpu: (cpuMs(pid) - server0) / FILE_MIB,
          readerCpu: (ownCpuMs() - reader0) / FILE_MIB,
        };
        if (s.outputBytes !== size || terminal(rs)?.payload?.$case !== "done") {
          throw new Error(`cat delivered ${s.outputBytes} of ${size} bytes`);
        }
        s.close();
        return sample;
      };
      // Side by side: each round runs clawkerd, clawkerd with flow control and the baseline back
      // to back, so a change of load hits all three alike.
      const rounds = await repeat(ctx, async () => ({
        plain: await catRun(proc.address, proc.child.pid!),
        credited: await catRun(proc.address, proc.child.pid!, OUTPUT_WINDOW),
        alone: await catRun(baseline.address, baseline.pid),
        aloneDefaults: await catRun(defaults.address, defaults.pid),
        inProcess: await grpcCeiling(agent, size),
      }));
      await rm(file, { force: true });
      const of = (pick: (r: (typeof rounds)[number]) => number): number[] => rounds.map(pick);
      return [
        summarise("Session round trip of `true` (one-stage pipeline)", "ms", rtt, "lower", "p50 <= 10 ms"),
        summarise(
          "Session output throughput, cat of a 100 MiB file",
          "MiB/s",
          of((r) => r.plain.rate),
          "higher",
          ">= 100 MiB/s",
        ),
        summarise(
          "Session output throughput, cat of a 100 MiB file, per-command flow control (1 MiB window)",
          "MiB/s",
          of((r) => r.credited.rate),
          "higher",
          ">= 100 MiB/s",
        ),
        summarise(
          "reference: grpc-js alone, the same cat read from its pipe, 64 KiB OutputChunks, own process",
          "MiB/s",
          of((r) => r.alone.rate),
          "higher",
        ),
        summarise(
          "reference: the same grpc-js alone at node's default heap settings",
          "MiB/s",
          of((r) => r.aloneDefaults.rate),
          "higher",
        ),
        summarise(
          "Session output / grpc-js alone (same round)",
          "%",
          of((r) => (100 * r.plain.rate) / r.alone.rate),
          "higher",
          ">= 90%",
        ),
        summarise(
          "Session output with flow control / grpc-js alone (same round)",
          "%",
          of((r) => (100 * r.credited.rate) / r.alone.rate),
          "higher",
          ">= 90%",
        ),
        summarise(
          "clawkerd CPU per MiB (process itself, not cat)",
          "ms/MiB",
          of((r) => r.plain.serverCpu),
          "lower",
        ),
        summarise(
          "clawkerd CPU per MiB, flow control",
          "ms/MiB",
          of((r) => r.credited.serverCpu),
          "lower",
        ),
        summarise(
          "reference: grpc-js alone server CPU per MiB (process itself, not cat)",
          "ms/MiB",
          of((r) => r.alone.serverCpu),
          "lower",
        ),
        summarise(
          "reference: grpc-js alone server CPU per MiB at node's default heap settings",
          "ms/MiB",
          of((r) => r.aloneDefaults.serverCpu),
          "lower",
        ),
        summarise(
          "grpc-js alone / clawkerd, server CPU per MiB (same round)",
          "%",
          of((r) => (100 * r.alone.serverCpu) / r.plain.serverCpu),
          "higher",
        ),
        summarise(
          "reader CPU per MiB from clawkerd",
          "ms/MiB",
          of((r) => r.plain.readerCpu),
          "lower",
        ),
        summarise(
          "reader CPU per MiB from grpc-js alone",
          "ms/MiB",
          of((r) => r.alone.readerCpu),
          "lower",
        ),
        summarise(
          "reference: grpc-js alone, 100 MiB of pre-built 64 KiB OutputChunks, server and reader in this process",
          "MiB/s",
          of((r) => r.inProcess.rate),
          "higher",
        ),
        summarise(
          "reference: the same, CPU per MiB of server and reader together",
          "ms/MiB",
          of((r) => r.inProcess.cpu),
          "lower",
        ),
      ];
    } finally {
      for (const cl of clients) cl.close();
      for (const stop of stops) await stop();
      await proc.kill();
      await agent.close();
    }
  },
};

/**
 * The former reference: an in-process ClawkerdService that streams pre-built 64 KiB OutputChunks
 * over the same mTLS and window, with no child process or pipe; throughput and this process's CPU
 * per MiB (server and reader together).
 */
async function grpcCeiling(
  agent: Awaited<ReturnType<typeof makeTestAgent>>,
  size: number,
): Promise<{ rate: number; cpu: number }> {
  tls.DEFAULT_MIN_VERSION = "TLSv1.3";
  const server = new Server();
  const chunk = Buffer.alloc(DEFAULT_MAX_CHUNK_BYTES, 7);
  server.addService(clawkerd.ClawkerdServiceService, {
    session: (call: ServerDuplexStream<clawkerd.Command, clawkerd.Response>) => {
      call.once("data", () => {
        void (async () => {
          for (let sent = 0; sent < size; sent += chunk.length) {
            if (!call.write({ commandId: "x", payload: { $case: "output", value: { data: chunk } } })) {
              await new Promise((r) => call.once("drain", r));
            }
          }
          call.write({ commandId: "x", payload: { $case: "done", value: { finalExitCode: 0 } } });
          call.end();
        })();
      });
    },
  });
  const creds = ServerCredentials.createSsl(
    Buffer.from(agent.trust.set.ca.certPem),
    [{ private_key: Buffer.from(agent.leaf.keyPem), cert_chain: Buffer.from(agent.leaf.certPem) }],
    true,
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", creds, (e, p) => (e === null ? resolve(p) : reject(e))),
  );
  const cp = agent.trust.set.controlPlaneClient;
  const client = new clawkerd.ClawkerdServiceClient(
    `127.0.0.1:${port}`,
    credentials.createSsl(
      Buffer.from(agent.trust.set.ca.certPem),
      Buffer.from(cp.keyPem),
      Buffer.from(cp.certPem),
      {
        checkServerIdentity: () => undefined,
      },
    ),
    { "grpc.ssl_target_name_override": "localhost", "grpc-node.flow_control_window": WINDOW },
  );
  try {
    const call = client.session();
    call.on("error", () => undefined);
    let got = 0;
    const cpu0 = ownCpuMs();
    const start = performance.now();
    await new Promise<void>((resolve) => {
      call.on("data", (r: clawkerd.Response) => {
        if (r.payload?.$case === "output") got += r.payload.value.data.length;
        else resolve();
      });
      call.write({ commandId: "hello", payload: { $case: "hello", value: {} } });
    });
    const seconds = (performance.now() - start) / 1000;
    const mib = size / (1 << 20);
    const cpu = (ownCpuMs() - cpu0) / mib;
    call.cancel();
    if (got !== size) throw new Error(`ceiling run got ${got} of ${size}`);
    return { rate: mib / seconds, cpu };
  } finally {
    client.close();
    server.forceShutdown();
  }
}

export default bench;
