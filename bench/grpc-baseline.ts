// The bare grpc-js baseline: a unary echo over mutual TLS 1.3 on loopback, no interceptors, no
// protobuf (raw bytes). Later benchmarks report their figures as a ratio of this one.
import tls from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { mintTrustSet } from "@clawker/adminclient";

const passthrough = {
  path: "/bench.Echo/Echo",
  requestStream: false,
  responseStream: false,
  requestSerialize: (b: Buffer) => b,
  requestDeserialize: (b: Buffer) => b,
  responseSerialize: (b: Buffer) => b,
  responseDeserialize: (b: Buffer) => b,
} as const;

/** A running echo server and a connected client; `call()` makes one unary call. */
export interface EchoPair {
  readonly call: () => Promise<Buffer>;
  readonly close: () => Promise<void>;
}

/** Starts the echo server on 127.0.0.1:0 with fresh trust material and connects a client. */
export async function startEcho(): Promise<EchoPair> {
  tls.DEFAULT_MIN_VERSION = "TLSv1.3";
  const set = await mintTrustSet();
  const server = new grpc.Server();
  server.addService(
    { Echo: passthrough },
    {
      Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
        cb(null, call.request),
    },
  );
  const creds = grpc.ServerCredentials.createSsl(
    Buffer.from(set.ca.certPem),
    [
      {
        private_key: Buffer.from(set.controlPlaneServer.keyPem),
        cert_chain: Buffer.from(set.controlPlaneServer.certPem),
      },
    ],
    true,
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", creds, (err, p) => (err ? reject(err) : resolve(p))),
  );
  const Client = grpc.makeGenericClientConstructor({ Echo: passthrough }, "Echo");
  const client = new Client(
    `127.0.0.1:${port}`,
    grpc.credentials.createSsl(
      Buffer.from(set.ca.certPem),
      Buffer.from(set.cli.keyPem),
      Buffer.from(set.cli.certPem),
    ),
    { "grpc.ssl_target_name_override": "localhost" },
  );
  const payload = Buffer.from("ping");
  const echo = client as unknown as { Echo(req: Buffer, cb: grpc.requestCallback<Buffer>): void };
  return {
    call: () =>
      new Promise<Buffer>((resolve, reject) =>
        echo.Echo(payload, (err, res) =>
          err !== null || res === undefined ? reject(err ?? new Error("empty")) : resolve(res),
        ),
      ),
    close: async () => {
      client.close();
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    },
  };
}
