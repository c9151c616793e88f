// The bare grpc-js baseline: a unary echo over mutual TLS 1.3 on loopback, no interceptors, no
// protobuf (raw bytes), the server in its own process like the daemon. Later benchmarks report
// their figures as a ratio of this one, measured in the same run.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import tls from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { mintTrustSet } from "@clawker/adminclient";
import { CLAWKERD_NODE_FLAGS } from "@clawker/proto";
import { ECHO_SERVICE } from "./echo-service.js";

/** A running echo server and a connected client; `call()` makes one unary call. */
export interface EchoPair {
  /** The echo server process (its CPU time is read from /proc). */
  readonly pid: number;
  readonly call: () => Promise<Buffer>;
  /** What the server printed on stdout besides its port line (e.g. `--trace-gc-nvp` lines), so far. */
  readonly output: () => readonly string[];
  /** One call on a connection of its own, which is then closed (the main client's is kept). */
  readonly callOnce: () => Promise<void>;
  readonly close: () => Promise<void>;
}

/** Starts the echo server process with fresh trust material and connects a client. */
export async function startEcho(
  options: {
    /** Node flags (e.g. `--trace-gc-nvp`). */
    readonly nodeArgs?: readonly string[];
    /** A command node is started under, which must exec it (the pid stays the server's). */
    readonly launcher?: readonly string[];
  } = {},
): Promise<EchoPair> {
  tls.DEFAULT_MIN_VERSION = "TLSv1.3";
  const set = await mintTrustSet();
  const [file, ...launcherArgs] = [...(options.launcher ?? []), process.execPath];
  const server = spawn(
    file,
    [
      ...launcherArgs,
      // BENCH_ECHO_NODE_ARGS: node flags for the echo server alone (profiling beside the daemon).
      ...(process.env["BENCH_ECHO_NODE_ARGS"]?.split(" ").filter((a) => a !== "") ?? []),
      ...(options.nodeArgs ?? []),
      "--import",
      import.meta.resolve("tsx"),
      new URL("./echo-server.ts", import.meta.url).pathname,
    ],
    {
      env: {
        ...process.env,
        ECHO_CA: set.ca.certPem,
        ECHO_CERT: set.controlPlaneServer.certPem,
        ECHO_KEY: set.controlPlaneServer.keyPem,
      },
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  // The port line, and every other line kept: with GC tracing on, a collection may print first.
  const output: string[] = [];
  const port = await new Promise<number>((resolve, reject) => {
    server.once("exit", (code) => reject(new Error(`echo server exited ${code} before serving`)));
    createInterface({ input: server.stdout }).on("line", (l: string) => {
      if (l.startsWith('{"port":')) resolve((JSON.parse(l) as { port: number }).port);
      else output.push(l);
    });
  });
  const Client = grpc.makeGenericClientConstructor(ECHO_SERVICE, "Echo");
  const connect = (): grpc.Client =>
    new Client(
      `127.0.0.1:${port}`,
      grpc.credentials.createSsl(
        Buffer.from(set.ca.certPem),
        Buffer.from(set.cli.keyPem),
        Buffer.from(set.cli.certPem),
      ),
      { "grpc.ssl_target_name_override": "localhost" },
    );
  const payload = Buffer.from("ping");
  const callOn = (client: grpc.Client): Promise<Buffer> =>
    new Promise<Buffer>((resolve, reject) =>
      (client as unknown as { Echo(req: Buffer, cb: grpc.requestCallback<Buffer>): void }).Echo(
        payload,
        (err, res) => (err !== null || res === undefined ? reject(err ?? new Error("empty")) : resolve(res)),
      ),
    );
  const client = connect();
  return {
    pid: server.pid!,
    call: () => callOn(client),
    output: () => output,
    callOnce: async () => {
      const once = connect();
      try {
        await callOn(once);
      } finally {
        once.close();
      }
    },
    close: async () => {
      client.close();
      server.kill("SIGTERM");
      if (server.exitCode === null) await once(server, "exit");
    },
  };
}

/** A running output-server.ts process (grpc-js alone streaming a child's output). */
export interface OutputServer {
  /** The server process (its CPU time, and its children's, is read from /proc). */
  readonly pid: number;
  readonly address: string;
  readonly close: () => Promise<void>;
}

/** Starts output-server.ts with the given server leaf; clients must present a leaf of `caPem`. */
export async function startOutputServer(
  pem: {
    readonly caPem: string;
    readonly certPem: string;
    readonly keyPem: string;
  },
  /** clawkerd's heap settings (its node flags, and its heap-tuning.ts once serving), or node's defaults. */
  heap: "clawkerd" | "defaults" = "defaults",
): Promise<OutputServer> {
  const server = spawn(
    process.execPath,
    [
      ...(heap === "clawkerd" ? CLAWKERD_NODE_FLAGS : []),
      "--import",
      import.meta.resolve("tsx"),
      "--conditions=source",
      new URL("./output-server.ts", import.meta.url).pathname,
    ],
    {
      env: {
        ...process.env,
        OUTPUT_CA: pem.caPem,
        OUTPUT_CERT: pem.certPem,
        OUTPUT_KEY: pem.keyPem,
        OUTPUT_HEAP: heap,
      },
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  const [line] = (await once(createInterface({ input: server.stdout }), "line")) as [string];
  const { port } = JSON.parse(line) as { port: number };
  return {
    pid: server.pid!,
    address: `127.0.0.1:${port}`,
    close: async () => {
      server.kill("SIGTERM");
      if (server.exitCode === null) await once(server, "exit");
    },
  };
}
