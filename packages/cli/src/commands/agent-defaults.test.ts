// The control plane's published default agent limits under `clawker run`'s flags: a real file in a
// temporary data dir, flags winning per limit, device defaults per whole disk, bad files refused.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { AGENT_LIMITS_FILE, hostDisks, readAgentLimitDefaults, withDefaults } from "./agent-defaults.js";

const SEED = {
  cpus: 0.1,
  memoryBytes: 512 << 20,
  pidsLimit: 0,
  deviceReadBps: 10 << 20,
  deviceWriteBps: 5 << 20,
  deviceReadIops: 1000,
  deviceWriteIops: 1000,
};

void test("the seed's defaults apply where no flag is given; a flag wins for its own limit", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "clawker-agent-limits-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, AGENT_LIMITS_FILE), JSON.stringify({ version: 1, ...SEED }));
  const { defaults, why } = readAgentLimitDefaults(dir);
  assert.equal(why, "");
  assert.deepEqual(defaults, SEED);
  const none = withDefaults({}, defaults, ["/dev/vda"]);
  assert.deepEqual(none, {
    nanoCpus: 100_000_000,
    memoryBytes: 512 << 20,
    deviceReadBps: [{ path: "/dev/vda", rate: 10 << 20 }],
    deviceWriteBps: [{ path: "/dev/vda", rate: 5 << 20 }],
    deviceReadIops: [{ path: "/dev/vda", rate: 1000 }],
    deviceWriteIops: [{ path: "/dev/vda", rate: 1000 }],
  });
  const some = withDefaults(
    { nanoCpus: 500_000_000, deviceWriteBps: [{ path: "/dev/sdb", rate: 1 }] },
    defaults,
    ["/dev/vda"],
  );
  assert.equal(some.nanoCpus, 500_000_000, "--cpus wins");
  assert.equal(some.memoryBytes, 512 << 20, "the default memory stays");
  assert.deepEqual(some.deviceWriteBps, [{ path: "/dev/sdb", rate: 1 }], "a given kind drops its defaults");
  assert.deepEqual(some.deviceReadBps, [{ path: "/dev/vda", rate: 10 << 20 }]);
});

void test("no file, a foreign file, a negative limit: no defaults, and why", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "clawker-agent-limits-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  assert.match(readAgentLimitDefaults(dir).why, /no default agent limits from the control plane .*ENOENT/);
  writeFileSync(join(dir, AGENT_LIMITS_FILE), JSON.stringify({ version: 2, ...SEED }));
  assert.match(readAgentLimitDefaults(dir).why, /not a version 1 limits file/);
  writeFileSync(join(dir, AGENT_LIMITS_FILE), JSON.stringify({ version: 1, ...SEED, cpus: -1 }));
  assert.match(readAgentLimitDefaults(dir).why, /cpus is not a number >= 0/);
  assert.equal(readAgentLimitDefaults(dir).defaults, undefined);
});

void test("host disks: whole disks with a node, no partitions, loops or ram disks", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "clawker-disks-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const dev = join(dir, "dev");
  mkdirSync(dev);
  const names = ["vda", "vda1", "sda", "sda2", "nvme0n1", "nvme0n1p1", "loop0", "ram0", "dm-0"];
  for (const n of names) writeFileSync(join(dev, n), "");
  writeFileSync(
    join(dir, "partitions"),
    "major minor  #blocks  name\n\n" +
      names.map((n, i) => ` 8 ${i} 100 ${n}`).join("\n") +
      "\n 8 99 1 gone\n",
  );
  assert.deepEqual(
    hostDisks(join(dir, "partitions"), dev).map((p) => p.slice(dev.length + 1)),
    ["vda", "sda", "nvme0n1", "dm-0"],
  );
});
