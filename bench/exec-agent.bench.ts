// ExecAgent figures through the whole path the `clawker exec` command takes: AdminClient (real
// token from the embedded auth server of a harness clawker-cp) -> admin listener (recovery, auth
// interceptor with cached HTTPS introspection, scope map) -> ExecAgent handler -> Dialer's Session
// -> the real clawkerd process, all over mTLS on loopback. Round trip of `true`, and the output
// throughput of `head -c 100M /dev/zero` read by the client, and read from the Dialer alone and
// beside a command whose reader stopped.
import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import tls from "node:tls";
import { AdminClient, TokenSource, cliTls, dial, openAdminClient } from "@clawker/adminclient";
import { Overseer } from "@clawker/overseer";
import { LABELS, type admin, type clawkerd } from "@clawker/proto";
import pino from "pino";
import { ContainerAddressIndex } from "../packages/controlplane/src/agents/address-index.js";
import { Dialer } from "../packages/controlplane/src/agents/dialer.js";
import { thumbprintOf } from "../packages/controlplane/src/agents/identity-gate.js";
import { Registry } from "../packages/controlplane/src/agents/registry.js";
import {
  AuthInterceptor,
  CachingIntrospector,
  HttpIntrospector,
  recoveryInterceptor,
} from "../packages/controlplane/src/auth/index.js";
import { adminService } from "../packages/controlplane/src/server/admin-service.js";
import { execAgentHandler } from "../packages/controlplane/src/server/exec-agent.js";
import { GrpcListener } from "../packages/controlplane/src/server/grpc-listener.js";
import { SosBoard } from "../packages/controlplane/src/server/sos-board.js";
import { makeTestAgent } from "../packages/clawkerd/test/fixtures/bootstrap.js";
import { spawnClawkerd } from "../packages/clawkerd/test/fixtures/clawkerd-process.js";
import { waitBlockedOnOutput } from "../packages/clawkerd/test/fixtures/processes.js";
import { startControlPlane } from "../test/harness/controlplane.js";
import { mintTestTrust } from "../test/harness/trust.js";
import { waitFor } from "../test/harness/wait-for.js";
import { type Benchmark, type Figure, repeat, summarise } from "./lib.js";

const ROUND_TRIPS = 300;
const OUTPUT_MIB = 100;

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

/** Runs one request to its end; returns the output bytes, or throws unless it ended with Done 0. */
async function run(client: AdminClient, argv: string[]): Promise<number> {
  let bytes = 0;
  let last: clawkerd.Response | undefined;
  for await (const r of client.execAgent(request(argv))) {
    last = r;
    if (r.payload?.$case === "output") bytes += r.payload.value.data.length;
  }
  if (last?.payload?.$case !== "done" || last.payload.value.finalExitCode !== 0) {
    throw new Error(`${argv.join(" ")} did not end with Done 0: ${JSON.stringify(last?.payload)}`);
  }
  return bytes;
}

