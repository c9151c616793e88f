// Where agent containers live in the cgroup2 tree, for each of Docker's cgroup drivers. The same
// parent name means `/clawker` to the cgroupfs driver and the slice `clawker.slice` to the systemd
// driver; the eBPF manager needs the path under the cgroup2 mount either way.

/** Docker's cgroup drivers (`GET /info` field `CgroupDriver`). */
export type CgroupDriver = "cgroupfs" | "systemd";

/** What one parent name means under one driver. */
export interface CgroupLayout {
  readonly driver: CgroupDriver;
  /** What `docker run --cgroup-parent` takes (`/clawker`, or `clawker.slice`). */
  readonly dockerParent: string;
  /** The parent's path relative to the cgroup2 mount (`clawker`, or `clawker.slice`). */
  readonly parentPath: string;
  /** A container's cgroup path under the parent, relative to the cgroup2 mount. */
  containerPath(containerId: string): string;
  /** Where Docker puts a container started without `--cgroup-parent`. */
  defaultContainerPath(containerId: string): string;
}

/** A parent name: path segments of letters, digits, `_`, `-`, `.`; no `..`, no empty segment. */
const NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]*(\/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$/;
const CONTAINER_ID = /^[0-9a-f]{64}$/;

/** A parent name that cannot be placed in the cgroup tree. */
export class CgroupLayoutError extends Error {
  override readonly name: string = "CgroupLayoutError";
  /** Stable cause. */
  readonly reason = "invalid_cgroup_parent" as const;
}

/** Reads Docker's `CgroupDriver`; anything but `systemd` is the cgroupfs layout. */
export function cgroupDriverOf(info: { readonly CgroupDriver?: unknown }): CgroupDriver {
  return info.CgroupDriver === "systemd" ? "systemd" : "cgroupfs";
}

/**
 * The layout of parent `name` (e.g. `clawker`) under `driver`. Under systemd a name becomes a
 * slice: `clawker` -> `clawker.slice`, `clawker-agents` -> `clawker.slice/clawker-agents.slice`
 * (systemd nests a slice in the slice its dashes name), containers `docker-<id>.scope` in it.
 */
export function cgroupLayout(driver: CgroupDriver, name: string): CgroupLayout {
  const bare = name.replace(/^\/+/, "").replace(/\/+$/, "");
  if (!NAME.test(bare) || bare.split("/").some((s) => s === "." || s === "..")) {
    throw new CgroupLayoutError(
      `cgroup parent ${JSON.stringify(name)} is not a cgroup name (letters, digits, '_', '-', '.', '/')`,
    );
  }
  if (driver === "cgroupfs") {
    return {
      driver,
      dockerParent: `/${bare}`,
      parentPath: bare,
      containerPath: (id) => `${bare}/${checkId(id)}`,
      defaultContainerPath: (id) => `docker/${checkId(id)}`,
    };
  }
  if (bare.includes("/")) {
    throw new CgroupLayoutError(
      `cgroup parent ${JSON.stringify(name)}: the systemd driver takes a slice name, not a path`,
    );
  }
  const slice = bare.endsWith(".slice") ? bare : `${bare}.slice`;
  const parentPath = slicePath(slice);
  return {
    driver,
    dockerParent: slice,
    parentPath,
    containerPath: (id) => `${parentPath}/docker-${checkId(id)}.scope`,
    defaultContainerPath: (id) => `system.slice/docker-${checkId(id)}.scope`,
  };
}

/** systemd's slice nesting: `a-b-c.slice` lives in `a.slice/a-b.slice/a-b-c.slice`. */
function slicePath(slice: string): string {
  const unit = slice.slice(0, -".slice".length);
  if (unit === "" || unit.startsWith("-") || unit.endsWith("-") || unit.includes("--")) {
    throw new CgroupLayoutError(`slice ${JSON.stringify(slice)} is not a valid systemd slice name`);
  }
  const parts = unit.split("-");
  return parts.map((_, i) => `${parts.slice(0, i + 1).join("-")}.slice`).join("/");
}

function checkId(id: string): string {
  if (!CONTAINER_ID.test(id)) throw new CgroupLayoutError(`not a full container id: ${JSON.stringify(id)}`);
  return id;
}
