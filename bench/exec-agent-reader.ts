// The `clawker exec` side of the ExecAgent benchmark as its own process, as the CLI is: an
// AdminClient (real token) on the admin Unix socket (the CLI's default when the control plane is
// on the same host), on the admin TCP listener over mTLS with the CLI's default channel (its 4 MiB
// HTTP/2 receive window), and there with grpc-js's own 64 KiB window, the CLI's before issue 15's
// relay work. Reads JSON requests `{argv, via}` on stdin, one per line, runs each to its end and
// answers `{bytes, seconds, cpuMs}` (this process's CPU for that call) per line. Trust material
// and addresses come from env (EXEC_READER_*).
import { createInterface } from "node:readline";
import { performance } from "node:perf_hooks";
import tls from "node:tls";
import {
  AdminClient,
  TokenSource,
  cliTls,
  dial,
  openAdminClient,
  openAdminSocketClient,
  type TrustSet,
} from "@clawker/adminclient";
import type { admin } from "@clawker/proto";

tls.DEFAULT_MIN_VERSION = "TLSv1.3";
const trust = JSON.parse(process.env["EXEC_READER_TRUST"] ?? "") as TrustSet;
const target = process.env["EXEC_READER_TARGET"] ?? "";
const tokenEndpoint = process.env["EXEC_READER_TOKEN_ENDPOINT"] ?? "";
const socket = openAdminSocketClient({
  socketPath: process.env["EXEC_READER_SOCKET"] ?? "",
  credentials: { ca: trust.ca.certPem, signingKey: trust.signingKey.privateJwk },
  tokenEndpoint,
});
const plain = openAdminClient({ trust, target, tokenEndpoint });
const narrow = new AdminClient({
  client: dial({
    tls: cliTls(trust),
    target,
    channelOptions: { "grpc-node.flow_control_window": 65_535 },
  }),
  tokens: new TokenSource({ ca: trust.ca.certPem, signingKey: trust.signingKey.privateJwk, tokenEndpoint }),
});

const request = (argv: string[]): admin.ExecAgentRequest => ({
  containerId: "",
  agentName: "dev",
  project: "proj",
  command: {
    stages: [{ argv, uid: 0, gid: 0, cwd: "", env: {} }],
    timeoutSeconds: 0,
    initialStdin: Buffer.alloc(0),
    printOutput: false,
    exitOnNonZero: false,
  },
});

for await (const line of createInterface({ input: process.stdin })) {
  const { argv, via } = JSON.parse(line) as { argv: string[]; via: "socket" | "tcp" | "tcp-narrow" };
  const client = via === "socket" ? socket : via === "tcp" ? plain : narrow;
  let bytes = 0;
  let last: string | undefined;
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  for await (const r of client.execAgent(request(argv))) {
    last = r.payload?.$case;
    if (r.payload?.$case === "output") bytes += r.payload.value.data.length;
  }
  const seconds = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpu0);
  process.stdout.write(
    JSON.stringify({ bytes, seconds, cpuMs: (cpu.user + cpu.system) / 1000, last }) + "\n",
  );
}
await socket.close();
await plain.close();
await narrow.close();
