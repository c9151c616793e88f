// The control plane's default agent limits for `clawker run` (issue 13): its config's
// `agentLimits`, which the daemon publishes at every start as `<dataDir>/agent-limits.json`.
// Each flag of `run` overrides its default; a device default applies to every whole disk of the
// host. No file (no control plane started with this data dir, or no permission): no defaults.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { AgentLimits, DeviceRate } from "@clawker/adminclient";

/** The published defaults (0 = none), as the control plane's config spells them. */
export interface AgentLimitDefaults {
  readonly cpus: number;
  readonly memoryBytes: number;
  readonly pidsLimit: number;
  readonly deviceReadBps: number;
  readonly deviceWriteBps: number;
  readonly deviceReadIops: number;
  readonly deviceWriteIops: number;
}

/** The file's name in the control plane's data dir. */
export const AGENT_LIMITS_FILE = "agent-limits.json";

const KEYS = [
  "cpus",
  "memoryBytes",
  "pidsLimit",
  "deviceReadBps",
  "deviceWriteBps",
  "deviceReadIops",
  "deviceWriteIops",
] as const;

/** Reads the defaults from `dataDir`; `why` says why there are none. Malformed: none, and why. */
export function readAgentLimitDefaults(dataDir: string): { defaults?: AgentLimitDefaults; why: string } {
  const file = join(dataDir, AGENT_LIMITS_FILE);
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    return { why: `no default agent limits from the control plane (${file}: ${errCode(err)})` };
  }
  const v = value as Record<string, unknown>;
  if (typeof value !== "object" || value === null || v["version"] !== 1)
    return { why: `${file} is not a version 1 limits file` };
  for (const k of KEYS) {
    const n = v[k];
    if (typeof n !== "number" || !Number.isFinite(n) || n < 0)
      return { why: `${file}: ${k} is not a number >= 0` };
  }
  return {
    defaults: Object.fromEntries(KEYS.map((k) => [k, v[k] as number])) as unknown as AgentLimitDefaults,
    why: "",
  };
}

/**
 * `flags` (what the user gave) over `defaults`: a limit given by a flag wins; a device kind given
 * by any flag drops that kind's defaults. `disks`: the host's whole disks (`/dev/vda`, ...).
 */
export function withDefaults(
  flags: AgentLimits,
  defaults: AgentLimitDefaults,
  disks: readonly string[],
): AgentLimits {
  const perDisk = (given: readonly DeviceRate[], rate: number): DeviceRate[] =>
    given.length > 0 || rate === 0 ? [...given] : disks.map((path) => ({ path, rate }));
  return {
    ...(flags.nanoCpus !== undefined
      ? { nanoCpus: flags.nanoCpus }
      : defaults.cpus > 0
        ? { nanoCpus: Math.round(defaults.cpus * 1e9) }
        : {}),
    ...(flags.memoryBytes !== undefined
      ? { memoryBytes: flags.memoryBytes }
      : defaults.memoryBytes > 0
        ? { memoryBytes: defaults.memoryBytes }
        : {}),
    ...(flags.pidsLimit !== undefined
      ? { pidsLimit: flags.pidsLimit }
      : defaults.pidsLimit > 0
        ? { pidsLimit: defaults.pidsLimit }
        : {}),
    deviceReadBps: perDisk(flags.deviceReadBps ?? [], defaults.deviceReadBps),
    deviceWriteBps: perDisk(flags.deviceWriteBps ?? [], defaults.deviceWriteBps),
    deviceReadIops: perDisk(flags.deviceReadIops ?? [], defaults.deviceReadIops),
    deviceWriteIops: perDisk(flags.deviceWriteIops ?? [], defaults.deviceWriteIops),
  };
}

/** The host's whole disks with a device node (`/proc/partitions`, partitions left out). */
export function hostDisks(procPartitions = "/proc/partitions", dev = "/dev"): string[] {
  let text: string;
  try {
    text = readFileSync(procPartitions, "utf8");
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const line of text.split("\n").slice(2)) {
    const name = line.trim().split(/\s+/)[3];
    if (name === undefined || name === "") continue;
    // Throttles take a disk, not a partition (sda1, nvme0n1p1); loop and ram devices are not storage.
    if (/^(loop|ram|zram)\d+$/.test(name) || /^(nvme\d+n\d+p|mmcblk\d+p)\d+$/.test(name)) continue;
    if (/^[a-z]+\d+$/.test(name) && !/^(nvme|mmcblk)/.test(name)) continue;
    if (existsSync(join(dev, name))) out.push(join(dev, name));
  }
  return out;
}

function errCode(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? (err instanceof Error ? err.message : "unreadable");
}
