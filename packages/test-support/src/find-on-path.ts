// Looking a command up on PATH the way execvp does, without running it.
import { accessSync, constants } from "node:fs";
import { delimiter, join } from "node:path";

/** The first executable `name` in `env.PATH`, or undefined when there is none. */
export function findOnPath(name: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  for (const dir of (env["PATH"] ?? "").split(delimiter)) {
    // An empty entry would mean the current directory; a test must not pick up a stray file there.
    if (dir === "") continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}
