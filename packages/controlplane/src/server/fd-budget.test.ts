// The open-file limit as /proc reports it, and the connection caps sized from it.
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  listenerCaps,
  parseOpenFileLimit,
  processListenerCaps,
  readOpenFileLimit,
  totalConnections,
} from "./fd-budget.js";

const LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            1024                 524288               files
Max locked memory         8388608              8388608              bytes
`;

void test("parses the Max open files row, unlimited included; garbage is undefined", () => {
  assert.deepEqual(parseOpenFileLimit(LIMITS), { soft: 1024, hard: 524288 });
  assert.deepEqual(
    parseOpenFileLimit("Max open files            unlimited            unlimited            files\n"),
    { soft: Infinity, hard: Infinity },
  );
  assert.equal(parseOpenFileLimit("Max open files  lots  more  files\n"), undefined);
  assert.equal(parseOpenFileLimit(""), undefined);
  assert.equal(readOpenFileLimit("/nonexistent/limits"), undefined);
});

void test("this process: node raised the soft limit to the hard one, and the caps follow it", () => {
  const own = readOpenFileLimit();
  assert.ok(own !== undefined, "/proc/self/limits is readable on Linux");
  assert.equal(own.soft, own.hard, "node raises the soft RLIMIT_NOFILE to the hard limit at start");
  assert.equal(processListenerCaps().caps.openFiles, own.soft);
});

void test("caps by limit: every connection cap together stays under the limit minus the reserve", () => {
  const table: Array<[number, Partial<ReturnType<typeof listenerCaps>>]> = [
    [256, { reserved: 128, handshakes: 16, healthz: 8, admin: 16, agent: 32 }],
    [1024, { reserved: 256, handshakes: 96, healthz: 48, admin: 96, agent: 192 }],
    [20_000, { reserved: 1024, handshakes: 1024, healthz: 256, admin: 1024, agent: 4096 }],
    [1 << 20, { reserved: 1024, handshakes: 1024, healthz: 256, admin: 1024, agent: 4096 }],
  ];
  for (const [limit, expected] of table) {
    const caps = listenerCaps(limit);
    for (const [k, v] of Object.entries(expected))
      assert.equal(caps[k as keyof typeof caps], v, `limit ${limit}: ${k}`);
    assert.ok(
      totalConnections(caps) + caps.reserved <= limit,
      `limit ${limit}: caps ${totalConnections(caps)} + reserve ${caps.reserved}`,
    );
  }
  assert.equal(listenerCaps(Infinity).openFiles, 1 << 20, "unlimited is treated as large, not as zero");
});
