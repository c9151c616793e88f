// The bare grpc-js echo server as its own process (the same topology as the daemon): mTLS 1.3 on
// 127.0.0.1:0, PEM material from env, prints `{"port":N}` once serving, stops on SIGTERM.
import tls from "node:tls";
import * as grpc from "@grpc/grpc-js";
import { ECHO_SERVICE } from "./echo-service.js";

tls.DEFAULT_MIN_VERSION = "TLSv1.3";
const pem = (name: string): Buffer => Buffer.from(process.env[name] ?? "", "utf8");
// Channelz off, as on every daemon listener (grpc-listener.ts): neither side serves it, and with it
// on grpc-js takes its channelz stream handler, bookkeeping the daemon does not pay per call.
const server = new grpc.Server({ "grpc.enable_channelz": 0 });
server.addService(ECHO_SERVICE, {
  Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) =>
    cb(null, call.request),
});
const creds = grpc.ServerCredentials.createSsl(
  pem("ECHO_CA"),
  [{ private_key: pem("ECHO_KEY"), cert_chain: pem("ECHO_CERT") }],
  true,
);
server.bindAsync("127.0.0.1:0", creds, (err, port) => {
  if (err !== null) throw err;
  process.stdout.write(JSON.stringify({ port }) + "\n");
});
process.once("SIGTERM", () => server.tryShutdown(() => process.exit(0)));
