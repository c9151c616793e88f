// EgressService as the admin listener serves it (GrpcListener, real mTLS with a minted trust set,
// the CLI's certificate), over an EventHub the test publishes into: backfill, filters, no_follow,
// a watcher that stops reading gets a gap with the exact count while another gets everything,
// the drain ends watches, and the triage slot. Auth in front of it is the listener's, tested
// elsewhere (the scope map lists these methods).
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { cliTls, dial } from "@clawker/adminclient";
import { ADMIN_ERRORS, egress, errorDetailOf } from "@clawker/proto";
import { pino } from "pino";
import { AuditLog } from "../src/firewall/audit/audit-log.js";
import { egressService, type TriageHandlers } from "../src/firewall/egress-service.js";
import { EventHub, type FirewallEventInput } from "../src/firewall/events/event-hub.js";
import { GrpcListener } from "../src/server/grpc-listener.js";
import { mintTestTrust, type TestTrust } from "../../../test/harness/trust.js";
import { waitFor } from "../../../test/harness/wait-for.js";

tls.DEFAULT_MIN_VERSION = "TLSv1.3";

const log = pino({ level: "silent" });
const S = egress.EgressServiceService;

function event(over: Partial<FirewallEventInput> = {}): FirewallEventInput {
  const { seq: _s, schemaVersion: _v, ...blank } = egress.FirewallEvent.create();
  return {
    ...blank,
    layer: egress.Layer.LAYER_PROXY,
    verdict: egress.Verdict.VERDICT_DENIED,
    dstName: "denied.example",
    port: 443,
    reason: "no_rule",
    ...over,
  };
}

