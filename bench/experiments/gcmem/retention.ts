// EXPERIMENT (issue 15, not a bench `npm run bench` runs): does the daemon retain memory per call
// or per connection? Starts the built daemon the way controlplane-authz.bench.ts does (relief held
// off) with its inspector on a loopback port of this run, drives authorized ListAgents in stages
// (and connections that make one call and close), and after each stage reads the daemon's own
// process.memoryUsage() and V8 heap spaces, before and after a full collection, through the
// inspector (Runtime.evaluate). With SNAPSHOT=1 it also diffs heap snapshots' object counts by
// constructor between the stages. Prints one JSON line per stage.
// Run: `npx tsx --conditions=source bench/experiments/gcmem/retention.ts` (after `npx tsc -b`).
import { execFileSync } from "node:child_process";
import { dial } from "@clawker/adminclient";
import { bearerMetadata, startControlPlane } from "../../../test/harness/controlplane.js";
import { rssMiB } from "../../../test/harness/proc-status.js";
import { freePorts } from "@clawker/test-support";
import { concurrentThroughput } from "../../unary-load.js";

const STAGES = (process.env["STAGES"] ?? "0,40000,80000,160000").split(",").map(Number);
const CONNECTIONS_PER_STAGE = Number(process.env["CONNECTIONS"] ?? "200");
/** calls: STAGES count calls (with some connections beside); connections: STAGES count connections. */
const MODE = process.env["MODE"] ?? "calls";
const SNAPSHOT = process.env["SNAPSHOT"] === "1";
const EXTRA_ARGS = process.env["DAEMON_NODE_ARGS"] ?? "";
const [inspectPort] = await freePorts(1);
const cp = await startControlPlane({
  built: true,
  config: { memoryRelief: { idleMs: 3_600_000 } },
  // HEAPTRACK=<dir>: the daemon under heaptrack's malloc tracer (what the heaptrack script does,
  // but exec'd, so the pid stays the daemon's); read with heaptrack_print <dir>/out.gz.
  launcher:
    process.env["HEAPTRACK"] === undefined
      ? ["sh", "-c", 'node=$1; shift; exec "$node" $EXTRA "$@"', "sh"]
      : [
          "sh",
          "-c",
          'node=$1; shift; mkfifo "$HT/pipe"; /usr/lib/heaptrack/libexec/heaptrack_interpret < "$HT/pipe" | gzip > "$HT/out.gz" & ' +
            'exec env LD_PRELOAD=/usr/lib/heaptrack/libheaptrack_preload.so DUMP_HEAPTRACK_OUTPUT="$HT/pipe" "$node" $EXTRA "$@"',
          "sh",
        ],
  env: { EXTRA: `--inspect=127.0.0.1:${inspectPort} ${EXTRA_ARGS}`, HT: process.env["HEAPTRACK"] ?? "" },
});

/** A minimal CDP client over the inspector's WebSocket. */
async function inspector(): Promise<{
  send: (method: string, params?: object) => Promise<Record<string, unknown>>;
  onEvent: (fn: (method: string, params: Record<string, unknown>) => void) => void;
  close: () => void;
}> {
  const list = (await (await fetch(`http://127.0.0.1:${inspectPort}/json/list`)).json()) as Array<{
    webSocketDebuggerUrl: string;
  }>;
  const ws = new WebSocket(list[0]!.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  let id = 0;
  const pending = new Map<number, (v: Record<string, unknown>) => void>();
  let listener: (method: string, params: Record<string, unknown>) => void = () => {};
  ws.onmessage = (ev) => {
    const msg = JSON.parse(String(ev.data)) as {
      id?: number;
      result?: Record<string, unknown>;
      error?: unknown;
      method?: string;
      params?: Record<string, unknown>;
    };
    if (msg.id !== undefined) {
      if (msg.error !== undefined) throw new Error(JSON.stringify(msg.error));
      pending.get(msg.id)?.(msg.result ?? {});
      pending.delete(msg.id);
    } else if (msg.method !== undefined) listener(msg.method, msg.params ?? {});
  };
  return {
    send: (method, params = {}) =>
      new Promise((resolve) => {
        const n = ++id;
        pending.set(n, resolve);
        ws.send(JSON.stringify({ id: n, method, params }));
      }),
    onEvent: (fn) => (listener = fn),
    close: () => ws.close(),
  };
}

const cdp = await inspector();
const evaluate = async (expression: string): Promise<unknown> => {
  const r = (await cdp.send("Runtime.evaluate", { expression, returnByValue: true })) as {
    result: { value?: unknown; description?: string };
  };
  return r.result.value ?? r.result.description;
};
const MEM = `(() => { const v8 = process.getBuiltinModule('v8'); const m = process.memoryUsage();
  const sp = Object.fromEntries(v8.getHeapSpaceStatistics().map((s) => [s.space_name,
    [Math.round(s.space_used_size / 1048576 * 10) / 10, Math.round(s.physical_space_size / 1048576 * 10) / 10]]));
  const h = v8.getHeapStatistics();
  return { rss: m.rss / 1048576, heapTotal: m.heapTotal / 1048576, heapUsed: m.heapUsed / 1048576,
    external: m.external / 1048576, arrayBuffers: m.arrayBuffers / 1048576,
    malloced: h.malloced_memory / 1048576, contexts: h.number_of_native_contexts, spaces: sp,
    handles: process.getActiveResourcesInfo().length }; })()`;
const round = (o: unknown): unknown =>
  JSON.parse(JSON.stringify(o, (_k, v: unknown) => (typeof v === "number" ? Math.round(v * 10) / 10 : v)));

/** A heap snapshot's object counts and self sizes by node name (constructor). */
async function snapshotCounts(): Promise<Map<string, { count: number; size: number }>> {
  let chunks = "";
  cdp.onEvent((method, params) => {
    if (method === "HeapProfiler.addHeapSnapshotChunk") chunks += params["chunk"] as string;
  });
  await cdp.send("HeapProfiler.takeHeapSnapshot", { reportProgress: false });
  const snap = JSON.parse(chunks) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
    nodes: number[];
    strings: string[];
  };
  const fields = snap.snapshot.meta.node_fields;
  const width = fields.length;
  const [typeAt, nameAt, sizeAt] = ["type", "name", "self_size"].map((f) => fields.indexOf(f));
  const types = snap.snapshot.meta.node_types[0];
  const out = new Map<string, { count: number; size: number }>();
  for (let i = 0; i < snap.nodes.length; i += width) {
    const type = types[snap.nodes[i + typeAt!]!]!;
    const name =
      type === "object" || type === "native" || type === "closure"
        ? `${type}:${snap.strings[snap.nodes[i + nameAt!]!]!.slice(0, 60)}`
        : type;
    const e = out.get(name) ?? { count: 0, size: 0 };
    e.count++;
    e.size += snap.nodes[i + sizeAt!]!;
    out.set(name, e);
  }
  return out;
}

