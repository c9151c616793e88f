// EgressTriage over a real RuleStore on a real sqlite file. The firewall is the store alone (its add
// and remove path, no proxy behind it: `running` true), so these tests are about grouping,
// requests, approvals as rules, expiry and refusals; the live proxy is test/firewall-triage.test.ts.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import { egress } from "@clawker/proto";
import pino from "pino";
import { waitFor } from "@clawker/test-support";
import { FirewallError, QueueClosedError } from "../errors.js";
import { ruleKey } from "../rule.js";
import { RuleStore, type Actor } from "../rule-store.js";
import {
  EgressTriage,
  EXPIRY_ACTOR,
  type AuditWho,
  type EgressTriageOptions,
  type TriageActionKind,
  type TriageFirewall,
} from "./egress-triage.js";
import { groupId, suggestedRule } from "./denial-groups.js";

const OPERATOR: Actor = { clientId: "clawker-cli", certCn: "clawker-cli" };
const AGENT_ACTOR: Actor = { clientId: "clawker-agent", certCn: "clawker-clawkerd" };
const DEV = { containerId: "c".repeat(64), agentName: "dev", project: "web" };
const OPS = { containerId: "d".repeat(64), agentName: "ops", project: "web" };
const {
  APPROVAL_SCOPE_AGENT: AGENT,
  APPROVAL_SCOPE_PROJECT: PROJECT,
  APPROVAL_SCOPE_GLOBAL: GLOBAL,
} = egress.ApprovalScope;

interface World {
  readonly db: string;
  readonly store: RuleStore;
  readonly triage: EgressTriage;
  readonly audit: Array<{ kind: TriageActionKind; who: AuditWho; detail: Record<string, unknown> }>;
  readonly clock: { now: number };
  reopen(extra?: Partial<EgressTriageOptions>): Promise<EgressTriage>;
}

/** The Firewall's add/remove/list path over a real RuleStore (no proxy behind it). */
function storeFirewall(store: RuleStore, db: string): TriageFirewall {
  return {
    running: true,
    database: db,
    addRules: (inputs, actor) => Promise.resolve(store.add(inputs, actor)),
    removeRule: (selector, actor) => Promise.resolve(store.remove(selector, actor)),
    listRules: () => store.list(),
  };
}

