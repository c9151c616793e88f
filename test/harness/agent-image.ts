// The agent image for end-to-end tests: the Node 24 image plus our clawkerd, bundled into one file
// by the package's own `bundle` script, at the path `clawker run` uses as its default entrypoint.
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import type Docker from "dockerode";
import { nodeImage, REPO_ROOT } from "./images.js";
import type { RootfsEntry } from "./rootfs-tar.js";

const execFileP = promisify(execFile);

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
  return nodeImage(docker, {
    repo: options.repo ?? "clawker-test/agent",
    extra: [{ kind: "file", path: CLAWKERD_IN_IMAGE, source: bundle, mode: 0o644 }, ...(options.extra ?? [])],
  });
}
