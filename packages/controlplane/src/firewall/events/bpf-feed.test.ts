// BpfEventFeed's reading of the kernel's event drops into the hub, with a real EventHub. The
// manager is replaced by the feed's own two functions (subscribe, kernelDrops): the real manager's
// counters need root, a kernel and a flood past its ring buffer; here each read's rows are scripted.
import assert from "node:assert/strict";
import { test } from "node:test";
import { waitFor } from "@clawker/test-support";
import { pino } from "pino";
import type { EventStream } from "../../ebpf/client.js";
import { BpfEventFeed } from "./bpf-feed.js";
import { EventHub } from "./event-hub.js";

type Rows = { cgroupId: string; eventsDropped: number }[];

/** A stream that yields nothing and ends when aborted (the feed's live subscription). */
function idleStream(signal: AbortSignal): Promise<EventStream> {
  const ended = new Promise<IteratorResult<never>>((resolve) =>
    signal.addEventListener("abort", () => resolve({ done: true, value: undefined }), { once: true }),
  );
  const stream = { [Symbol.asyncIterator]: () => ({ next: () => ended }) };
  return Promise.resolve(stream as unknown as EventStream);
}

test("the kernel's drops count as the bpf source's: the first read is the baseline, a collected cgroup starts afresh", async () => {
  const hub = new EventHub({ log: pino({ level: "silent" }) });
  const reads: Rows[] = [
    [
      { cgroupId: "1", eventsDropped: 5 },
      { cgroupId: "2", eventsDropped: 2 },
    ],
    [
      { cgroupId: "1", eventsDropped: 8 },
      { cgroupId: "2", eventsDropped: 2 },
      { cgroupId: "3", eventsDropped: 4 },
    ],
    [{ cgroupId: "1", eventsDropped: 1 }], // 1 collected and counting again; 2 and 3 gone
    [{ cgroupId: "1", eventsDropped: 1 }],
  ];
  const feed = new BpfEventFeed({
    subscribe: idleStream,
    kernelDrops: () => Promise.resolve(reads.shift() ?? []),
    hub,
    log: pino({ level: "silent" }),
  });
  assert.deepEqual(
    [
      await feed.countKernelDrops(),
      await feed.countKernelDrops(),
      await feed.countKernelDrops(),
      await feed.countKernelDrops(),
    ],
    [0, 7, 1, 0],
  );
  const bpf = hub.stats().sources.bpf;
  assert.deepEqual(
    [bpf.droppedUpstream, bpf.published, bpf.delivered],
    [8, 8, 0],
    "published = delivered + dropped",
  );
});

test("the feed reads the counters while it runs, logs an unreadable table once, and close() leaves no timer", async () => {
  const hub = new EventHub({ log: pino({ level: "silent" }) });
  const lines: string[] = [];
  let n = 0;
  let failing = false;
  const feed = new BpfEventFeed({
    subscribe: idleStream,
    kernelDrops: () => {
      if (failing) return Promise.reject(new Error("manager restarting"));
      n++;
      return Promise.resolve([{ cgroupId: "7", eventsDropped: n * 10 }]);
    },
    dropPollMs: 5,
    hub,
    log: pino({ level: "warn" }, { write: (line: string) => void lines.push(line) }),
  });
  const stop = new AbortController();
  feed.start(stop.signal);
  await waitFor(() => hub.stats().sources.bpf.droppedUpstream >= 20, { what: "two reads past the baseline" });
  failing = true;
  const before = n;
  await waitFor(() => lines.some((l) => l.includes("bpf_drops_unreadable")), { what: "a failed read" });
  const failedAt = hub.stats().sources.bpf.droppedUpstream;
  failing = false;
  await waitFor(() => n > before + 1, { what: "reads again once the manager answers" });
  assert.ok(hub.stats().sources.bpf.droppedUpstream > failedAt, "counted on after the failure");
  await feed.close();
  const warned = lines.filter((l) => l.includes('"event":"bpf_drops_unreadable"'));
  assert.equal(warned.length, 1, "one warning for the failing stretch");
  assert.equal(hub.stats().sources.bpf.droppedUpstream % 10, 0);
  // close() resolved: the poll loop and the subscription have ended (node:test reports a leaked
  // timer as a test that does not end).
  const after = n;
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.equal(n, after, "no read after close");
});
