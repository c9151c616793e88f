// The firewall's audit log alone (issue 11 §2, Figures): how many decisions per second it takes
// to disk (serialization on the caller, batched writes, fdatasync every second, rotation at the
// default 64 MiB), the bytes per second that is, the caller's cost per event() call, and what a
// steady 100,000 events/s offered for 2 s loses with the default backlog. Real files on the data
// disk (ext4 here), a new folder per run.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { setImmediate as turn } from "node:timers/promises";
import { AuditLog } from "../packages/controlplane/src/firewall/audit/audit-log.js";
import { sampleEvent } from "../packages/controlplane/test/fixtures/firewall-event.js";
import { repeat, summarise, type Benchmark } from "./lib.js";

const BURST = 200_000;
const OFFERED_PER_S = 100_000;
const OFFERED_MS = 2_000;

interface Burst {
  readonly perS: number;
  readonly bytesPerS: number;
  /** CPU (user + system) of this process per decision: what the log costs whatever the load. */
  readonly cpuUsPerEvent: number;
}

// The hub publishes events it made anyway: the bench makes its 2,000 once, outside the timing.
const EVENTS = Array.from({ length: 2_000 }, (_, i) => sampleEvent(BigInt(i + 1)));

/** Every event offered at once (in turns of 2,000), backlog large enough to drop nothing; until fdatasynced. */
async function burst(): Promise<Burst> {
  const dir = await mkdtemp(join(tmpdir(), "audit-bench-"));
  const audit = new AuditLog({ dir: join(dir, "audit"), maxBacklog: BURST });
  await audit.start();
  try {
    const cpu = process.cpuUsage();
    const start = performance.now();
    for (let n = 0; n < BURST; n += EVENTS.length) {
      for (const e of EVENTS) audit.event(e);
      await turn();
    }
    await audit.flush();
    const s = (performance.now() - start) / 1000;
    const used = process.cpuUsage(cpu);
    const stats = audit.stats();
    if (stats.lost !== 0) throw new Error(`lost ${stats.lost} in the burst`);
    return {
      perS: BURST / s,
      bytesPerS: stats.bytesWritten / s,
      cpuUsPerEvent: (used.user + used.system) / BURST,
    };
  } finally {
    await audit.close();
    await rm(dir, { recursive: true, force: true });
  }
}

/** OFFERED_PER_S paced over OFFERED_MS with the default backlog; how many were dropped. */
async function offered(): Promise<{ dropped: number; written: number }> {
  const dir = await mkdtemp(join(tmpdir(), "audit-bench-"));
  const audit = new AuditLog({ dir: join(dir, "audit") });
  await audit.start();
  try {
    const total = (OFFERED_PER_S * OFFERED_MS) / 1000;
    const start = performance.now();
    let sent = 0;
    while (sent < total) {
      const due = Math.min(total, Math.floor(((performance.now() - start) * OFFERED_PER_S) / 1000));
      while (sent < due) audit.event(EVENTS[sent++ % EVENTS.length]!);
      await turn();
    }
    await audit.flush();
    const stats = audit.stats();
    return { dropped: stats.droppedBacklog, written: stats.written };
  } finally {
    await audit.close();
    await rm(dir, { recursive: true, force: true });
  }
}

const bench: Benchmark = {
  name: "audit-log",
  async run(ctx) {
    const bursts = await repeat(ctx, burst);
    const paced = await repeat(ctx, offered);
    ctx.log(`paced: ${paced.map((p) => `${p.dropped} dropped / ${p.written} written`).join(", ")}`);
    return [
      summarise(
        "decisions appended per second (burst, until fdatasynced)",
        "records/s",
        bursts.map((b) => b.perS),
        "higher",
        "clearly > 50,000",
      ),
      summarise(
        "bytes appended per second",
        "MB/s",
        bursts.map((b) => b.bytesPerS / 1e6),
        "higher",
      ),
      summarise(
        "CPU per decision (user + system, serialization and write)",
        "µs",
        bursts.map((b) => b.cpuUsPerEvent),
        "lower",
      ),
      summarise(
        "decisions per second one whole core would take (1 / CPU per decision)",
        "records/s",
        bursts.map((b) => 1e6 / b.cpuUsPerEvent),
        "higher",
        "clearly > 50,000",
      ),
      summarise(
        `dropped at ${OFFERED_PER_S.toLocaleString("en")}/s offered for ${OFFERED_MS / 1000} s`,
        "records",
        paced.map((p) => p.dropped),
        "lower",
        "0",
      ),
    ];
  },
};

export default bench;
