// removeEbpfParent against the real ebpf-manager on the real kernel: a manager attached on a
// private parent and SIGKILLed (as `docker rm --force` ends a control-plane container: its pins
// stay by design) leaves pins and attached programs; the teardown leaves neither, nor the
// parent's cgroups. Needs root, cgroup2, bpffs, bpftool and the manager's build tools.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { test } from "node:test";
import { buildOnce, bin, ensureBpffs } from "../../packages/ebpf-manager/test/fixture.js";
import { attachedPrograms, ebpfParentLeftovers, privateEbpfParent, removeEbpfParent } from "./ebpf-parent.js";
import { bpffs, cgroup2, cgroup2Mount, command, requires, root } from "./preconditions.js";

void test("removeEbpfParent leaves no pins, no programs on the parent and no cgroups after a killed manager", async (t) => {
  ensureBpffs();
  if (!requires(t, root, cgroup2, bpffs, command("bpftool"), command("make"), command("clang"))) return;
  await buildOnce();
  const parent = privateEbpfParent("t");
  t.after(() => removeEbpfParent(parent).catch(() => undefined));
  const dir = mkdtempSync(join(tmpdir(), "ebpf-parent-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const cgroupDir = join(cgroup2Mount()!, parent.name);
  mkdirSync(cgroupDir);
  const defaultParent = join(cgroup2Mount()!, "clawker");
  const defaultBefore = await attachedPrograms(defaultParent);

  const child = spawn(
    bin.manager,
    [
      "serve",
      "--socket",
      join(dir, "manager.sock"),
      "--pin-dir",
      parent.pinDir,
      "--cgroup-parent",
      parent.name,
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout }).on("line", (l) => l.includes('"ready"') && resolve());
    void exited.then(() => reject(new Error(`manager exited: ${stderr}`)));
  });
  child.kill("SIGKILL");
  await exited;

  const held = await ebpfParentLeftovers(parent);
  assert.equal(held.pinDir, true, "the killed manager's pins stay");
  assert.ok(held.programs > 0, "its programs stay attached on the parent");
  assert.ok(held.cgroups.includes(cgroupDir));

  await removeEbpfParent(parent);
  assert.deepEqual(await ebpfParentLeftovers(parent), { pinDir: false, cgroups: [], programs: 0 });
  // Nothing of it went to the default parent.
  assert.equal(await attachedPrograms(defaultParent), defaultBefore);
  // Idempotent.
  await removeEbpfParent(parent);
});