const bench: Benchmark = {
  name: "exec-agent",
  async run(ctx): Promise<Figure[]> {
    tls.DEFAULT_MIN_VERSION = "TLSv1.3";
    const log = pino({ level: "silent" });
    const undo: Array<() => unknown> = [];
    try {
      const trust = await mintTestTrust();
      undo.push(() => trust.close());
      const cp = await startControlPlane({ trustDir: trust.trustDir });
      undo.push(() => cp.close());
      const tmp = mkdtempSync(join(tmpdir(), "exec-agent-bench-"));
      undo.push(() => rmSync(tmp, { recursive: true, force: true }));
      const registry = new Registry(join(tmp, "registry.db"));
      undo.push(() => registry.close());
      const overseer = new Overseer();
      undo.push(() => overseer.close());

      const agent = await makeTestAgent({ trust });
      undo.push(() => agent.close());
      const proc = spawnClawkerd(agent);
      undo.push(() => proc.kill());
      await proc.waitListening();
      const certThumbprint = thumbprintOf(new X509Certificate(agent.leaf.certPem).raw);
      registry.register(
        { containerId: agent.containerId, agentName: "dev", project: "proj", certThumbprint },
        1,
      );

      const index = new ContainerAddressIndex({ inspect: () => Promise.resolve(undefined), log });
      const dialer = new Dialer({
        index,
        registry,
        agents: overseer.agents,
        commands: overseer.commands,
        tls: {
          ca: Buffer.from(trust.set.ca.certPem),
          cert: Buffer.from(trust.set.controlPlaneClient.certPem),
          key: Buffer.from(trust.set.controlPlaneClient.keyPem),
        },
        log,
        target: () => proc.address,
        defaultCmd: () => "sleep 600",
        plans: { init: [], boot: [] },
      });
      undo.push(() => dialer.close());
      dialer.start();
      index.put({
        id: agent.containerId,
        labels: { [LABELS.managed]: "true", [LABELS.agent]: "dev", [LABELS.project]: "proj" },
        addresses: ["127.0.0.1"],
      });

      const introspector = new HttpIntrospector({
        adminUrl: cp.authAdminUrl,
        ca: Buffer.from(trust.set.ca.certPem),
        timeoutMs: 2000,
      });
      undo.push(() => introspector.close());
      const listener = new GrpcListener({
        name: "admin",
        host: "127.0.0.1",
        port: 0,
        tls: {
          ca: Buffer.from(trust.set.ca.certPem),
          cert: Buffer.from(trust.set.controlPlaneServer.certPem),
          key: Buffer.from(trust.set.controlPlaneServer.keyPem),
        },
        services: [
          adminService({
            agents: registry,
            sos: new SosBoard(),
            exec: execAgentHandler({ dialer, registry, log }),
          }),
        ],
        interceptors: [
          recoveryInterceptor(log),
          new AuthInterceptor({
            introspector: new CachingIntrospector(introspector, { maxTtlMs: 60_000, maxEntries: 100 }),
            log,
          }).interceptor,
        ],
        log,
      });
      undo.push(() => listener.close(0));
      await listener.start();
      const client = openAdminClient({
        trust: trust.set,
        target: `127.0.0.1:${listener.port}`,
        tokenEndpoint: cp.tokenEndpoint,
      });
      undo.push(() => client.close());
      await waitFor(() => dialer.status(agent.containerId)?.state === "ready", {
        timeoutMs: 30_000,
        what: "ready",
      });

      for (let i = 0; i < 20; i++) await run(client, ["true"]);
      const rtt: number[] = [];
      for (let i = 0; i < ROUND_TRIPS; i++) {
        const start = performance.now();
        await run(client, ["true"]);
        rtt.push(performance.now() - start);
      }
      ctx.log(`round trips: ${ROUND_TRIPS}`);

      const size = OUTPUT_MIB << 20;
      const rates = await repeat(ctx, async () => {
        const start = performance.now();
        const bytes = await run(client, ["head", "-c", String(size), "/dev/zero"]);
        const seconds = (performance.now() - start) / 1000;
        if (bytes !== size) throw new Error(`got ${bytes} of ${size} bytes`);
        return OUTPUT_MIB / seconds;
      });
      // The same through a client channel with a 4 MiB HTTP/2 receive window (grpc-js: 64 KiB).
      const wide = new AdminClient({
        client: dial({
          tls: cliTls(trust.set),
          target: `127.0.0.1:${listener.port}`,
          channelOptions: { "grpc-node.flow_control_window": 4 << 20 },
        }),
        tokens: new TokenSource({
          ca: trust.set.ca.certPem,
          signingKey: trust.set.signingKey.privateJwk,
          tokenEndpoint: cp.tokenEndpoint,
        }),
      });
      undo.push(() => wide.close());
      const wideRates = await repeat(ctx, async () => {
        const start = performance.now();
        const bytes = await run(wide, ["head", "-c", String(size), "/dev/zero"]);
        if (bytes !== size) throw new Error(`got ${bytes} of ${size} bytes`);
        return OUTPUT_MIB / ((performance.now() - start) / 1000);
      });
      // Reference: the same command read straight from the Dialer's Session (no admin hop).
      const direct = await repeat(ctx, async () => {
        const start = performance.now();
        let bytes = 0;
        for await (const r of dialer.exec(
          agent.containerId,
          request(["head", "-c", String(size), "/dev/zero"]).command!,
        )) {
          if (r.payload?.$case === "output") bytes += r.payload.value.data.length;
        }
        if (bytes !== size) throw new Error(`direct: got ${bytes} of ${size} bytes`);
        return OUTPUT_MIB / ((performance.now() - start) / 1000);
      });
      // The same beside a command whose reader stopped (held at its output window, its process
      // blocked writing): per-command flow control keeps the held one from slowing the other.
      const heldLines = 2_000_003;
      const held = dialer.exec(agent.containerId, request(["seq", "1", String(heldLines)]).command!, {
        commandId: "held",
      });
      await held.next();
      await waitBlockedOnOutput(`seq 1 ${heldLines}`);
      const beside = await repeat(ctx, async () => {
        const start = performance.now();
        let bytes = 0;
        for await (const r of dialer.exec(
          agent.containerId,
          request(["head", "-c", String(size), "/dev/zero"]).command!,
        )) {
          if (r.payload?.$case === "output") bytes += r.payload.value.data.length;
        }
        if (bytes !== size) throw new Error(`beside: got ${bytes} of ${size} bytes`);
        return OUTPUT_MIB / ((performance.now() - start) / 1000);
      });
      let heldBytes = 0;
      for await (const r of held) if (r.payload?.$case === "output") heldBytes += r.payload.value.data.length;
      ctx.log(`held command: ${heldBytes} bytes after its reader came back`);
      const sorted = [...direct].sort((a, b) => a - b);
      const alone = sorted[Math.floor(sorted.length / 2)]!;
      return [
        summarise(
          "the same 100 MiB from Dialer.exec beside a command whose reader stopped",
          "MiB/s",
          beside,
          "higher",
        ),
        summarise(
          "beside a held command / alone (median alone)",
          "%",
          beside.map((r) => (100 * r) / alone),
          "higher",
          ">= 50%",
        ),
        summarise("ExecAgent output throughput, client window 4 MiB", "MiB/s", wideRates, "higher"),
        summarise(
          "reference: the same 100 MiB read from Dialer.exec in-process (no admin hop)",
          "MiB/s",
          direct,
          "higher",
        ),
        summarise(
          "ExecAgent round trip of `true` (CLI client -> admin -> Session -> clawkerd)",
          "ms",
          rtt,
          "lower",
        ),
        summarise("ExecAgent output throughput, 100 MiB read by the admin client", "MiB/s", rates, "higher"),
      ];
    } finally {
      for (const u of undo.reverse()) await u();
    }
  },
};

export default bench;
