// Memory relief in the real daemon (issue 14 §3): a burst of authorized calls 64 in flight over
// real mTLS with a real token grows its heap; once it is quiet the daemon gives the memory back
// (VmRSS from /proc) and logs memory_relief, and never collects while the burst runs. Windows
// are short through the config; the soak benchmark (bench/soak.bench.ts) has the figures.
import assert from "node:assert/strict";
import { test } from "node:test";
import { dial } from "@clawker/adminclient";
import { bearerMetadata, startControlPlane } from "../../../test/harness/controlplane.js";
import { rssMiB } from "../../../test/harness/proc-status.js";
import { waitFor } from "../../../test/harness/wait-for.js";

const CALLS = 4000;
const IDLE_MS = 2000;
/** The limit for RSS after a burst. */
const LIMIT_MIB = 150;

void test("after a burst the daemon gives its memory back within the window, never during the burst", async (t) => {
  const cp = await startControlPlane({
    config: { agents: { drainToZero: false }, memoryRelief: { idleMs: IDLE_MS, marginMiB: 16 } },
  });
  t.after(() => cp.close());
  const pid = cp.proc.pid!;
  const reliefs = () => cp.logs.filter((l) => l["event"] === "memory_relief");

  // Start-up counts as load: its garbage goes back once the daemon is first quiet.
  const startup = await waitFor(() => reliefs()[0], { timeoutMs: 30_000, what: "the start-up relief" });
  assert.ok((startup["rssAfterMiB"] as number) <= (startup["rssBeforeMiB"] as number));
  const floor = rssMiB(pid);

  const metadata = await bearerMetadata(cp);
  const client = dial({
    target: `127.0.0.1:${cp.ports.admin}`,
    tls: { ca: cp.trust!.ca.certPem, cert: cp.trust!.cli.certPem, key: cp.trust!.cli.keyPem },
  });
  t.after(() => client.close());
  const listAgents = () =>
    new Promise<void>((resolve, reject) =>
      client.listAgents({}, metadata, (err) => (err === null ? resolve() : reject(err))),
    );

  // The burst: 64 callers share CALLS calls; RSS is watched while it runs.
  let peak = floor;
  const watch = setInterval(() => (peak = Math.max(peak, rssMiB(pid))), 50);
  const burstStart = Date.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: 64 }, async () => {
      while (next < CALLS) {
        next++;
        await listAgents();
      }
    }),
  );
  const burstEnd = Date.now();
  clearInterval(watch);
  peak = Math.max(peak, rssMiB(pid));
  assert.ok(
    peak - floor >= 24,
    `the burst grew RSS by ${(peak - floor).toFixed(1)} MiB only: it proves nothing`,
  );

  // Quiet: the relief comes after IDLE_MS and RSS falls under the limit and by half the growth.
  await waitFor(() => (rssMiB(pid) < Math.min(LIMIT_MIB, floor + (peak - floor) / 2) ? true : undefined), {
    timeoutMs: 30_000,
    intervalMs: 100,
    what: `RSS back from ${peak.toFixed(1)} MiB (floor ${floor.toFixed(1)})`,
  });
  const backMs = Date.now() - burstEnd;
  const relief = await waitFor(() => reliefs().find((l) => Date.parse(String(l["time"])) >= burstEnd), {
    timeoutMs: 5_000,
    what: "the memory_relief line for the burst",
  });
  assert.ok((relief["quietMs"] as number) >= IDLE_MS, `it waited ${String(relief["quietMs"])} ms of quiet`);
  assert.ok(
    (relief["rssBeforeMiB"] as number) - (relief["rssAfterMiB"] as number) >= 16,
    `logged ${String(relief["rssBeforeMiB"])} -> ${String(relief["rssAfterMiB"])} MiB`,
  );
  assert.equal(typeof relief["gcMs"], "number");
  for (const l of reliefs()) {
    // A collection ends when its line is written; it began gcMs before.
    const end = Date.parse(String(l["time"]));
    const start = end - (l["gcMs"] as number);
    assert.ok(
      end < burstStart || start > burstEnd,
      `a collection ran during the burst: ${JSON.stringify(l)}`,
    );
  }
  t.diagnostic(
    `floor ${floor.toFixed(1)} MiB, peak ${peak.toFixed(1)} MiB, back under the line ${backMs} ms after the burst; ` +
      `gc ${String(relief["gcMs"])} ms`,
  );
});
