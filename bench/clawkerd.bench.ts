// clawkerd Session figures against clawkerd as a local process over real mTLS on loopback:
// the round trip of `true` as a one-stage pipeline (Started..Done), and the output throughput of
// `cat` of a 100 MiB file streamed back as OutputChunks (with the Session's backpressure), both
// without and with per-command flow control (the control plane's window and credit batching).
import { randomBytes } from "node:crypto";
import { open, rm } from "node:fs/promises";
import tls from "node:tls";
import { credentials, Server, ServerCredentials, type ServerDuplexStream } from "@grpc/grpc-js";
import { clawkerd } from "@clawker/proto";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { makeTestAgent } from "../packages/clawkerd/test/fixtures/bootstrap.js";
import { spawnClawkerd } from "../packages/clawkerd/test/fixtures/clawkerd-process.js";
import { SessionClient, shell, stage, terminal } from "../packages/clawkerd/test/fixtures/session-client.js";
import { type Benchmark, type Figure, repeat, summarise } from "./lib.js";

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
    try {
      await proc.waitListening();
      const identity = {
        caPem: agent.trust.set.ca.certPem,
        certPem: agent.trust.set.controlPlaneClient.certPem,
        keyPem: agent.trust.set.controlPlaneClient.keyPem,
      };

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
      let k = 0;
      const catRate = async (outputWindow?: typeof OUTPUT_WINDOW): Promise<number> => {
        const s = new SessionClient(proc.address, identity, {
          keepOutput: false,
          flowControlWindow: WINDOW,
          ...(outputWindow === undefined ? {} : { outputWindow }),
        });
        clients.push(s);
        await s.hello();
        const id = `cat${k++}`;
        const start = performance.now();
        const rs = await s.run(id, shell([stage(["cat", file])]), 120_000);
        const seconds = (performance.now() - start) / 1000;
        if (s.outputBytes !== size || terminal(rs)?.payload?.$case !== "done") {
          throw new Error(`cat delivered ${s.outputBytes} of ${size} bytes`);
        }
        s.close();
        return FILE_MIB / seconds;
      };
      const rates = await repeat(ctx, () => catRate());
      const credited = await repeat(ctx, () => catRate(OUTPUT_WINDOW));
      await rm(file, { force: true });
      const ceiling = await repeat(ctx, () => grpcCeiling(agent, size));
      return [
        summarise("Session round trip of `true` (one-stage pipeline)", "ms", rtt, "lower", "p50 <= 10 ms"),
        summarise(
          "Session output throughput, cat of a 100 MiB file",
          "MiB/s",
          rates,
          "higher",
          ">= 100 MiB/s",
        ),
        summarise(
          "Session output throughput, cat of a 100 MiB file, per-command flow control (1 MiB window)",
          "MiB/s",
          credited,
          "higher",
          ">= 100 MiB/s",
        ),
        summarise(
          "reference: grpc-js alone, 100 MiB of 32 KiB OutputChunks, same mTLS, in-process",
          "MiB/s",
          ceiling,
          "higher",
        ),
      ];
    } finally {
      for (const cl of clients) cl.close();
      await proc.kill();
      await agent.close();
    }
  },
};

/**
 * What grpc-js alone reaches here: an in-process ClawkerdService that streams pre-built 32 KiB
 * OutputChunks over the same mTLS and window, with no child process or pipe. Puts the
 * clawkerd figure in proportion on a loaded machine.
 */
async function grpcCeiling(agent: Awaited<ReturnType<typeof makeTestAgent>>, size: number): Promise<number> {
  tls.DEFAULT_MIN_VERSION = "TLSv1.3";
  const server = new Server();
  const chunk = Buffer.alloc(32 << 10, 7);
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
    const start = performance.now();
    await new Promise<void>((resolve) => {
      call.on("data", (r: clawkerd.Response) => {
        if (r.payload?.$case === "output") got += r.payload.value.data.length;
        else resolve();
      });
      call.write({ commandId: "hello", payload: { $case: "hello", value: {} } });
    });
    const seconds = (performance.now() - start) / 1000;
    call.cancel();
    if (got !== size) throw new Error(`ceiling run got ${got} of ${size}`);
    return size / (1 << 20) / seconds;
  } finally {
    client.close();
    server.forceShutdown();
  }
}

export default bench;
