import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createSocket } from "node:dgram";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { waitFor } from "@clawker/test-support";
import { pino } from "pino";
import { DecisionLog, parseDecisionLine, readSocketDrops, type ProxyDecision } from "./decision-log.js";

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

describe("the kernel's drops at the decision socket", () => {
  test("a flood the socket cannot hold: every line is either received or counted as dropped", async (t) => {
    let received = 0;
    let reported = 0;
    const log = new DecisionLog({
      onDecision: () => received++,
      onDropped: (n) => (reported += n),
      log: pino({ level: "silent" }),
      // The smallest buffer the kernel allows, so a few lines fill it.
      recvBufferSize: 1,
      dropPollMs: 60_000,
    });
    const port = await log.start();
    t.after(() => log.close());
    const SENT = 2000;
    // A real child process sends while this process is blocked in execFileSync: nothing reads the
    // socket, so the kernel must drop what its buffer cannot hold (no timing involved).
    const script = `
      const s = require("node:dgram").createSocket("udp4");
      const line = ${JSON.stringify(tlsLine(log.token))};
      let i = 0;
      const next = (err) => {
        if (err) throw err;
        if (i++ === ${SENT}) return s.close();
        s.send(line, ${port}, "127.0.0.1", next);
      };
      next();`;
    execFileSync(process.execPath, ["-e", script], { stdio: "inherit" });
    await waitFor(() => received + log.countKernelDrops() === SENT, {
      timeoutMs: 30_000,
      what: "every line received or counted",
    });
    const dropped = log.countKernelDrops();
    assert.ok(dropped > 0, `the kernel dropped nothing (received ${received})`);
    assert.ok(received > 0, "nothing was received");
    assert.equal(received + dropped, SENT);
    assert.equal(reported, dropped, "onDropped was told of every drop, once");
  });

  test("the drops column is read from the socket's own row, never a peer's remote address", (t) => {
    const dir = mkdtempSync(join(tmpdir(), "udp-table-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const table = join(dir, "udp");
    const head =
      "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n";
    const row = (sl: number, local: string, rem: string, drops: number): string =>
      `${String(sl).padStart(5)}: ${local} ${rem} 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 ${drops}\n`;
    writeFileSync(
      table,
      head + row(1, "0100007F:A001", "0100007F:BEEF", 7) + row(2, "0100007F:BEEF", "00000000:0000", 1234),
    );
    assert.equal(readSocketDrops(table, "0100007F:BEEF"), 1234);
    assert.equal(readSocketDrops(table, "0100007F:0001"), undefined);
    assert.equal(readSocketDrops(join(dir, "absent"), "0100007F:BEEF"), undefined);
  });
});
