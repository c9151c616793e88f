// The agent image for end-to-end tests: the Node 24 image plus our clawkerd, bundled into one file
// by the package's own `bundle` script, at the path `clawker run` uses as its default entrypoint.
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import type Docker from "dockerode";
import { NODE_BINARY, nodeImage, REPO_ROOT, sharedLibraries } from "./images.js";
import type { RootfsEntry } from "./rootfs-tar.js";

const execFileP = promisify(execFile);

/** util-linux's setpriv, on this host and in the Debian agent image. */
const SETPRIV = "/usr/bin/setpriv";

/** Where the clawkerd bundle lives in the agent image (`clawker run`'s default entrypoint). */
export const CLAWKERD_IN_IMAGE = "/opt/clawker/clawkerd.mjs";

/**
 * Bundles clawkerd and imports the agent image into `docker`; returns its reference. `extra` adds
 * entries (a test's own fixtures) under the `repo` given.
 */
export async function agentImage(
  docker: Docker,
  options: { readonly repo?: string; readonly extra?: readonly RootfsEntry[] } = {},
): Promise<string> {
  await execFileP("npm", ["run", "--silent", "bundle", "-w", "@clawker/clawkerd"], { cwd: REPO_ROOT });
  const bundle = join(REPO_ROOT, "packages/clawkerd/.output/clawkerd.mjs");
  // The agent image is Debian, with util-linux's setpriv: clawkerd's spare job gate drops to the
  // jobs' user through it (busybox's, the test image's /bin/setpriv, has no --reuid).
  const nodeLibs = new Set(await sharedLibraries(NODE_BINARY));
  const setprivLibs = (await sharedLibraries(SETPRIV)).filter((lib) => !nodeLibs.has(lib));
  return nodeImage(docker, {
    repo: options.repo ?? "clawker-test/agent",
    extra: [
      { kind: "file", path: CLAWKERD_IN_IMAGE, source: bundle, mode: 0o644 },
      { kind: "file", path: SETPRIV, source: SETPRIV, mode: 0o755 },
      ...setprivLibs.map((lib): RootfsEntry => ({ kind: "file", path: lib, source: lib })),
      ...(options.extra ?? []),
    ],
  });
}
