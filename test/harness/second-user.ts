// A second local user for threat-model tests: `nobody`, who cannot enter root's 0700 directories.
// Tests run what that user would run (a Node script, our own Node 24 binary) through runuser and
// look at what it got; the script prints JSON on stdout.
import { execFile } from "node:child_process";
import type { Requirement } from "./preconditions.js";
import { command, root } from "./preconditions.js";

/** The second user's name (uid 65534 on Debian). */
export const SECOND_USER = "nobody";

/** Root (to switch users) and runuser on PATH. */
export const secondUser: Requirement[] = [root, command("runuser")];

/**
 * Runs `script` (an ES module, given `args` as process.argv.slice(1)) as SECOND_USER with this
 * process's Node binary, from `/`. Resolves with its stdout; rejects when it exits non-zero.
 */
export function runNodeAsSecondUser(
  script: string,
  args: readonly string[],
  timeoutMs = 20_000,
): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      "runuser",
      ["-u", SECOND_USER, "--", process.execPath, "--input-type=module", "-e", script, "--", ...args],
      { cwd: "/", timeout: timeoutMs, env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin" } },
      (err, stdout, stderr) => {
        if (err !== null) reject(new Error(`as ${SECOND_USER}: ${err.message}\n${stderr}`, { cause: err }));
        else resolve(stdout);
      },
    );
  });
}
