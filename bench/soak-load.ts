// The soak benchmark's load driver, run as its own process inside the private dockerd's network
// namespace (where the daemon's admin listener is): every cycle a burst of authorized unary calls
// 64 in flight, ExecAgent output and round trips in an agent, then a trickle until the cycle ends
// (none in the last cycle: the soak ends on a burst).
// One JSON line per cycle on stdout; exits 0 when the time is up, 1 on any failed call.
// Usage: soak-load.ts <params.json>, see SoakLoadParams.
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import tls from "node:tls";
import { Metadata } from "@grpc/grpc-js";
import { dial, loadTrustSet, openAdminClient, TokenSource, type AdminClient } from "@clawker/adminclient";
import type { admin } from "@clawker/proto";
import { concurrentThroughput } from "./unary-load.js";

/** What soak.bench.ts hands the driver. */
export interface SoakLoadParams {
  readonly trustDir: string;
  /** The admin listener, `127.0.0.1:<port>` inside the namespace. */
  readonly admin: string;
  readonly tokenEndpoint: string;
  /** The agent ExecAgent runs in. */
  readonly agentName: string;
  readonly project: string;
  readonly durationMs: number;
  readonly cycleMs: number;
  /** Unary calls per burst (64 in flight). */
  readonly burstCalls: number;
  /** ExecAgent output bytes per cycle. */
  readonly execBytes: number;
  /** ExecAgent round trips of `true` per cycle. */
  readonly execRoundTrips: number;
}

/** One cycle's report line. */
export interface SoakCycle {
  readonly cycle: number;
  readonly atMs: number;
  readonly unaryPerSec: number;
  readonly unaryCalls: number;
  readonly execBytes: number;
  readonly execRoundTrips: number;
  readonly trickleCalls: number;
}

const request = (p: SoakLoadParams, argv: string[]): admin.ExecAgentRequest => ({
  containerId: "",
  agentName: p.agentName,
  project: p.project,
  command: {
    stages: [{ argv, uid: 0, gid: 0, cwd: "", env: {} }],
    timeoutSeconds: 0,
    initialStdin: Buffer.alloc(0),
    printOutput: false,
    exitOnNonZero: false,
  },
});

/** Runs one ExecAgent request to its end; the output bytes, or throws unless it ended with Done 0. */
async function exec(client: AdminClient, p: SoakLoadParams, argv: string[]): Promise<number> {
  let bytes = 0;
  let last: string | undefined;
  let code: number | undefined;
  for await (const r of client.execAgent(request(p, argv))) {
    last = r.payload?.$case;
    if (r.payload?.$case === "output") bytes += r.payload.value.data.length;
    if (r.payload?.$case === "done") code = r.payload.value.finalExitCode;
  }
  if (last !== "done" || code !== 0) throw new Error(`${argv.join(" ")} ended with ${last} ${code}`);
  return bytes;
}

async function main(): Promise<void> {
  tls.DEFAULT_MIN_VERSION = "TLSv1.3";
  const p = JSON.parse(readFileSync(process.argv[2]!, "utf8")) as SoakLoadParams;
  const trust = await loadTrustSet(p.trustDir);
  const client = openAdminClient({ trust, target: p.admin, tokenEndpoint: p.tokenEndpoint });
  const tokens = new TokenSource({
    ca: trust.ca.certPem,
    signingKey: trust.signingKey.privateJwk,
    tokenEndpoint: p.tokenEndpoint,
  });
  // Like controlplane.bench.ts: the raw client with a bearer token, so the burst is the server's cost.
  const raw = dial({
    target: p.admin,
    tls: { ca: trust.ca.certPem, cert: trust.cli.certPem, key: trust.cli.keyPem },
  });
  try {
    // The daemon's Session to the agent may still be coming up: the first `true` is retried.
    for (let attempt = 1; ; attempt++) {
      try {
        await exec(client, p, ["true"]);
        break;
      } catch (err) {
        if (attempt >= 60) throw err;
        await sleep(500);
      }
    }
    const began = performance.now();
    for (let cycle = 0; performance.now() - began < p.durationMs; cycle++) {
      const cycleStart = performance.now();
      const metadata = new Metadata();
      metadata.set("authorization", `Bearer ${await tokens.token()}`);
      const listAgents = () =>
        new Promise<unknown>((resolve, reject) =>
          raw.listAgents({}, metadata, (err, res) => (err === null ? resolve(res) : reject(err))),
        );
      const size = String(p.execBytes);
      const [unaryPerSec, execBytes] = await Promise.all([
        concurrentThroughput(p.burstCalls, 64, listAgents),
        exec(client, p, ["head", "-c", size, "/dev/zero"]),
      ]);
      for (let i = 0; i < p.execRoundTrips; i++) await exec(client, p, ["true"]);
      // The rest of the cycle: one call a second, what an idle CLI or agent costs. The last cycle
      // has none: the soak ends on a burst, so what follows is the idle after a burst.
      let trickleCalls = 0;
      const isLast = cycleStart + p.cycleMs >= began + p.durationMs;
      const end = isLast ? performance.now() : cycleStart + p.cycleMs;
      while (performance.now() < end - 1000) {
        await sleep(1000);
        await listAgents();
        trickleCalls++;
      }
      await sleep(Math.max(0, end - performance.now()));
      const line: SoakCycle = {
        cycle,
        atMs: Math.round(performance.now() - began),
        unaryPerSec: Math.round(unaryPerSec),
        unaryCalls: p.burstCalls,
        execBytes,
        execRoundTrips: p.execRoundTrips,
        trickleCalls,
      };
      process.stdout.write(`${JSON.stringify(line)}\n`);
      if (isLast) break;
    }
  } finally {
    raw.close();
    await client.close();
    await tokens.close();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`soak-load: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
