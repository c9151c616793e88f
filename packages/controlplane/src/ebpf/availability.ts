// Whether the daemon runs the eBPF enforcement: `ebpf.enabled` (true, false or "auto") resolved
// against this host. "auto" turns it on only where it can work (root, cgroup2 and bpffs mounted,
// the manager binary present) and otherwise off with the reason; the firewall then refuses to come
// up (`not_enforced`), so nothing ever reports enforcement it does not have.
import { readFileSync } from "node:fs";
import { findExecutable } from "../supervisor/find-executable.js";
import { findBpfMounts, type BpfMounts } from "./mounts.js";

/** The `ebpf.enabled` setting. */
export type EbpfSetting = boolean | "auto";

/** The outcome: on or off, and a short reason for the log line. */
export interface EbpfDecision {
  readonly enabled: boolean;
  readonly setting: EbpfSetting;
  readonly reason: string;
}

/** What "auto" looks at (tests pass their own). */
export interface EbpfHostFacts {
  /** The effective uid; undefined where there is none (not POSIX). */
  readonly uid: number | undefined;
  readonly mounts: BpfMounts;
  /** The manager binary's path, or undefined when it is not there (or not executable). */
  readonly manager: string | undefined;
  /**
   * This process's cgroup2 path as its namespace shows it (`0::<path>` of /proc/self/cgroup), or
   * undefined when unknown or when `ebpf.proxyCgroup` names the proxy's cgroup instead.
   */
  readonly cgroup: string | undefined;
}

/**
 * Looks at this host: process.geteuid, /proc/mounts, the manager by path or on PATH, and this
 * process's cgroup unless `proxyCgroup` is configured (then the daemon's own does not matter).
 */
export function hostFacts(
  manager: string,
  proxyCgroup?: string,
  env: NodeJS.ProcessEnv = process.env,
): EbpfHostFacts {
  return {
    uid: process.geteuid?.(),
    mounts: findBpfMounts(),
    manager: findExecutable(manager, env),
    cgroup: proxyCgroup === undefined ? ownCgroupPath() : undefined,
  };
}

/** The `0::<path>` entry of /proc/self/cgroup, or undefined. */
function ownCgroupPath(): string | undefined {
  try {
    const line = readFileSync("/proc/self/cgroup", "utf8")
      .split("\n")
      .find((l) => l.startsWith("0::"));
    return line?.slice(3);
  } catch {
    return undefined;
  }
}

/**
 * Resolves the setting. `true` stays on whatever the host (start-up then fails with the
 * Enforcement's own reason: an explicit choice never silently degrades); `false` stays off.
 */
export function decideEbpf(setting: EbpfSetting, facts: () => EbpfHostFacts): EbpfDecision {
  if (setting === true) return { enabled: true, setting, reason: "ebpf.enabled is true" };
  if (setting === false) return { enabled: false, setting, reason: "ebpf.enabled is false" };
  const f = facts();
  const missing =
    f.uid !== 0
      ? `not root (uid ${f.uid ?? "unknown"}): loading BPF needs CAP_SYS_ADMIN and CAP_NET_ADMIN`
      : f.mounts.cgroup2 === undefined
        ? "no cgroup2 mount"
        : f.mounts.bpffs === undefined
          ? "bpffs is not mounted (mount -t bpf bpf /sys/fs/bpf)"
          : f.manager === undefined
            ? "the ebpf-manager binary was not found (ebpf.manager)"
            : // The proxy's SO_ORIGINAL_DST hook goes on the daemon's own cgroup, opened through
              // the cgroup2 mount: seen as "/" (a container's private cgroup namespace, or the
              // host's root cgroup) that is the host's root cgroup, i.e. every process on it.
              f.cgroup === "/"
              ? "the daemon is in the root of its cgroup namespace (a container needs --cgroupns host; or set ebpf.proxyCgroup)"
              : undefined;
  if (missing !== undefined) return { enabled: false, setting, reason: missing };
  return { enabled: true, setting, reason: `root with cgroup2 and bpffs, manager ${f.manager}` };
}
