// The abusive side of bench/flood.bench.ts, each mode its own process so it competes for the CPU
// like a real attacker would, not inside the measuring process:
//   hold  <port> <connections> <streams>: HTTP/2 connections with the CLI's leaf, each keeping
//         `streams` GetSystemTime calls open without ever sending the request (a slowloris over
//         HTTP/2, no token needed); a stream the server ends is replaced at once. Prints
//         {"held":N} once every stream is open, then {"held":N,"replaced":R} each second.
//   junk  <port> <connections> <concurrency>: ListAgents with a fresh random bearer token per call
//         on each of `connections` connections, `concurrency` in flight on each, as fast as the
//         server answers. Prints {"calls":N,"unexpected":U} each second.
// PEM material comes from the env (FLOOD_CA, FLOOD_CERT, FLOOD_KEY). Stops on SIGTERM.
import { randomBytes } from "node:crypto";
import http2 from "node:http2";
import tls from "node:tls";
import { Metadata, credentials, status, type ServiceError } from "@grpc/grpc-js";
import { admin } from "@clawker/proto";

tls.DEFAULT_MIN_VERSION = "TLSv1.3";
const [mode, portText, a, b] = process.argv.slice(2);
const port = Number(portText);
const pem = {
  ca: process.env["FLOOD_CA"] ?? "",
  cert: process.env["FLOOD_CERT"] ?? "",
  key: process.env["FLOOD_KEY"] ?? "",
};
const report = (fields: Record<string, number>): boolean =>
  process.stdout.write(`${JSON.stringify(fields)}\n`);
let stopping = false;
process.once("SIGTERM", () => {
  stopping = true;
  setTimeout(() => process.exit(0), 100);
});

if (mode === "hold") {
  const connections = Number(a);
  const streams = Number(b);
  let held = 0;
  let replaced = 0;
  let announced = false;
  const open = (session: http2.ClientHttp2Session): void => {
    if (stopping || session.destroyed) return;
    const req = session.request({
      ":method": "POST",
      ":path": admin.AdminServiceService.getSystemTime.path,
      "content-type": "application/grpc",
      te: "trailers",
    });
    // request() on a connected session sends HEADERS at once; the stream counts as held from here.
    let counted = true;
    held++;
    if (!announced && held === connections * streams) {
      announced = true;
      report({ held });
    }
    req.on("error", () => {});
    req.resume();
    const replace = (): void => {
      if (counted) held--;
      counted = false;
      replaced++;
      req.close();
      setImmediate(() => open(session));
    };
    req.once("response", (h) => {
      if (h["grpc-status"] !== undefined) replace();
    });
    req.once("trailers", replace);
    req.once("close", () => {
      if (counted) replace();
    });
  };
  for (let i = 0; i < connections; i++) {
    const session = http2.connect(`https://127.0.0.1:${port}`, { ...pem, servername: "localhost" });
    session.on("error", () => {});
    session.once("remoteSettings", () => {
      for (let s = 0; s < streams; s++) open(session);
    });
  }
  setInterval(() => report({ held, replaced }), 1_000);
} else if (mode === "junk") {
  const connections = Number(a);
  const concurrency = Number(b);
  let calls = 0;
  let unexpected = 0;
  const loop = async (client: admin.AdminServiceClient): Promise<void> => {
    while (!stopping) {
      await new Promise<void>((resolve) => {
        const md = new Metadata();
        md.set("authorization", `Bearer ${randomBytes(32).toString("base64url")}`);
        client.listAgents({}, md, (err: ServiceError | null) => {
          calls++;
          if (err?.code !== status.UNAUTHENTICATED) unexpected++;
          resolve();
        });
      });
    }
  };
  for (let c = 0; c < connections; c++) {
    // Its own connection each: grpc-js would otherwise share one subchannel between the clients.
    const client = new admin.AdminServiceClient(
      `127.0.0.1:${port}`,
      credentials.createSsl(Buffer.from(pem.ca), Buffer.from(pem.key), Buffer.from(pem.cert)),
      { "grpc.ssl_target_name_override": "localhost", "grpc.use_local_subchannel_pool": 1 },
    );
    for (let i = 0; i < concurrency; i++) void loop(client);
  }
  setInterval(() => report({ calls, unexpected }), 1_000);
} else {
  process.stderr.write(`flood-load: unknown mode ${mode}\n`);
  process.exit(2);
}
