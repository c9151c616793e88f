import assert from "node:assert/strict";
import { test } from "node:test";
import { cgroupDriverOf, cgroupLayout, CgroupLayoutError } from "./cgroup-layout.js";
import { parseMounts } from "./mounts.js";

const ID = "a".repeat(64);

test("cgroupfs: the parent is a path, containers are <parent>/<id>", () => {
  for (const name of ["clawker", "/clawker", "clawker/"]) {
    const l = cgroupLayout("cgroupfs", name);
    assert.equal(l.dockerParent, "/clawker");
    assert.equal(l.parentPath, "clawker");
    assert.equal(l.containerPath(ID), `clawker/${ID}`);
    assert.equal(l.defaultContainerPath(ID), `docker/${ID}`);
  }
  assert.equal(cgroupLayout("cgroupfs", "a/b").containerPath(ID), `a/b/${ID}`);
});

test("systemd: the parent is a slice, nested by its dashes; containers are docker-<id>.scope", () => {
  const table: [string, string, string][] = [
    ["clawker", "clawker.slice", "clawker.slice"],
    ["clawker.slice", "clawker.slice", "clawker.slice"],
    ["clawker-agents", "clawker-agents.slice", "clawker.slice/clawker-agents.slice"],
    ["a-b-c.slice", "a-b-c.slice", "a.slice/a-b.slice/a-b-c.slice"],
  ];
  for (const [name, docker, path] of table) {
    const l = cgroupLayout("systemd", name);
    assert.equal(l.dockerParent, docker, name);
    assert.equal(l.parentPath, path, name);
    assert.equal(l.containerPath(ID), `${path}/docker-${ID}.scope`);
  }
  assert.equal(
    cgroupLayout("systemd", "clawker").defaultContainerPath(ID),
    `system.slice/docker-${ID}.scope`,
  );
});

test("names that are not cgroup names, and short ids, are refused", () => {
  for (const name of ["", "..", "a/../b", "a b", "a\nb", "./a", "a//b"]) {
    assert.throws(() => cgroupLayout("cgroupfs", name), CgroupLayoutError, JSON.stringify(name));
  }
  for (const name of ["a/b", "-a", "a--b", "a-.slice", ".slice"]) {
    assert.throws(() => cgroupLayout("systemd", name), CgroupLayoutError, JSON.stringify(name));
  }
  assert.throws(() => cgroupLayout("cgroupfs", "clawker").containerPath("abc"), CgroupLayoutError);
  assert.throws(() => cgroupLayout("cgroupfs", "clawker").containerPath(`../${ID}`), CgroupLayoutError);
});

test("the driver comes from Docker's /info; anything but systemd is cgroupfs", () => {
  assert.equal(cgroupDriverOf({ CgroupDriver: "systemd" }), "systemd");
  assert.equal(cgroupDriverOf({ CgroupDriver: "cgroupfs" }), "cgroupfs");
  assert.equal(cgroupDriverOf({}), "cgroupfs");
});

test("mounts: the first cgroup2 and bpf mount points, octal escapes decoded", () => {
  const text = [
    "sysfs /sys sysfs rw 0 0",
    "tmpfs /sys/fs/cgroup tmpfs ro 0 0",
    "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0",
    "cgroup2 /other cgroup2 rw 0 0",
    "bpf /sys/fs/bpf\\040x bpf rw 0 0",
  ].join("\n");
  assert.deepEqual(parseMounts(text), { cgroup2: "/sys/fs/cgroup/unified", bpffs: "/sys/fs/bpf x" });
  assert.deepEqual(parseMounts("proc /proc proc rw 0 0\n"), { cgroup2: undefined, bpffs: undefined });
});
