// Finding (and removing) what a private dockerd run may leave on the machine: processes, mounts,
// the netns, the temp dir. close() uses it to clean up; tests use it to prove nothing is left.
import { execFile } from "node:child_process";
import { readdir, readFile, readlink, rm, stat } from "node:fs/promises";
import { promisify } from "node:util";
import { isAlive, waitFor } from "@clawker/test-support";
import { netnsPath } from "./netns.js";

const execFileP = promisify(execFile);

/** Re-exported for the tests that import it from here (the one copy is in @clawker/test-support). */
export { isAlive };

/** Identifies one run: its temp dir, netns name and that netns's inode (if known). */
export interface RunRef {
  readonly dir: string | undefined;
  readonly netnsName: string;
  readonly netnsInode: number | undefined;
}

/** A process that belongs to a run. */
export interface StrayProcess {
  readonly pid: number;
  readonly command: string;
  /** State, PPid and Threads from /proc/<pid>/status, so a report says what kind of leftover. */
  readonly status?: string;
}

/** What of a run is still on the machine. Empty lists and two `false`s mean a clean teardown. */
export interface Leftovers {
  /** Live processes whose command line names the run's dir, or that sit in its netns. */
  readonly processes: readonly StrayProcess[];
  /** Mount points under the run's dir. */
  readonly mounts: readonly string[];
  readonly netnsExists: boolean;
  readonly dirExists: boolean;
}

/** True when a Leftovers report is empty. */
export function isClean(left: Leftovers): boolean {
  return left.processes.length === 0 && left.mounts.length === 0 && !left.netnsExists && !left.dirExists;
}

/** Looks for a run's processes, mounts, netns and temp dir. */
export async function findLeftovers(ref: RunRef): Promise<Leftovers> {
  const processes: StrayProcess[] = [];
  const netnsLink = ref.netnsInode === undefined ? undefined : `net:[${ref.netnsInode}]`;
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    try {
      // A zombie has an empty cmdline and no ns links (readlink throws): it holds no resources and
      // does not count. A live process whose cmdline reads empty for a moment (while it execs)
      // still counts when it sits in the run's netns.
      const cmdline = (await readFile(`/proc/${pid}/cmdline`, "utf8")).split("\0").join(" ").trim();
      // dockerd, containerd and shims all name paths inside the dir (--data-root, -address ...).
      const inDir = ref.dir !== undefined && cmdline.includes(ref.dir + "/");
      // A process naming the dir counts whatever its ns link says: reading the link can fail while
      // the process lives (a task already past releasing its namespaces on the way out), and that
      // must not hide it from close()'s stray-process loop.
      const inNetns =
        !inDir && netnsLink !== undefined && (await readlink(`/proc/${pid}/ns/net`)) === netnsLink;
      if (inDir || inNetns)
        processes.push({ pid, command: cmdline.slice(0, 300), status: await statusOf(pid) });
    } catch {
      // The process went away while we looked.
    }
  }
  return {
    processes,
    mounts: ref.dir === undefined ? [] : await mountsUnder(ref.dir),
    netnsExists: await exists(netnsPath(ref.netnsName)),
    dirExists: ref.dir !== undefined && (await exists(ref.dir)),
  };
}

/** `State: ...; PPid: ...; Threads: ...` of a process, or "" once it is gone. */
async function statusOf(pid: number): Promise<string> {
  const text = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
  return text
    .split("\n")
    .filter((l) => /^(State|PPid|Threads):/.test(l))
    .map((l) => l.replace(/\s+/g, " "))
    .join("; ");
}

/** Mount points at or under `dir`, from /proc/mounts, deepest first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const mounts = await readFile("/proc/mounts", "utf8");
  const out: string[] = [];
  for (const line of mounts.split("\n")) {
    const field = line.split(" ")[1];
    if (field === undefined) continue;
    // /proc/mounts escapes space, tab, newline and backslash as octal (\040 ...).
    const point = field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
    if (point === dir || point.startsWith(dir + "/")) out.push(point);
  }
  return out.sort((a, b) => b.length - a.length);
}

/** Lazily unmounts everything at or under `dir`, deepest first, until nothing is left. */
export async function unmountUnder(dir: string): Promise<void> {
  for (let pass = 0; pass < 5; pass++) {
    const points = await mountsUnder(dir);
    if (points.length === 0) return;
    for (const point of points) {
      await execFileP("umount", ["-l", point]).catch(() => undefined);
    }
  }
  const left = await mountsUnder(dir);
  if (left.length > 0) throw new Error(`could not unmount: ${left.join(", ")}`);
}

/** SIGTERMs the processes, SIGKILLs those still alive after `graceMs`, waits until all are gone. */
export async function killProcesses(processes: readonly StrayProcess[], graceMs = 3_000): Promise<void> {
  if (processes.length === 0) return;
  const signal = (sig: NodeJS.Signals): void => {
    for (const { pid } of processes) {
      try {
        process.kill(pid, sig);
      } catch {
        // already gone
      }
    }
  };
  const allGone = (): boolean => processes.every(({ pid }) => !isAlive(pid));
  signal("SIGTERM");
  try {
    await waitFor(allGone, { timeoutMs: graceMs, what: "stray processes to exit" });
    return;
  } catch {
    signal("SIGKILL");
  }
  await waitFor(allGone, { timeoutMs: 5_000, what: "stray processes to die after SIGKILL" });
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** A run found by sweepStaleRuns, and whether it was cleaned. */
export interface SweptRun {
  readonly dir: string;
  readonly netnsName: string;
  readonly ownerPid: number;
  readonly error?: string;
}

/**
 * Cleans up after test processes that died without close(): every `<tmpdir>/ckd-*` whose owner
 * process is gone loses its processes, mounts, netns and dir. Live runs are left alone; `only`
 * restricts the sweep to the given dirs.
 */
export async function sweepStaleRuns(
  tmp: string,
  options: { only?: readonly string[] } = {},
): Promise<SweptRun[]> {
  const swept: SweptRun[] = [];
  for (const name of await readdir(tmp)) {
    if (!name.startsWith("ckd-")) continue;
    const dir = `${tmp.replace(/\/$/, "")}/${name}`;
    if (options.only !== undefined && !options.only.includes(dir)) continue;
    const owner = await readFile(`${dir}/owner`, "utf8").catch(() => undefined);
    if (owner === undefined) continue; // not (yet) one of ours
    const [pidText, netnsName] = owner.split("\n");
    const ownerPid = Number(pidText);
    if (netnsName === undefined || !/^clawker-test-[0-9a-f]+$/.test(netnsName) || !(ownerPid > 0)) continue;
    if (isAlive(ownerPid)) continue;
    const inode = await stat(netnsPath(netnsName)).then(
      (s) => s.ino,
      () => undefined,
    );
    const ref = { dir, netnsName, netnsInode: inode };
    try {
      await killProcesses((await findLeftovers(ref)).processes);
      await unmountUnder(dir);
      await execFileP("ip", ["netns", "delete", netnsName]).catch(() => undefined);
      if ((await mountsUnder(dir)).length === 0) await rm(dir, { recursive: true, force: true });
      swept.push({ dir, netnsName, ownerPid });
    } catch (err) {
      swept.push({ dir, netnsName, ownerPid, error: String(err) });
    }
  }
  return swept;
}
