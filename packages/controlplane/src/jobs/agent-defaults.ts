// The default agent limits (config `agentLimits`) published for `clawker run`, which reads them
// from `<dataDir>/agent-limits.json` (0600, rewritten atomically at every start), so the CLI takes
// the control plane's config without parsing it or calling the admin listener.
import { renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Config } from "../config.js";

/** The file `clawker run` reads the defaults from, in the data dir. */
export const AGENT_LIMITS_FILE = "agent-limits.json";

/** Writes the defaults into `dataDir` (tmp then rename: a reader never sees half a file). */
export function publishAgentLimits(dataDir: string, limits: Config["agentLimits"]): string {
  const file = join(dataDir, AGENT_LIMITS_FILE);
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, JSON.stringify({ version: 1, ...limits }) + "\n", { mode: 0o600 });
  renameSync(tmp, file);
  return file;
}
