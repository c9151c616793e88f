// Packing the CLI's npm package (scripts/pack-cli.sh) and installing it into a prefix of its own
// with `npm install -g --prefix`, as a user would into /usr/local: shared by the install test and
// the systemd unit check, whose ExecStart is the installed clawker-cp.
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { NODE_BINARY, REPO_ROOT } from "../harness/images.js";

const execFileP = promisify(execFile);

/** The folder holding the project's Node 24 (`node` in it). */
export const NODE24_DIR = join(NODE_BINARY, "..");

/** Packs the CLI package into `outDir`; returns the tarball's path. */
export async function packCli(outDir: string): Promise<string> {
  const { stdout } = await execFileP("bash", [join(REPO_ROOT, "scripts/pack-cli.sh"), outDir], {
    cwd: REPO_ROOT,
    timeout: 300_000,
  });
  return stdout.trim();
}

/**
 * `npm install -g --prefix <prefix> <tarball>`, offline: the package has no dependencies, so
 * nothing may come from a registry. Afterwards `<prefix>/bin` holds clawker and clawker-cp.
 */
export async function installCli(tarball: string, prefix: string): Promise<void> {
  await execFileP(
    "npm",
    [
      "install",
      "--global",
      "--prefix",
      prefix,
      "--offline",
      "--no-audit",
      "--no-fund",
      "--ignore-scripts",
      tarball,
    ],
    { timeout: 300_000, env: { ...process.env, npm_config_update_notifier: "false" } },
  );
}
