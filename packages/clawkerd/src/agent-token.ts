// The agent's access token, kept after registration for `clawkerd request-egress`: the client
// assertion is single-use, so the token it bought is the only one the agent has. One JSON file in
// the state dir, 0600, written atomically; it is never logged.
import { readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ClawkerdError } from "./errors.js";

/** The token file's name inside the state directory. */
export const AGENT_TOKEN_FILE = "agent-token.json";

/** A kept token and when it stops working. */
export interface AgentToken {
  readonly accessToken: string;
  readonly expiresAtUnixMs: number;
}

/** Writes the token (0600, atomically). */
export async function saveAgentToken(stateDir: string, token: AgentToken): Promise<void> {
  const path = join(stateDir, AGENT_TOKEN_FILE);
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(token)}\n`, { mode: 0o600 });
  await rename(tmp, path);
}

/** Reads the kept token; ClawkerdError `not_found` when there is none, `state_io` when unreadable. */
export async function loadAgentToken(stateDir: string): Promise<AgentToken> {
  const path = join(stateDir, AGENT_TOKEN_FILE);
  let raw: string;
  try {
    raw = await readFile(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") {
      throw new ClawkerdError("not_found", `no agent token in ${stateDir}: clawkerd has not registered yet`);
    }
    throw new ClawkerdError(
      "state_io",
      `cannot read ${path} (${code ?? "error"})${code === "EACCES" ? ": run as the user clawkerd runs as (root)" : ""}`,
      { cause: err },
    );
  }
  try {
    const j = JSON.parse(raw) as Partial<AgentToken>;
    if (typeof j.accessToken !== "string" || typeof j.expiresAtUnixMs !== "number") throw new Error("fields");
    return { accessToken: j.accessToken, expiresAtUnixMs: j.expiresAtUnixMs };
  } catch (err) {
    throw new ClawkerdError("state_io", `corrupt token file ${path}`, { cause: err });
  }
}
