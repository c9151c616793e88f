// Runs the real `clawker` CLI (from source, through tsx) as a process, optionally inside a network
// namespace (to reach a control plane that runs there).
import { spawn } from "node:child_process";
import { join } from "node:path";
import { REPO_ROOT } from "./images.js";

/** What a CLI run printed and how it exited. */
export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Options for clawker(). */
export interface CliOptions {
  readonly env?: NodeJS.ProcessEnv;
  /** Run inside this network namespace (nsenter --net). */
  readonly netns?: string;
}

/** Runs `clawker <args>` to completion. */
export function clawker(args: readonly string[], options: CliOptions = {}): Promise<CliResult> {
  const argv = [
    process.execPath,
    "--import",
    import.meta.resolve("tsx"),
    "--conditions=source",
    join(REPO_ROOT, "packages/cli/src/main.ts"),
    ...args,
  ];
  const [file, ...rest] =
    options.netns === undefined ? argv : ["nsenter", `--net=/run/netns/${options.netns}`, ...argv];
  return new Promise((resolve, reject) => {
    const child = spawn(file!, rest, { env: options.env ?? process.env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (c: string) => (stdout += c));
    child.stderr.setEncoding("utf8").on("data", (c: string) => (stderr += c));
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, stdout, stderr }));
  });
}
