import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { findExecutable } from "../supervisor/find-executable.js";
import { decideEbpf, type EbpfHostFacts } from "./availability.js";

const run = promisify(execFile);

const ready: EbpfHostFacts = {
  uid: 0,
  mounts: { cgroup2: "/sys/fs/cgroup", bpffs: "/sys/fs/bpf" },
  manager: "/usr/local/bin/ebpf-manager",
  cgroup: "/system.slice/clawker-controlplane.service",
};

test("auto: on only as root with cgroup2, bpffs and the manager; otherwise off, saying why", () => {
  const cases: [string, Partial<EbpfHostFacts>, boolean, RegExp][] = [
    ["everything there", {}, true, /root with cgroup2 and bpffs, manager \/usr\/local\/bin\/ebpf-manager/],
    ["not root", { uid: 1000 }, false, /not root \(uid 1000\)/],
    ["no uid at all", { uid: undefined }, false, /not root \(uid unknown\)/],
    ["no cgroup2", { mounts: { cgroup2: undefined, bpffs: "/sys/fs/bpf" } }, false, /no cgroup2 mount/],
    ["no bpffs", { mounts: { cgroup2: "/sys/fs/cgroup", bpffs: undefined } }, false, /bpffs is not mounted/],
    ["no manager", { manager: undefined }, false, /ebpf-manager binary was not found/],
    [
      "a container's own cgroup namespace",
      { cgroup: "/" },
      false,
      /root of its cgroup namespace.*--cgroupns host/,
    ],
    ["own cgroup unknown or proxyCgroup set", { cgroup: undefined }, true, /root with cgroup2/],
  ];
  for (const [what, facts, enabled, reason] of cases) {
    const d = decideEbpf("auto", () => ({ ...ready, ...facts }));
    assert.equal(d.enabled, enabled, what);
    assert.match(d.reason, reason, what);
    assert.equal(d.setting, "auto");
  }
});

test("an explicit setting is never second-guessed (true stays on, false stays off)", () => {
  let looked = false;
  const facts = (): EbpfHostFacts => ((looked = true), { ...ready, uid: 1000 });
  assert.deepEqual(decideEbpf(true, facts), { enabled: true, setting: true, reason: "ebpf.enabled is true" });
  assert.deepEqual(decideEbpf(false, facts), {
    enabled: false,
    setting: false,
    reason: "ebpf.enabled is false",
  });
  assert.equal(looked, false, "the host is only looked at for auto");
});

test("findExecutable: a path must be executable; a name is looked up on PATH", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "clawker-exe-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const exe = join(dir, "ebpf-manager");
  writeFileSync(exe, "#!/bin/sh\n");
  chmodSync(exe, 0o644);
  assert.equal(findExecutable(exe), undefined, "not executable");
  chmodSync(exe, 0o755);
  assert.equal(findExecutable(exe), exe);
  assert.equal(findExecutable("ebpf-manager", { PATH: `/nonexistent:${dir}` }), exe);
  assert.equal(findExecutable("ebpf-manager", { PATH: "/nonexistent" }), undefined);
  assert.equal(findExecutable("ebpf-manager", {}), undefined);
});

test("auto on this host as a second user (nobody): off, saying it is not root", async (t) => {
  if (process.getuid?.() !== 0) {
    if (process.env["CI"]) assert.fail("needs root to run as nobody");
    t.skip("needs root to run as nobody");
    return;
  }
  // The real facts of a real non-root process: the module is loaded by tsx, as the tests are.
  const script = [
    `import { decideEbpf, hostFacts } from ${JSON.stringify(join(import.meta.dirname, "availability.ts"))};`,
    `console.log(JSON.stringify(decideEbpf("auto", () => hostFacts("/bin/true"))));`,
  ].join("\n");
  const { stdout } = await run(
    "runuser",
    ["-u", "nobody", "--", process.execPath, "--import", "tsx", "--input-type=module", "-e", script],
    { cwd: join(import.meta.dirname, "../../../.."), timeout: 60_000 },
  );
  const d = JSON.parse(stdout) as { enabled: boolean; reason: string };
  assert.equal(d.enabled, false);
  assert.match(d.reason, /^not root \(uid \d+\)/);
});
