// The firewall commands' pure parts: the rule `add` sends, usage errors before anything is sent,
// bypass durations, scope filtering, the list table and the status forms. The commands against
// the real daemon are in test/e2e/cli-firewall.test.ts.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { admin } from "@clawker/proto";
import { COMMANDS } from "../cli.js";
import { parseFlags } from "../command-spec.js";
import { CliError, ExitCode } from "../exit-codes.js";
import { bypassSeconds } from "./firewall-agents.js";
import { addRequest, filterScope, rulesTable } from "./firewall-rules.js";
import { formatSeconds, scopeLabel } from "./firewall-shared.js";
import { statusJson, statusLines } from "./firewall-stack.js";

const spec = (words: string) => COMMANDS.find((c) => c.spec.words.join(" ") === words)!.spec;
const usageError = (e: unknown): boolean => e instanceof CliError && e.exitCode === ExitCode.usage;

describe("firewall add", () => {
  const add = (...args: string[]) => addRequest(parseFlags(spec("firewall add"), args));

  test("a bare destination is an allow with every default left to the control plane", () => {
    assert.deepEqual(add("registry.npmjs.org"), admin.EgressRule.fromPartial({ dst: "registry.npmjs.org" }));
  });

  test("--action is the rule's without --path and the path rule's with it (the rule then allows)", () => {
    assert.equal(add("evil.example", "--action", "deny").action, "deny");
    const r = add(
      "api.github.com",
      "--path",
      "/repos/",
      "--action",
      "deny",
      "--methods",
      "POST,put",
      "--methods",
      "DELETE",
    );
    assert.equal(r.action, "allow");
    assert.deepEqual(r.pathRules, [{ path: "/repos/", action: "deny", methods: ["POST", "put", "DELETE"] }]);
  });

  test("proto, port, path default and scope go on the wire as given", () => {
    const r = add(
      "db.internal",
      "--proto",
      "tcp",
      "--port",
      "5432",
      "--path-default",
      "deny",
      "--agent",
      "dev",
      "--project",
      "web",
    );
    assert.deepEqual(
      [r.proto, r.port, r.pathDefault, r.project, r.agentName],
      ["tcp", "5432", "deny", "web", "dev"],
    );
  });

  test("usage errors before anything is sent", () => {
    for (const args of [
      [],
      ["a.example", "b.example"],
      ["a.example", "--path", "/x"],
      ["a.example", "--methods", "GET"],
    ]) {
      assert.throws(() => add(...args), usageError, args.join(" "));
    }
  });
});

void test("bypass DURATION: whole seconds, at most an hour, none with --stop", () => {
  const parse = (...args: string[]) => bypassSeconds(parseFlags(spec("firewall bypass"), args));
  assert.equal(parse("5m", "--agent", "dev"), 300);
  assert.equal(parse("1500ms", "--agent", "dev"), 2, "rounded up: never shorter than asked");
  assert.equal(parse("60m", "--agent", "dev"), 3600);
  assert.equal(parse("--stop", "--agent", "dev"), undefined);
  for (const args of [["61m"], [], ["--stop", "5m"], ["abc"], ["5m", "6m"]]) {
    assert.throws(() => parse(...args, "--agent", "dev"), usageError, args.join(" "));
  }
});

const rule = (p: Partial<admin.EgressRule>): admin.EgressRule =>
  admin.EgressRule.fromPartial({ proto: "https", port: "443", action: "allow", ...p });

void test("scopes: labels, and list filters to exactly one scope", () => {
  const rules = [
    rule({ dst: "a.example" }),
    rule({ dst: "b.example", project: "web" }),
    rule({ dst: "c.example", project: "web", agentName: "dev" }),
    rule({ dst: "d.example", agentName: "solo" }),
  ];
  assert.deepEqual(rules.map(scopeLabel), ["global", "project:web", "agent:web.dev", "agent:solo"]);
  const only = (...args: string[]) =>
    filterScope(rules, parseFlags(spec("firewall list"), args)).map((r) => r.dst);
  assert.deepEqual(only(), ["a.example", "b.example", "c.example", "d.example"]);
  assert.deepEqual(only("--project", "web"), ["b.example"]);
  assert.deepEqual(only("--agent", "dev", "--project", "web"), ["c.example"]);
  assert.deepEqual(only("--agent", "solo"), ["d.example"]);
});

void test("the list table: a row per rule, path rules and the default under it, floor marked", () => {
  const text = rulesTable([
    rule({ dst: "registry.npmjs.org", floor: true }),
    rule({
      dst: "api.github.com",
      pathRules: [{ path: "/repos/", action: "allow", methods: ["GET", "HEAD"] }],
      pathDefault: "deny",
      project: "web",
    }),
  ]);
  assert.equal(
    text,
    [
      "SCOPE        DST                 PROTO  PORT  ACTION  NOTES",
      "global       registry.npmjs.org  https  443   allow   floor",
      "project:web  api.github.com      https  443   allow",
      "               /repos/                        allow   GET,HEAD",
      "               (path default)                 deny",
      "",
    ].join("\n"),
  );
});

void test("status: Go clawker's JSON keys plus cidr, containers and event drops; text with the time a bypass has left", () => {
  const s = admin.FirewallStatusResult.fromPartial({
    running: true,
    envoyHealth: true,
    ruleCount: 3,
    envoyIp: "172.20.0.1",
    cidr: "172.20.0.0/16",
    containers: [{ containerId: "ab".repeat(32), mode: "bypass", bypassSecondsLeft: 299, enforced: false }],
    eventSources: [
      { source: "dns", published: 12n, delivered: 12n },
      { source: "bpf" },
      { source: "proxy", published: 10n, delivered: 7n, droppedRateLimited: 2n, droppedUpstream: 1n },
    ],
  });
  assert.deepEqual(statusJson(s), {
    running: true,
    envoy_health: true,
    coredns_health: false,
    rule_count: 3,
    envoy_ip: "172.20.0.1",
    coredns_ip: "",
    network_id: "",
    cidr: "172.20.0.0/16",
    containers: [
      { container_id: "ab".repeat(32), mode: "bypass", bypass_seconds_left: 299, enforced: false },
    ],
    event_sources: [
      { source: "dns", published: 12, delivered: 12, dropped_rate_limited: 0, dropped_upstream: 0 },
      { source: "bpf", published: 0, delivered: 0, dropped_rate_limited: 0, dropped_upstream: 0 },
      { source: "proxy", published: 10, delivered: 7, dropped_rate_limited: 2, dropped_upstream: 1 },
    ],
  });
  assert.deepEqual(statusLines(s), [
    "Firewall:  running",
    "Proxy:     healthy (172.20.0.1)",
    "DNS gate:  not running",
    "Rules:     3",
    "Network:   172.20.0.0/16",
    "Container: abababababab bypass, 4m59s left (recorded only: no enrolment enforces it yet)",
    "Events:    dns 12 published, 0 dropped",
    "Events:    proxy 10 published, 3 dropped (2 rate-limited, 1 lost at the source)",
  ]);
  assert.deepEqual([formatSeconds(5), formatSeconds(90), formatSeconds(3600)], ["5s", "1m30s", "1h0m0s"]);
});
