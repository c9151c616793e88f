// Where an executable is: a path as given, or the first match on PATH (what execvp would run).
import { accessSync, constants } from "node:fs";
import { delimiter, join } from "node:path";

/** `name` if it is a path to an executable file, else the first executable `name` on PATH. */
export function findExecutable(name: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const candidates = name.includes("/")
    ? [name]
    : (env["PATH"] ?? "")
        .split(delimiter)
        .filter((d) => d !== "")
        .map((d) => join(d, name));
  return candidates.find((c) => {
    try {
      accessSync(c, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}
