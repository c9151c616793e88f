// grpc-js alone streaming a command's output, as its own process like clawkerd: ClawkerdService
// over mutual TLS 1.3 with the agent leaf on 127.0.0.1:0, clawkerd's own one-copy OutputChunk
// serializer (so the codec is no part of the difference), no interceptor.
// Hello is answered with an empty HelloAck; a ShellCommand spawns its first stage and sends what
// is read from its stdout pipe as OutputChunks of at most clawkerd's size (64 KiB), pausing the
// pipe while write() reports a full stream until 'drain', then Done. Nothing else of clawkerd's
// Session (no output buffer, watchers, credit, stderr): the floor clawkerd's figure is held to.
// PEM material from env; OUTPUT_HEAP=clawkerd: clawkerd's heap-tuning.ts once serving; prints
// `{"port":N}` once serving; stops on SIGTERM.
import { spawn } from "node:child_process";
import tls from "node:tls";
import * as grpc from "@grpc/grpc-js";
import type { clawkerd } from "@clawker/proto";
import { tuneHeap } from "../packages/clawkerd/src/heap-tuning.js";
import { DEFAULT_MAX_CHUNK_BYTES as CHUNK } from "../packages/clawkerd/src/output-buffer.js";
import { ClawkerdServiceFast } from "../packages/clawkerd/src/response-codec.js";

tls.DEFAULT_MIN_VERSION = "TLSv1.3";
const pem = (name: string): Buffer => Buffer.from(process.env[name] ?? "", "utf8");
const server = new grpc.Server();
server.addService(ClawkerdServiceFast, {
  session: (call: grpc.ServerDuplexStream<clawkerd.Command, clawkerd.Response>) => {
    call.on("error", () => undefined);
    call.on("data", (cmd: clawkerd.Command) => {
      const p = cmd.payload;
      const commandId = cmd.commandId;
      if (p?.$case === "hello") {
        call.write({
          commandId,
          payload: { $case: "helloAck", value: { initialized: false, cmdRunning: false } },
        });
        return;
      }
      if (p?.$case !== "shell") return;
      const [program, ...args] = p.value.stages[0]!.argv;
      const child = spawn(program!, args, { stdio: ["ignore", "pipe", "ignore"] });
      const out = child.stdout;
      call.write({ commandId, payload: { $case: "started", value: {} } });
      out.on("data", (data: Buffer) => {
        let full = false;
        for (let at = 0; at < data.length; at += CHUNK) {
          const value = { data: data.subarray(at, Math.min(at + CHUNK, data.length)) };
          full = !call.write({ commandId, payload: { $case: "output", value } }) || full;
        }
        if (full) {
          out.pause();
          call.once("drain", () => out.resume());
        }
      });
      child.once("close", (code) => {
        call.write({ commandId, payload: { $case: "done", value: { finalExitCode: code ?? -1 } } });
      });
    });
  },
});
const creds = grpc.ServerCredentials.createSsl(
  pem("OUTPUT_CA"),
  [{ private_key: pem("OUTPUT_KEY"), cert_chain: pem("OUTPUT_CERT") }],
  true,
);
server.bindAsync("127.0.0.1:0", creds, (err, port) => {
  if (err !== null) throw err;
  // As clawkerd once it listens (its node flags are the launcher's, grpc-baseline.ts).
  if (process.env["OUTPUT_HEAP"] === "clawkerd") tuneHeap();
  process.stdout.write(JSON.stringify({ port }) + "\n");
});
process.once("SIGTERM", () => server.tryShutdown(() => process.exit(0)));
