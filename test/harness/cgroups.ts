// Cleanup of the cgroups Docker's cgroupfs driver makes for a `--cgroup-parent`: on this host's
// hybrid layout (HOST-NOTES) it creates the parent, and a 64-hex directory per container, under
// the unified hierarchy and under every v1 hierarchy, and removes none of them itself.
import { existsSync, readdirSync, rmdirSync } from "node:fs";
import { join } from "node:path";
import { cgroup2Mount } from "./preconditions.js";

/**
 * Removes the cgroup parent `name` and its container cgroups under every hierarchy; true when all
 * are gone. A cgroup still populated is left for the next try, so call it from waitFor.
 */
export function removeCgroupParent(name: string): boolean {
  const unified = cgroup2Mount();
  const dirs = [
    ...(unified === undefined ? [] : [join(unified, name)]),
    ...readdirSync("/sys/fs/cgroup").map((h) => join("/sys/fs/cgroup", h, name)),
  ];
  for (const dir of dirs) {
    if (!existsSync(dir)) continue;
    for (const child of readdirSync(dir, { withFileTypes: true })) {
      if (child.isDirectory() && /^[0-9a-f]{64}$/.test(child.name)) {
        try {
          rmdirSync(join(dir, child.name));
        } catch {
          // still populated: dockerd's close killed it, the kernel frees it shortly
        }
      }
    }
    try {
      rmdirSync(dir);
    } catch {
      // not yet empty
    }
  }
  return dirs.every((d) => !existsSync(d));
}