const metadata = await bearerMetadata(cp);
const tls = { ca: cp.trust!.ca.certPem, cert: cp.trust!.cli.certPem, key: cp.trust!.cli.keyPem };
const raw = dial({ target: `127.0.0.1:${cp.ports.admin}`, tls });
const call = (client: ReturnType<typeof dial>) => () =>
  new Promise<unknown>((resolve, reject) =>
    client.listAgents({}, metadata, (err, res) => (err === null ? resolve(res) : reject(err))),
  );
const oneConnection = async (): Promise<void> => {
  const c = dial({ target: `127.0.0.1:${cp.ports.admin}`, tls });
  await call(c)();
  c.close();
};

let done = 0;
let connections = 0;
let previous: Map<string, { count: number; size: number }> | undefined;
try {
  for (const target of STAGES) {
    const t0 = Date.now();
    while (MODE === "connections" && connections < target) {
      await Promise.all(Array.from({ length: 8 }, () => oneConnection()));
      connections += 8;
    }
    while (MODE === "calls" && done < target) {
      const n = Math.min(20_000, target - done);
      await concurrentThroughput(n, 64, call(raw));
      done += n;
      for (let i = 0; i < CONNECTIONS_PER_STAGE / 4 && target > 0; i++) {
        await oneConnection();
        connections++;
      }
    }
    const loadMs = Date.now() - t0;
    await new Promise((r) => setTimeout(r, 500));
    const before = round(await evaluate(MEM));
    const rssBeforeGc = rssMiB(cp.proc.pid!);
    await cdp.send("HeapProfiler.collectGarbage");
    await new Promise((r) => setTimeout(r, 500));
    const after = round(await evaluate(MEM));
    // TRIM=1: what glibc's malloc then hands back (free memory it held in its arenas), via gdb.
    let rssAfterTrim: number | undefined;
    if (process.env["TRIM"] === "1") {
      execFileSync("gdb", ["-p", String(cp.proc.pid), "-batch", "-ex", "call (int)malloc_trim(0)"], {
        stdio: "ignore",
      });
      rssAfterTrim = Math.round(rssMiB(cp.proc.pid!) * 10) / 10;
    }
    console.log(
      JSON.stringify({
        calls: done,
        connections,
        loadMs,
        rssBeforeGc: Math.round(rssBeforeGc),
        before,
        after,
        rssAfterTrim,
      }),
    );
    if (SNAPSHOT) {
      const now = await snapshotCounts();
      if (previous !== undefined) {
        const diff = [...now]
          .map(
            ([k, v]) =>
              [k, v.count - (previous!.get(k)?.count ?? 0), v.size - (previous!.get(k)?.size ?? 0)] as const,
          )
          .filter(([, c, s]) => c !== 0 || s !== 0)
          .sort((a, b) => Math.abs(b[2]) - Math.abs(a[2]))
          .slice(0, 25);
        console.log(JSON.stringify({ calls: done, growth: diff }));
      }
      previous = now;
    }
  }
} finally {
  raw.close();
  cdp.close();
  await cp.close();
}
