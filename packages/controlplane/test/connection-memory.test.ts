// A flood of short mTLS connections leaves nothing behind in the real daemon (issue 15, threat
// model: floods). Each connection does what a CLI invocation does: a TLS 1.3 handshake with its
// client certificate, one authorized ListAgents, close. After each stage the daemon's memory
// relief collects all garbage (the closed sockets' native TLS state goes with their JS objects)
// and logs its RSS; what stays after that is retained. Node 24.21.0's runtime (OpenSSL 3.5.8) kept
// every client certificate a TLS server had parsed (~4.5 KB a connection in glibc's own in-use
// count, bench/experiments/gcmem), so RSS grew without bound with the connections; the runtime
// the project pins must not.
import assert from "node:assert/strict";
import { test } from "node:test";
import { dial } from "@clawker/adminclient";
import { bearerMetadata, startControlPlane } from "../../../test/harness/controlplane.js";
import { rssMiB } from "../../../test/harness/proc-status.js";
import { waitFor } from "../../../test/harness/wait-for.js";

/** Connections before the first reading: the daemon's pools, JIT and arenas start to fill. */
const WARM_CONNECTIONS = 2000;
/**
 * Connections in each of the two measured stages. On 24.22.3 RSS after relief rose ~12 MiB over
 * the first (arenas still filling) and stayed within 1 MiB over the second; on 24.21.0 it rose
 * 24-28 MiB over every stage of 6,000 (130, 159, 186, 210 MiB).
 */
const CONNECTIONS = 5000;
const PARALLEL = 8;
/**
 * Growth allowed over the smaller of the two stages: a per-connection leak grows both (~22 MiB at
 * 4.5 KB each), while the allocator's slack is taken by the first, so one odd reading fails
 * neither way.
 */
const LIMIT_MIB = 10;
/** How long after the relief RSS is read. */
const SETTLE_MS = 1000;

void test("a flood of closed mTLS connections leaves no memory behind in the daemon", async (t) => {
  // Relief after a short quiet stretch and for any growth (margin 0), so each stage gets one.
  const cp = await startControlPlane({
    config: { agents: { drainToZero: false }, memoryRelief: { idleMs: 500, marginMiB: 0 } },
  });
  t.after(() => cp.close());
  const reliefs = () => cp.logs.filter((l) => l["event"] === "memory_relief");
  await waitFor(() => reliefs()[0], { timeoutMs: 30_000, what: "the start-up relief" });

  const metadata = await bearerMetadata(cp);
  const tls = { ca: cp.trust!.ca.certPem, cert: cp.trust!.cli.certPem, key: cp.trust!.cli.keyPem };
  const oneConnection = async (): Promise<void> => {
    const client = dial({ target: `127.0.0.1:${cp.ports.admin}`, tls });
    try {
      await new Promise<void>((resolve, reject) =>
        client.listAgents({}, metadata, (err) => (err === null ? resolve() : reject(err))),
      );
    } finally {
      client.close();
    }
  };
  /** Makes `count` connections, then returns the daemon's RSS after the next relief (MiB). */
  const stage = async (count: number): Promise<number> => {
    let next = 0;
    await Promise.all(
      Array.from({ length: PARALLEL }, async () => {
        while (next < count) {
          next++;
          await oneConnection();
        }
      }),
    );
    const end = Date.now();
    // The first relief that began after the stage's last connection closed.
    await waitFor(() => reliefs().find((l) => Date.parse(String(l["time"])) - (l["gcMs"] as number) >= end), {
      timeoutMs: 30_000,
      what: "the relief after a stage",
    });
    // Native state goes in the collection's weak callbacks, which run as tasks after it: read
    // RSS once those have run, not the relief's own reading taken right after the collection.
    await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
    return Math.round(rssMiB(cp.proc.pid!) * 10) / 10;
  };

  const readings = [await stage(WARM_CONNECTIONS), await stage(CONNECTIONS), await stage(CONNECTIONS)];
  t.diagnostic(
    `node ${process.version}; RSS after relief: ${readings.join(", ")} MiB after ${WARM_CONNECTIONS} connections, then ${CONNECTIONS} more twice`,
  );
  const growth = Math.min(readings[1]! - readings[0]!, readings[2]! - readings[1]!);
  assert.ok(
    growth < LIMIT_MIB,
    `every ${CONNECTIONS} closed connections left at least ${growth.toFixed(1)} MiB behind (${readings.join(" -> ")} MiB)`,
  );
});
