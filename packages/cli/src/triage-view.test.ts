// The watch screen's state: what it lists, in which order, what each key asks for, and that the
// cursor follows the item it was on when the list changes under it.
import assert from "node:assert/strict";
import { test } from "node:test";
import { egress } from "@clawker/proto";
import { TEMPORARY_SECONDS, TriageView, triageItems } from "./triage-view.js";

const NOW = 1_800_000_000_000;
const ns = (ms: number): bigint => BigInt(ms) * 1_000_000n;

function group(
  id: string,
  dst: string,
  agent: string,
  lastMs: number,
  extra: Partial<egress.DenialGroup> = {},
) {
  return egress.DenialGroup.fromPartial({
    id,
    dstName: dst,
    port: 443,
    agentName: agent,
    project: "web",
    count: 3n,
    lastSeenUnixNanos: ns(lastMs),
    layer: egress.Layer.LAYER_PROXY,
    reason: "no_rule",
    ...extra,
  });
}

const answer = egress.ListFirewallDenialsResponse.fromPartial({
  groups: [
    group("g-old", "old.example.com", "dev", NOW - 120_000),
    group("g-new", "new.example.com", "dev", NOW - 5_000, {
      requests: [
        egress.EgressRequest.fromPartial({ id: "r-1", reason: "npm install", requestedAtUnixNanos: ns(NOW) }),
      ],
    }),
  ],
  requests: [
    egress.EgressRequest.fromPartial({
      id: "r-2",
      agentName: "ci",
      dst: "pypi.org",
      port: 443,
      reason: "pip install",
      requestedAtUnixNanos: ns(NOW - 60_000),
    }),
  ],
});

void test("the list is newest first; requests show the agent's reason and are pending", () => {
  const items = triageItems(answer);
  assert.deepEqual(
    items.map((i) => [i.id, i.kind, i.requestId, i.why]),
    [
      ["g-new", "denial", "r-1", "asked: npm install"],
      ["r-2", "request", "r-2", "asked: pip install"],
      ["g-old", "denial", undefined, "proxy: no_rule"],
    ],
  );
});

void test("keys: move, approve for agent/project/everyone for 1h or always, dismiss, quit", () => {
  const view = new TriageView(() => NOW);
  assert.equal(view.key("a"), undefined, "nothing to approve in an empty list");
  view.update(answer);
  assert.equal(view.selected?.id, "g-new");
  assert.deepEqual(view.key("a"), {
    kind: "approve",
    item: view.selected,
    target: "agent",
    expiresAfterSeconds: TEMPORARY_SECONDS,
  });
  view.key("j");
  assert.equal(view.selected?.id, "r-2");
  assert.deepEqual(view.key("P"), {
    kind: "approve",
    item: view.selected,
    target: "project",
    expiresAfterSeconds: 0,
  });
  view.key("\x1b[B");
  view.key("\x1b[B");
  assert.equal(view.selected?.id, "g-old", "the cursor stops at the end");
  assert.deepEqual(view.key("G"), {
    kind: "approve",
    item: view.selected,
    target: "global",
    expiresAfterSeconds: 0,
  });
  assert.deepEqual(view.key("d"), { kind: "dismiss", item: view.selected });
  view.key("k");
  assert.equal(view.selected?.id, "r-2");
  assert.equal(view.key("x"), undefined);
  assert.deepEqual(view.key("q"), { kind: "quit" });
  assert.deepEqual(view.key("\x03"), { kind: "quit" });
});

void test("the cursor stays on its item when the list changes, and falls back inside it when the item goes", () => {
  const view = new TriageView(() => NOW);
  view.update(answer);
  view.key("j");
  view.key("j");
  assert.equal(view.selected?.id, "g-old");
  // A newer denial arrives on top: the cursor keeps pointing at g-old.
  view.update(
    egress.ListFirewallDenialsResponse.fromPartial({
      ...answer,
      groups: [...answer.groups, group("g-newest", "x.example.com", "dev", NOW)],
    }),
  );
  assert.equal(view.selected?.id, "g-old");
  // g-old approved elsewhere and gone: the cursor lands on the last item still there.
  view.update(
    egress.ListFirewallDenialsResponse.fromPartial({ groups: [group("g-a", "a.example.com", "dev", NOW)] }),
  );
  assert.equal(view.selected?.id, "g-a");
});

void test("render: header, help, one row per item with the cursor, the status line, cut to the screen", () => {
  const view = new TriageView(() => NOW);
  view.update(answer);
  view.setStatus("approved new.example.com:443 for web.dev for 1h: live");
  const lines = view.render(200, 40);
  assert.match(lines[0]!, /2 denied destination\(s\), 2 pending request\(s\), updated/);
  assert.match(lines[1]!, /a\/A allow agent 1h\/always/);
  const rows = lines.filter((l) => /^[> ] \S/.test(l) && !l.includes("DESTINATION"));
  assert.equal(rows.length, 3);
  assert.match(rows[0]!, /^> new\.example\.com\s+443\s+web\.dev\s+3\s+5s\s+asked: npm install$/);
  assert.match(rows[1]!, /^ {2}pypi\.org\s+443\s+ci\s+-\s+1m\s+asked: pip install$/);
  assert.match(rows[2]!, /^ {2}old\.example\.com\s+443\s+web\.dev\s+3\s+2m\s+proxy: no_rule$/);
  assert.equal(lines.at(-1), "approved new.example.com:443 for web.dev for 1h: live");
  for (const l of view.render(30, 6)) assert.ok(l.length <= 30, l);
  assert.equal(view.render(30, 6).length, 6);
  // A small screen still shows the selected line.
  view.key("j");
  view.key("j");
  assert.ok(view.render(80, 7).some((l) => l.startsWith("> old.example.com")));
});

void test("an empty list says so", () => {
  const view = new TriageView(() => NOW);
  view.update(egress.ListFirewallDenialsResponse.fromPartial({}));
  assert.ok(view.render(120, 20).some((l) => l.includes("nothing denied and nothing asked for")));
});
