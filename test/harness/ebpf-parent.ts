// A private agents' cgroup parent for anything that runs `controlplane up --container` (or the
// ebpf-manager) with eBPF on, and its removal: the machine is shared, and programs left attached
// on the default parent `clawker` steer every later agent under it (fail closed by design), so
// its agents cannot register. The container's pins outlive it (`docker rm --force` kills the
// daemon), so the teardown flushes them with the manager, then removes the parent's cgroups.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { bin } from "../../packages/ebpf-manager/test/fixture.js";
import { removeCgroupParent } from "./cgroups.js";
import { bpffsMount, cgroup2Mount } from "./preconditions.js";
import { waitFor } from "./wait-for.js";

const run = promisify(execFile);

/** A parent of its own: pass `name` to `controlplane up --container --cgroup-parent`. */
export interface EbpfParent {
  /** The cgroup name (never `clawker`), also the pin dir's name. */
  readonly name: string;
  /** Where the manager pins its programs and maps for this parent. */
  readonly pinDir: string;
}

/** A fresh parent name for one run, `clawker-<tag><pid>-<hex>`. */
export function privateEbpfParent(tag: string): EbpfParent {
  const name = `clawker-${tag}${process.pid}-${randomBytes(3).toString("hex")}`;
  return { name, pinDir: join(bpffsMount() ?? "/sys/fs/bpf", name) };
}

/** What of a parent is still on the machine; all empty after removeEbpfParent. */
export interface EbpfParentLeftovers {
  readonly pinDir: boolean;
  /** The parent's cgroup directories still present (unified and v1 hierarchies). */
  readonly cgroups: readonly string[];
  /** Programs attached on the parent's unified cgroup (bpftool cgroup show). */
  readonly programs: number;
}

/** Looks for the parent's pins, cgroups and attached programs. */
export async function ebpfParentLeftovers(parent: EbpfParent): Promise<EbpfParentLeftovers> {
  const unified = cgroup2Mount();
  const dirs = [
    ...(unified === undefined ? [] : [join(unified, parent.name)]),
    ...readdirSync("/sys/fs/cgroup").map((h) => join("/sys/fs/cgroup", h, parent.name)),
  ];
  const cgroups = [...new Set(dirs)].filter((d) => existsSync(d));
  return {
    pinDir: existsSync(parent.pinDir),
    cgroups,
    programs: unified === undefined ? 0 : await attachedPrograms(join(unified, parent.name)),
  };
}

/** Programs attached on one cgroup (0 when it does not exist). */
export async function attachedPrograms(cgroupDir: string): Promise<number> {
  if (!existsSync(cgroupDir)) return 0;
  const { stdout } = await run("bpftool", ["cgroup", "show", cgroupDir, "--json"]);
  // bpftool prints nothing at all for a cgroup without programs.
  return stdout.trim() === "" ? 0 : (JSON.parse(stdout) as unknown[]).length;
}

/**
 * Flushes the parent's pins (the manager's `flush-all`: links detach, maps and programs go), then
 * removes the pin dir and the parent's cgroups; throws when anything is left after 10 s.
 * Idempotent. Call it after the container (or manager) is gone.
 */
export async function removeEbpfParent(parent: EbpfParent): Promise<void> {
  if (parent.name === "clawker") throw new Error("refusing to remove the default agents' parent");
  if (existsSync(parent.pinDir)) {
    await run(bin.manager, ["flush-all", "--pin-dir", parent.pinDir]);
    rmSync(parent.pinDir, { recursive: true, force: true });
  }
  await waitFor(() => removeCgroupParent(parent.name), {
    what: `cgroup parent ${parent.name} removed`,
    timeoutMs: 10_000,
  });
  const left = await ebpfParentLeftovers(parent);
  if (left.pinDir || left.cgroups.length > 0 || left.programs > 0) {
    throw new Error(`cgroup parent ${parent.name} left behind: ${JSON.stringify(left)}`);
  }
}
