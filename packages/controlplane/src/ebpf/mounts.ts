// Where cgroup2 and bpffs are mounted, from /proc/mounts: the eBPF manager needs both, and on a
// hybrid layout (HOST-NOTES) cgroup2 is at /sys/fs/cgroup/unified, not /sys/fs/cgroup.
import { readFileSync } from "node:fs";

/** The mount points the enforcement needs; undefined when not mounted. */
export interface BpfMounts {
  readonly cgroup2: string | undefined;
  readonly bpffs: string | undefined;
}

/** Reads the first cgroup2 and bpf mount points of `/proc/mounts` (or the file given). */
export function findBpfMounts(mountsFile = "/proc/mounts"): BpfMounts {
  let text: string;
  try {
    text = readFileSync(mountsFile, "utf8");
  } catch {
    return { cgroup2: undefined, bpffs: undefined };
  }
  return parseMounts(text);
}

/** Parses /proc/mounts text (fields: source, target, fstype, ...; octal escapes in paths). */
export function parseMounts(text: string): BpfMounts {
  let cgroup2: string | undefined;
  let bpffs: string | undefined;
  for (const line of text.split("\n")) {
    const [, target, fstype] = line.split(" ");
    if (target === undefined || fstype === undefined) continue;
    const path = target.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (fstype === "cgroup2") cgroup2 ??= path;
    else if (fstype === "bpf") bpffs ??= path;
  }
  return { cgroup2, bpffs };
}