async function world(t: TestContext, extra: Partial<EgressTriageOptions> = {}): Promise<World> {
  const dir = mkdtempSync(join(tmpdir(), "triage-"));
  const db = join(dir, "registry.db");
  const store = new RuleStore({ db });
  const clock = { now: 1_700_000_000_000 };
  const audit: World["audit"] = [];
  const open = async (more: Partial<EgressTriageOptions>): Promise<EgressTriage> => {
    const triage = new EgressTriage({
      firewall: storeFirewall(store, db),
      log: pino({ level: "silent" }),
      audit: { action: (kind, who, detail) => void audit.push({ kind, who, detail }) },
      now: () => clock.now,
      ...extra,
      ...more,
    });
    await triage.start(new AbortController().signal);
    t.after(() => triage.close());
    return triage;
  };
  const triage = await open({});
  t.after(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { db, store, triage, audit, clock, reopen: open };
}

function denial(over: Partial<egress.FirewallEvent> = {}): egress.FirewallEvent {
  return egress.FirewallEvent.fromPartial({
    schemaVersion: 1,
    timeUnixNanos: 1_000n,
    agentName: "dev",
    project: "web",
    dstName: "api.example.test",
    port: 443,
    protocol: "https",
    verdict: egress.Verdict.VERDICT_DENIED,
    layer: egress.Layer.LAYER_PROXY,
    reason: "no_rule",
    ...over,
  });
}

async function refused(p: Promise<unknown> | (() => unknown)): Promise<FirewallError> {
  try {
    await (typeof p === "function" ? p() : p);
  } catch (err) {
    assert.ok(err instanceof FirewallError, String(err));
    return err;
  }
  assert.fail("not refused");
}

test("denials are grouped by destination, port and agent; counts, times, last layer and reason, the suggested rule", async (t) => {
  const { triage } = await world(t);
  triage.record(denial({ timeUnixNanos: 10n }));
  triage.record(denial({ timeUnixNanos: 30n, layer: egress.Layer.LAYER_DNS, reason: "nxdomain" }));
  triage.record(denial({ timeUnixNanos: 20n, agentName: "ops" }));
  triage.record(denial({ port: 8443, timeUnixNanos: 40n }));
  triage.record(denial({ verdict: egress.Verdict.VERDICT_ALLOWED, dstName: "allowed.example.test" }));
  triage.record(
    denial({ dstName: "", dstAddr: "10.9.8.7", protocol: "tcp", port: 5432, timeUnixNanos: 50n }),
  );
  const { groups, requests } = triage.list();
  assert.deepEqual(requests, []);
  assert.deepEqual(
    groups.map(({ group: g }) => [g.agent, g.dstName || g.dstAddr, g.port, g.count, g.firstSeen, g.lastSeen]),
    [
      ["web.dev", "10.9.8.7", 5432, 1, 50n, 50n],
      ["web.dev", "api.example.test", 8443, 1, 40n, 40n],
      ["web.ops", "api.example.test", 443, 1, 20n, 20n],
      ["web.dev", "api.example.test", 443, 2, 10n, 30n],
    ],
  );
  const dev = groups[3]!.group;
  assert.equal(dev.id, groupId("web.dev", "api.example.test", 443), "a stable id");
  assert.deepEqual([dev.layer, dev.reason], [egress.Layer.LAYER_DNS, "nxdomain"], "the last one's");
  assert.deepEqual(dev.suggested, { dst: "api.example.test", proto: "https", port: "443" });
  assert.deepEqual(groups[0]!.group.suggested, { dst: "10.9.8.7", proto: "tcp", port: "5432" });
  assert.deepEqual(
    suggestedRule(denial({ dstName: "API.Example.test.:8080", protocol: "http", port: 8080 })),
    { dst: "api.example.test", proto: "http", port: "8080" },
    "a Host header's port and root dot dropped",
  );
  assert.deepEqual(
    suggestedRule(denial({ layer: egress.Layer.LAYER_DNS, protocol: "dns", port: 53 })),
    { dst: "api.example.test", proto: "https", port: "443" },
    "a DNS denial suggests https on 443",
  );
  assert.deepEqual(suggestedRule(denial({ protocol: "tls", port: 0 })), {
    dst: "api.example.test",
    proto: "https",
    port: "443",
  });
  assert.deepEqual(triage.list({ agentName: "ops" }).groups.length, 1);
  assert.deepEqual(triage.list({ project: "other" }).groups.length, 0);
  assert.deepEqual(triage.list({ sinceUnixNanos: 45n }).groups.length, 1);
});

test("groups are bounded: the least recently seen is evicted and counted", async (t) => {
  const { triage } = await world(t, { maxGroups: 3 });
  for (let i = 0; i < 5; i++) triage.record(denial({ dstName: `n${i}.example.test` }));
  triage.record(denial({ dstName: "n2.example.test" })); // seen again: now the newest
  triage.record(denial({ dstName: "n5.example.test" }));
  assert.deepEqual(
    triage.list().groups.map((g) => g.group.dstName),
    ["n5.example.test", "n2.example.test", "n4.example.test"],
  );
  assert.deepEqual(
    [triage.stats().groups, triage.stats().groupsEvicted, triage.stats().denialsRecorded],
    [3, 3, 7],
  );
});

test("at the cap the least recently seen tenth is evicted at once, by recency, not by creation", async (t) => {
  const { triage } = await world(t, { maxGroups: 20 });
  for (let i = 0; i < 20; i++) triage.record(denial({ dstName: `n${i}.example.test` }));
  triage.record(denial({ dstName: "n0.example.test" })); // n0 is now the newest; n1 and n2 the oldest
  triage.record(denial({ dstName: "n20.example.test" }));
  const kept = triage.list().groups.map((g) => g.group.dstName);
  assert.deepEqual([kept.length, triage.stats().groupsEvicted], [19, 2]);
  assert.deepEqual(kept.slice(0, 2), ["n20.example.test", "n0.example.test"]);
  assert.ok(!kept.includes("n1.example.test") && !kept.includes("n2.example.test"), kept.join(" "));
});

test("approving a denial for one agent adds that agent's rule through the add path (who recorded); it is never offered again while the rule stands", async (t) => {
  const { triage, store, audit } = await world(t);
  triage.record(denial());
  triage.record(denial({ agentName: "ops" }));
  const id = groupId("web.dev", "api.example.test", 443);
  const approval = await triage.approve(
    { denialId: id, requestId: "", scope: AGENT, expiresAfterSeconds: 0 },
    OPERATOR,
  );
  assert.equal(approval.expiresAtUnixMs, 0);
  assert.equal(ruleKey(approval.rule.rule), "agent:web.dev api.example.test:https:443");
  assert.deepEqual(
    store.list().map((l) => ruleKey(l.rule)),
    ["agent:web.dev api.example.test:https:443"],
  );
  const change = store.changes()[0]!;
  assert.deepEqual([change.op, change.actor], ["add", OPERATOR]);
  // The same destination denied again for dev is not offered; ops's group still is.
  triage.record(denial({ timeUnixNanos: 99n }));
  assert.equal(triage.stats().denialsCovered, 1);
  assert.deepEqual(
    triage.list().groups.map((g) => g.group.agent),
    ["web.ops"],
  );
  assert.deepEqual(audit.at(-1), {
    kind: "approval",
    who: { clientId: "clawker-cli", cn: "clawker-cli" },
    detail: {
      denial_id: id,
      rule: "agent:web.dev api.example.test:https:443",
      dst: "api.example.test",
      proto: "https",
      port: "443",
      scope: "agent",
      scope_name: "web.dev",
      status: "added",
      expires_at_unix_ms: 0,
    },
  });
  // Project and global scopes; an approved group is gone (and not grouped again), so approving
  // it again is NOT_FOUND.
  const again = await refused(
    triage.approve({ denialId: id, requestId: "", scope: AGENT, expiresAfterSeconds: 0 }, OPERATOR),
  );
  assert.equal(again.reason, "unknown_triage_item");
  triage.record(denial({ dstName: "p.example.test" }));
  triage.record(denial({ dstName: "g.example.test" }));
  await triage.approve(
    {
      denialId: groupId("web.dev", "p.example.test", 443),
      requestId: "",
      scope: PROJECT,
      expiresAfterSeconds: 0,
    },
    OPERATOR,
  );
  await triage.approve(
    {
      denialId: groupId("web.dev", "g.example.test", 443),
      requestId: "",
      scope: GLOBAL,
      expiresAfterSeconds: 0,
    },
    OPERATOR,
  );
  assert.deepEqual(
    store.list().map((l) => ruleKey(l.rule)),
    [
      "global g.example.test:https:443",
      "project:web p.example.test:https:443",
      "agent:web.dev api.example.test:https:443",
    ],
  );
});

test("coverage is judged once per rule set: a rule added or removed later changes what is grouped", async (t) => {
  const { triage, store } = await world(t);
  triage.record(denial());
  triage.record(denial({ layer: egress.Layer.LAYER_DNS, protocol: "dns", port: 443 }));
  assert.equal(triage.list().groups[0]!.group.count, 2);
  // Added behind the triage's back (not an approval): the next denial of it is covered.
  store.add([{ dst: "api.example.test", proto: "https", port: "443", action: "allow" }], OPERATOR);
  triage.record(denial());
  assert.deepEqual([triage.stats().denialsCovered, triage.list().groups.length], [1, 0]);
  // Removed: the same denial is grouped again, counted on from where its group stood.
  store.remove({ dst: "api.example.test", proto: "https", port: "443" }, OPERATOR);
  triage.record(denial({ timeUnixNanos: 5_000n }));
  const again = triage.list().groups.find((g) => g.group.dstName === "api.example.test")!.group;
  assert.deepEqual([again.count, again.lastSeen, triage.stats().denialsCovered], [3, 5_000n, 1]);
  assert.equal(again.id, groupId("web.dev", "api.example.test", 443));
});

test("bad approvals are refused precisely and change nothing", async (t) => {
  const { triage, store } = await world(t);
  triage.record(denial());
  triage.record(denial({ agentName: "", project: "", dstName: "anon.example.test" }));
  const id = groupId("web.dev", "api.example.test", 443);
  const cases: Array<[Parameters<EgressTriage["approve"]>[0], string, RegExp]> = [
    [
      { denialId: id, requestId: "r-x", scope: AGENT, expiresAfterSeconds: 0 },
      "invalid_request",
      /exactly one/,
    ],
    [{ denialId: "", requestId: "", scope: AGENT, expiresAfterSeconds: 0 }, "invalid_request", /exactly one/],
    [
      { denialId: id, requestId: "", scope: 0, expiresAfterSeconds: 0 },
      "invalid_request",
      /scope is required/,
    ],
    [
      { denialId: id, requestId: "", scope: AGENT, expiresAfterSeconds: 31 * 86400 },
      "invalid_request",
      /30 days/,
    ],
    [
      { denialId: "d-nope", requestId: "", scope: AGENT, expiresAfterSeconds: 0 },
      "unknown_triage_item",
      /no denial "d-nope"/,
    ],
    [
      { denialId: "", requestId: "r-nope", scope: AGENT, expiresAfterSeconds: 0 },
      "unknown_triage_item",
      /no pending request/,
    ],
    [
      {
        denialId: groupId("", "anon.example.test", 443),
        requestId: "",
        scope: AGENT,
        expiresAfterSeconds: 0,
      },
      "invalid_request",
      /no known agent/,
    ],
  ];
  for (const [input, reason, message] of cases) {
    const err = await refused(triage.approve(input, OPERATOR));
    assert.equal(
      err.reason,
      reason,
      JSON.stringify(input, (_k, v: unknown) => v),
    );
    assert.match(err.message, message);
  }
  assert.deepEqual(store.list(), []);
  assert.equal(triage.list().groups.length, 2, "nothing left the list");
});

test("a temporary approval is removed by itself; its end is stored, so a restart removes it too", async (t) => {
  const w = await world(t);
  w.triage.record(denial());
  const approval = await w.triage.approve(
    {
      denialId: groupId("web.dev", "api.example.test", 443),
      requestId: "",
      scope: AGENT,
      expiresAfterSeconds: 3600,
    },
    OPERATOR,
  );
  assert.equal(approval.expiresAtUnixMs, w.clock.now + 3_600_000);
  assert.equal(w.store.list().length, 1);
  // A daemon restart an hour and a bit later: the stored end is past, so it goes at start.
  await w.triage.close();
  w.clock.now += 3_600_001;
  const restarted = await w.reopen({});
  await waitFor(() => w.store.list().length === 0, { timeoutMs: 5_000, what: "the expired rule to go" });
  const removal = w.store.changes()[0]!;
  assert.deepEqual([removal.op, removal.actor], ["remove", EXPIRY_ACTOR]);
  assert.equal(restarted.stats().expired, 1);
  assert.equal(restarted.stats().expiringRules, 0);

  // And while running: one second, then gone by itself (the timer, no call).
  restarted.record(denial({ dstName: "t.example.test" }));
  await restarted.approve(
    {
      denialId: groupId("web.dev", "t.example.test", 443),
      requestId: "",
      scope: GLOBAL,
      expiresAfterSeconds: 1,
    },
    OPERATOR,
  );
  assert.equal(w.store.list().length, 1);
  w.clock.now += 1_000;
  await waitFor(() => w.store.list().length === 0, { timeoutMs: 5_000, what: "the 1 s approval to expire" });
});

test("an expiring approval never removes a rule that stood before it", async (t) => {
  const { triage, store } = await world(t);
  // A denial recorded before the rule stood (a race), approved with an expiry afterwards.
  triage.record(denial());
  store.add([{ dst: "api.example.test", port: "443", project: "web", agentName: "dev" }], OPERATOR);
  const approval = await triage.approve(
    {
      denialId: groupId("web.dev", "api.example.test", 443),
      requestId: "",
      scope: AGENT,
      expiresAfterSeconds: 60,
    },
    OPERATOR,
  );
  assert.equal(approval.expiresAtUnixMs, 0, "the rule stays permanent");
  assert.equal(triage.stats().expiringRules, 0);
});

test("an agent's request is validated, stored durably, listed with its destination's denials, and grants nothing until approved", async (t) => {
  const w = await world(t);
  const asked = w.triage.request(
    DEV,
    { dst: "API.example.test.", port: 0, proto: "", reason: "npm needs it" },
    AGENT_ACTOR,
  );
  assert.equal(asked.alreadyAllowed, false);
  assert.match(asked.requestId, /^r-[0-9a-f]{20}$/);
  assert.deepEqual(w.store.list(), [], "asking grants nothing");
  // Stored durably: a new triage on the same file lists it.
  await w.triage.close();
  const triage = await w.reopen({});
  let listed = triage.list();
  assert.deepEqual(
    listed.requests.map((r) => [r.id, r.agentName, r.project, r.dst, r.proto, r.port, r.reason]),
    [[asked.requestId, "dev", "web", "api.example.test", "https", "443", "npm needs it"]],
  );
  // Once dev is denied that destination, the request is listed with the group.
  triage.record(denial());
  listed = triage.list();
  assert.deepEqual(listed.requests, []);
  assert.deepEqual(
    listed.groups[0]!.requests.map((r) => r.id),
    [asked.requestId],
  );
  // The same ask again refreshes the one request.
  const again = triage.request(
    DEV,
    { dst: "api.example.test", port: 443, proto: "https", reason: "still" },
    AGENT_ACTOR,
  );
  assert.equal(again.requestId, asked.requestId);
  // Approved by request id: the rule is the agent's; the request is gone.
  const approval = await triage.approve(
    { denialId: "", requestId: asked.requestId, scope: AGENT, expiresAfterSeconds: 0 },
    OPERATOR,
  );
  assert.equal(ruleKey(approval.rule.rule), "agent:web.dev api.example.test:https:443");
  assert.deepEqual(triage.list(), { groups: [], requests: [] });
  // Already allowed: nothing queued.
  assert.deepEqual(
    triage.request(DEV, { dst: "api.example.test", port: 443, proto: "https", reason: "x" }, AGENT_ACTOR),
    { requestId: "", alreadyAllowed: true },
  );
  assert.deepEqual(
    w.audit.filter((a) => a.kind === "request").map((a) => [a.who, a.detail["agent"], a.detail["dst"]]),
    [
      [{ clientId: "clawker-agent", cn: "clawker-clawkerd" }, "web.dev", "api.example.test"],
      [{ clientId: "clawker-agent", cn: "clawker-clawkerd" }, "web.dev", "api.example.test"],
    ],
  );
});

test("bad requests are refused precisely; requests are rate-limited and capped per agent", async (t) => {
  const { triage } = await world(t, { requestBurst: 100, maxPendingPerAgent: 3 });
  const ask = (over: Partial<{ dst: string; port: number; proto: string; reason: string }>) =>
    triage.request(DEV, { dst: "ok.example.test", port: 0, proto: "", reason: "why", ...over }, AGENT_ACTOR);
  const cases: Array<[Parameters<typeof ask>[0], RegExp]> = [
    [{ reason: "" }, /^reason is required/],
    [{ reason: "x".repeat(513) }, /^reason is longer than 512 bytes$/],
    [{ reason: "é".repeat(257) }, /^reason is longer than 512 bytes$/],
    [{ reason: "line\nbreak" }, /^reason must be printable/],
    [{ reason: "bidi \u202e override" }, /^reason must be printable/],
    [{ dst: "" }, /^dst: /],
    [{ dst: "https://x.example.test/" }, /^dst: /],
    [{ dst: "ok.example.test", proto: "tcp" }, /^port: is required for tcp/],
    [{ port: 70000 }, /^port: /],
    [{ proto: "bad proto" }, /^proto: /],
  ];
  for (const [over, message] of cases) {
    const err = await refused(() => ask(over));
    assert.equal(err.reason, "invalid_request", JSON.stringify(over));
    assert.match(err.message, message, JSON.stringify(over));
  }
  assert.equal(triage.list().requests.length, 0, "nothing stored");
  assert.equal(ask({ reason: "é".repeat(256) }).alreadyAllowed, false, "512 bytes exactly is fine");
  ask({ dst: "b.example.test" });
  ask({ dst: "c.example.test" });
  const capped = await refused(() => ask({ dst: "d.example.test" }));
  assert.equal(capped.reason, "too_many_requests");
  // Another agent has its own cap.
  triage.request(OPS, { dst: "d.example.test", port: 0, proto: "", reason: "x" }, AGENT_ACTOR);

  const limited = await world(t, { requestBurst: 2, requestRefillMs: 10_000 });
  const once = () =>
    limited.triage.request(
      OPS,
      { dst: `n${Math.random()}.example.test`.replace("0.", ""), port: 0, proto: "", reason: "x" },
      AGENT_ACTOR,
    );
  once();
  once();
  assert.equal((await refused(once)).reason, "too_many_requests");
  limited.clock.now += 10_000;
  once();
});

test("dismissing takes a group or request off the list (a group until it happens again); it is recorded", async (t) => {
  const { triage, audit, store } = await world(t);
  triage.record(denial());
  const { requestId } = triage.request(
    OPS,
    { dst: "x.example.test", port: 0, proto: "", reason: "x" },
    AGENT_ACTOR,
  );
  const id = groupId("web.dev", "api.example.test", 443);
  triage.dismiss({ denialId: id, requestId: "" }, OPERATOR);
  triage.dismiss({ denialId: "", requestId }, OPERATOR);
  assert.deepEqual(triage.list(), { groups: [], requests: [] });
  assert.deepEqual(store.list(), [], "a dismissal grants nothing");
  assert.deepEqual(
    audit.filter((a) => a.kind === "dismissal").map((a) => Object.keys(a.detail)[0]),
    ["denial_id", "request_id"],
  );
  assert.equal(
    (await refused(() => triage.dismiss({ denialId: id, requestId: "" }, OPERATOR))).reason,
    "unknown_triage_item",
  );
  triage.record(denial());
  assert.equal(triage.list().groups[0]!.group.count, 1, "back when it happens again, counted afresh");
});

test("decisions arriving while the firewall drains are skipped quietly; record never throws", async (t) => {
  const lines: string[] = [];
  const { store, db } = await world(t);
  const triage = new EgressTriage({
    firewall: {
      ...storeFirewall(store, db),
      listRules: () => {
        throw new QueueClosedError();
      },
    },
    log: pino({ level: "info" }, { write: (line: string) => void lines.push(line) }),
  });
  await triage.start(new AbortController().signal);
  t.after(() => triage.close());
  for (let i = 0; i < 100; i++) triage.record(denial());
  assert.equal(triage.stats().groups, 0);
  assert.deepEqual(lines, [], "no error line per event");
});
