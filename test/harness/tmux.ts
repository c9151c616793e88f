// A real terminal for full-screen commands (`clawker firewall watch`): a tmux server of the test's
// own (private socket, so it starts with the environment given here and no user's tmux is touched),
// one session running the command, keys sent with send-keys and the screen read with capture-pane.
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { waitFor } from "./wait-for.js";

const run = promisify(execFile);

/** One command running in a tmux pane. */
export interface TmuxPane {
  /** Sends keys as tmux names them (`a`, `j`, `Down`, `C-c`). */
  keys(...keys: string[]): Promise<void>;
  /** The screen now, one string per line. */
  screen(): Promise<string[]>;
  /** Waits until a line of the screen matches; answers that line. */
  waitForLine(pattern: RegExp, what: string, timeoutMs?: number): Promise<string>;
  /** Whether the command has exited (its pane is dead). */
  exited(): Promise<boolean>;
  /** Kills the server (and the command). Idempotent. */
  close(): Promise<void>;
}

/** Starts `argv` in a new tmux session of `cols` x `rows`, with `env` as its whole environment. */
export async function startTmux(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  size: { cols: number; rows: number } = { cols: 200, rows: 50 },
): Promise<TmuxPane> {
  const dir = mkdtempSync(join(tmpdir(), "clawker-tmux-"));
  const socket = join(dir, "tmux.sock");
  const tmux = async (...args: string[]): Promise<string> =>
    (await run("tmux", ["-S", socket, ...args], { env: { ...env, TERM: "xterm-256color" } })).stdout;
  // remain-on-exit first, in the same command sequence: a command that dies at once stays readable.
  await tmux(
    "set-option",
    "-g",
    "remain-on-exit",
    "on",
    ";",
    "new-session",
    "-d",
    "-s",
    "t",
    "-x",
    String(size.cols),
    "-y",
    String(size.rows),
    argv.map(shellQuote).join(" "),
  );
  let closed = false;
  const pane: TmuxPane = {
    keys: async (...keys) => void (await tmux("send-keys", "-t", "t", ...keys)),
    screen: async () => (await tmux("capture-pane", "-p", "-t", "t")).split("\n"),
    waitForLine: async (pattern, what, timeoutMs = 30_000) => {
      let last: string[] = [];
      try {
        return await waitFor(
          async () => {
            last = await pane.screen();
            return last.find((l) => pattern.test(l));
          },
          { timeoutMs, what },
        );
      } catch (err) {
        throw new Error(`${(err as Error).message}; the screen was:\n${last.join("\n")}`, { cause: err });
      }
    },
    exited: async () => (await tmux("display-message", "-p", "-t", "t", "#{pane_dead}")).trim() === "1",
    close: async () => {
      if (closed) return;
      closed = true;
      await tmux("kill-server").catch(() => undefined);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return pane;
}

/** Quotes one argument for the shell tmux runs the command with. */
function shellQuote(arg: string): string {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`;
}
