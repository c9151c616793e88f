import assert from "node:assert/strict";
import { createSocket } from "node:dgram";
import { describe, test } from "node:test";
import { pino } from "pino";
import { DecisionLog, parseDecisionLine, type ProxyDecision } from "./decision-log.js";

const tlsLine = (token: string, over: Record<string, unknown> = {}): string =>
  JSON.stringify({
    k: token,
    layer: "tls",
    ts: 1_800_000_000,
    src: "10.9.0.3",
    sport: 40000,
    agent: "alpha",
    project: "-",
    name: "api.example.com",
    port: "443",
    verdict: "pass",
    reason: "-",
    rule: "r1",
    upstream: "93.184.216.34",
    server: "s1",
    duration_ms: 12,
    bytes_in: 100,
    bytes_out: 200,
    termination: "--",
    ...over,
  });

describe("parseDecisionLine", () => {
  test("an allowed connection; `-` (unset) fields become undefined", () => {
    const d = parseDecisionLine(tlsLine("t"));
    assert.ok(d !== undefined);
    assert.equal(d.verdict, "allow");
    assert.equal(d.reason, undefined);
    assert.equal(d.project, undefined);
    assert.equal(d.port, 443);
    assert.equal(d.upstream, "93.184.216.34");
  });

  test("a reason or a deny verdict makes a denial; no verdict at all is no_rule", () => {
    assert.equal(
      parseDecisionLine(tlsLine("t", { reason: "forbidden_destination" }))?.reason,
      "forbidden_destination",
    );
    assert.equal(
      parseDecisionLine(tlsLine("t", { verdict: "deny", reason: "rule_denies" }))?.verdict,
      "deny",
    );
    const none = parseDecisionLine(tlsLine("t", { verdict: "-" }));
    assert.equal(none?.verdict, "deny");
    assert.equal(none?.reason, "no_rule");
  });

  test("malformed lines are refused", () => {
    for (const line of ["", "{", "[]", JSON.stringify({ layer: "smtp" }), "null"]) {
      assert.equal(parseDecisionLine(line), undefined, line);
    }
  });
});

describe("DecisionLog", () => {
  test("only lines that start with this run's token reach onDecision", async (t) => {
    const got: ProxyDecision[] = [];
    let first!: () => void;
    const arrived = new Promise<void>((resolve) => (first = resolve));
    const log = new DecisionLog({
      onDecision: (d) => {
        got.push(d);
        first();
      },
      log: pino({ level: "silent" }),
    });
    const port = await log.start();
    t.after(() => log.close());
    const sender = createSocket("udp4");
    t.after(() => new Promise<void>((r) => sender.close(() => r())));
    const send = (line: string): Promise<void> =>
      new Promise((resolve, reject) =>
        sender.send(line, port, "127.0.0.1", (err) => (err ? reject(err) : resolve())),
      );
    await send(tlsLine("0".repeat(32), { name: "forged.example.com" }));
    await send("Server be_pass/s1 is UP");
    await send(tlsLine(log.token));
    // Loopback datagrams arrive in order: the forged line, had it counted, would be first.
    await arrived;
    assert.deepEqual(
      got.map((d) => d.name),
      ["api.example.com"],
    );
    await log.close();
    await log.close();
  });
});