describe("EgressService over real mTLS", () => {
  let trust: TestTrust;
  let hub: EventHub;
  let listener: GrpcListener;
  let triageListener: GrpcListener;
  let client: grpc.Client;
  let triageClient: grpc.Client;
  const closing = new AbortController();

  const watch = (
    c: grpc.Client,
    request: Partial<egress.WatchFirewallEventsRequest>,
  ): grpc.ClientReadableStream<egress.WatchFirewallEventsResponse> =>
    c.makeServerStreamRequest(
      S.watchFirewallEvents.path,
      S.watchFirewallEvents.requestSerialize,
      S.watchFirewallEvents.responseDeserialize,
      egress.WatchFirewallEventsRequest.fromPartial(request),
    );
  /** Everything a stream sends until it ends, or its error. */
  const collect = (
    stream: grpc.ClientReadableStream<egress.WatchFirewallEventsResponse>,
  ): Promise<egress.FirewallEvent[]> =>
    new Promise((resolve, reject) => {
      const out: egress.FirewallEvent[] = [];
      stream.on("data", (m: egress.WatchFirewallEventsResponse) => out.push(m.event!));
      stream.on("error", reject);
      stream.on("end", () => resolve(out));
    });

  before(async () => {
    trust = await mintTestTrust();
    hub = new EventHub({ log, ringCapacity: 100_000, ratePerSecond: { proxy: 10_000_000 } });
    const serverTls = {
      ca: Buffer.from(trust.set.ca.certPem),
      cert: Buffer.from(trust.set.controlPlaneServer.certPem),
      key: Buffer.from(trust.set.controlPlaneServer.keyPem),
    };
    listener = new GrpcListener({
      name: "admin",
      host: "127.0.0.1",
      port: 0,
      tls: serverTls,
      services: [egressService({ hub, log, maxQueue: 4, closing: closing.signal })],
      log,
    });
    await listener.start();
    const triage: TriageHandlers = {
      listFirewallDenials: (_call, callback) => callback(null, { groups: [], requests: [] }),
      approveEgress: (_call, callback) => callback(null, { expiresAtUnixNanos: 0n }),
      dismissEgress: (_call, callback) => callback(null, {}),
    };
    triageListener = new GrpcListener({
      name: "admin",
      host: "127.0.0.1",
      port: 0,
      tls: serverTls,
      services: [egressService({ hub, log, triage })],
      log,
    });
    await triageListener.start();
    client = dial({ tls: cliTls(trust.set), target: `127.0.0.1:${listener.port}` });
    triageClient = dial({ tls: cliTls(trust.set), target: `127.0.0.1:${triageListener.port}` });
  });
  after(async () => {
    client?.close();
    triageClient?.close();
    await listener?.close(0);
    await triageListener?.close(0);
    await trust?.close();
  });

  test("since backfills from the ring with the filter, in order; no_follow ends after it", async () => {
    for (const [i, agentName] of ["dev", "ci", "dev"].entries())
      hub.publish(event({ agentName, project: "web", timeUnixNanos: BigInt(1000 + i) }));
    hub.publish(
      event({ agentName: "dev", project: "web", layer: egress.Layer.LAYER_DNS, timeUnixNanos: 1003n }),
    );
    hub.publish(
      event({
        agentName: "dev",
        project: "web",
        verdict: egress.Verdict.VERDICT_ALLOWED,
        timeUnixNanos: 1004n,
      }),
    );
    const got = await collect(
      watch(client, {
        sinceUnixNanos: 1001n,
        noFollow: true,
        filter: {
          agentName: "dev",
          project: "web",
          verdicts: [egress.Verdict.VERDICT_DENIED],
          layers: [egress.Layer.LAYER_PROXY],
        },
      }),
    );
    assert.deepEqual(
      got.map((e) => [e.timeUnixNanos, e.agentName, e.schemaVersion]),
      [[1002n, "dev", 1]],
    );
    const all = await collect(watch(client, { sinceUnixNanos: 1n, noFollow: true }));
    assert.deepEqual(
      all.map((e) => e.timeUnixNanos),
      [1000n, 1001n, 1002n, 1003n, 1004n],
    );
    assert.deepEqual(await collect(watch(client, { noFollow: true })), [], "no since: no backfill");
  });

  test("a bad filter or a negative since is INVALID_ARGUMENT with the reason", async () => {
    for (const request of [
      { filter: { agentName: "", project: "", verdicts: [7 as egress.Verdict], layers: [] } },
      { sinceUnixNanos: -1n },
    ]) {
      const err = await collect(watch(client, request)).then(
        () => assert.fail("accepted"),
        (e: grpc.ServiceError) => e,
      );
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(errorDetailOf(err)?.reason, "invalid_argument");
    }
  });

  test("a watcher that stops reading gets a gap with the exact count it lost; another gets every event", async () => {
    // The slow watcher's channel has HTTP/2's 64 KiB window (the admin client's default is 4 MiB,
    // which would hold this whole flood): what is tested is the daemon's bound, not the client's.
    const slowClient = dial({
      tls: cliTls(trust.set),
      target: `127.0.0.1:${listener.port}`,
      channelOptions: { "grpc-node.flow_control_window": 65_535 },
    });
    const fast = watch(client, {});
    const slow = watch(slowClient, {});
    const fastSeen: egress.FirewallEvent[] = [];
    const slowSeen: egress.FirewallEvent[] = [];
    fast.on("data", (m: egress.WatchFirewallEventsResponse) => fastSeen.push(m.event!));
    slow.on("data", (m: egress.WatchFirewallEventsResponse) => {
      slowSeen.push(m.event!);
      // The slow watcher stops reading after its first event (gRPC flow control then holds the
      // daemon's writes).
      if (slowSeen.length === 1) slow.pause();
    });
    await waitFor(
      () => {
        hub.publish(event({ dstName: "warmup.example" }));
        return fastSeen.length > 0 && slowSeen.length > 0;
      },
      { timeoutMs: 10_000, what: "both watchers subscribed" },
    );
    const mark = hub.stats().lastSeq;
    // Published in steps the fast watcher keeps up with (it has room for 4 beyond gRPC's buffer);
    // far more than the slow one's HTTP/2 window (64 KiB) and buffers hold.
    const TOTAL = 5000;
    for (let i = 0; i < TOTAL; i += 4) {
      for (let j = 0; j < 4; j++) hub.publish(event({ dstName: "flood.example", port: i + j }));
      const want = hub.stats().lastSeq;
      await waitFor(() => fastSeen.at(-1)!.seq >= want, { timeoutMs: 10_000, what: "the fast watcher" });
    }
    slow.resume();
    // What the slow one lost it learns from a gap; a marker after it shows it is live again.
    await waitFor(
      () => {
        hub.publish(event({ dstName: "after.example" }));
        return slowSeen.some((e) => e.dstName === "after.example");
      },
      { timeoutMs: 30_000, what: "the slow watcher to read again" },
    );
    const flood = fastSeen.filter((e) => e.dstName === "flood.example");
    assert.equal(flood.length, TOTAL, "the fast watcher got every event");
    assert.equal(fastSeen.filter((e) => e.gapCount > 0n).length, 0, "and no gap");
    const after = slowSeen.filter((e) => e.seq > mark || e.gapCount > 0n);
    const gaps = after.reduce((n, e) => n + Number(e.gapCount), 0);
    assert.ok(gaps > 0, "the slow watcher was told it lost events");
    const received = after.filter((e) => e.gapCount === 0n);
    const last = received.at(-1)!.seq;
    // Every seq from the mark to the last it received: either received or counted in a gap.
    assert.equal(
      BigInt(received.length + gaps),
      last - mark,
      "received + counted gaps = everything published",
    );
    const seqs = received.map((e) => e.seq);
    assert.deepEqual(
      seqs,
      [...seqs].sort((a, b) => (a < b ? -1 : 1)),
      "in order",
    );
    assert.equal(new Set(seqs).size, seqs.length, "no duplicates");
    for (const s of [fast, slow]) {
      s.on("error", () => undefined); // CANCELLED: ours
      s.cancel();
    }
    slowClient.close();
  });

  test("the drain ends a followed watch cleanly", async () => {
    const stream = watch(client, {});
    let seen = 0;
    stream.on("data", () => seen++);
    const ended = new Promise<void>((resolve, reject) => {
      stream.on("end", resolve);
      stream.on("error", reject);
    });
    await waitFor(
      () => {
        hub.publish(event({ dstName: "drain.example" }));
        return seen > 0;
      },
      { timeoutMs: 10_000, what: "the watch to follow" },
    );
    closing.abort();
    await ended;
  });

  test("since reaches past the ring into the audit log, without duplicates", async () => {
    const dir = mkdtempSync(join(tmpdir(), "egress-audit-"));
    const audit = new AuditLog({ dir, log });
    await audit.start();
    const small = new EventHub({ log, ringCapacity: 2 });
    small.onEvent((e) => audit.event(e));
    const l = new GrpcListener({
      name: "admin",
      host: "127.0.0.1",
      port: 0,
      tls: {
        ca: Buffer.from(trust.set.ca.certPem),
        cert: Buffer.from(trust.set.controlPlaneServer.certPem),
        key: Buffer.from(trust.set.controlPlaneServer.keyPem),
      },
      services: [egressService({ hub: small, audit, log })],
      log,
    });
    await l.start();
    const c = dial({ tls: cliTls(trust.set), target: `127.0.0.1:${l.port}` });
    try {
      for (let i = 1; i <= 5; i++) small.publish(event({ timeUnixNanos: BigInt(i) * 1000n, port: i }));
      // The audit log writes in the background: all five on disk before asking.
      await waitFor(() => audit.stats().written >= 5, { timeoutMs: 10_000, what: "the audit log" });
      const got = await collect(watch(c, { sinceUnixNanos: 2000n, noFollow: true }));
      assert.deepEqual(
        got.map((e) => e.port),
        [2, 3, 4, 5],
        "2 and 3 from the audit log, 4 and 5 from the ring",
      );
    } finally {
      c.close();
      await l.close(0);
      await audit.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("triage RPCs: UNIMPLEMENTED without triage, the triage's answers with it", async () => {
    const unary = <Req, Res>(c: grpc.Client, def: grpc.MethodDefinition<Req, Res>, req: Req): Promise<Res> =>
      new Promise((resolve, reject) =>
        c.makeUnaryRequest(def.path, def.requestSerialize, def.responseDeserialize, req, (err, res) =>
          err === null ? resolve(res!) : reject(err),
        ),
      );
    const req = egress.ListFirewallDenialsRequest.create();
    const err = await unary(client, S.listFirewallDenials, req).then(
      () => assert.fail("answered"),
      (e: grpc.ServiceError) => e,
    );
    assert.equal(err.code, grpc.status.UNIMPLEMENTED);
    assert.equal(errorDetailOf(err)?.reason, "unimplemented");
    assert.equal(ADMIN_ERRORS.codes.unimplemented, grpc.status.UNIMPLEMENTED);
    assert.deepEqual(await unary(triageClient, S.listFirewallDenials, req), { groups: [], requests: [] });
  });
});
