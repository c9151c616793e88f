// clawker proper, loaded by main.ts once the Node version is right. All logic is in cli.ts; this
// only binds it to the process.
import { run } from "./cli.js";
import type { Terminal } from "./io.js";

/** The process's own terminal: stdin in raw mode while keys are wanted. */
function processTerminal(): Terminal {
  return {
    size: () => ({ cols: process.stdout.columns ?? 80, rows: process.stdout.rows ?? 24 }),
    keys: (onKey) => {
      const stdin = process.stdin;
      const onData = (data: Buffer): void => {
        // One read is one key, or an escape sequence (arrows), or several typed at once.
        const text = data.toString("utf8");
        for (const key of text.startsWith("\x1b") ? [text] : [...text]) onKey(key);
      };
      stdin.setRawMode(true);
      stdin.on("data", onData);
      stdin.resume();
      return () => {
        stdin.off("data", onData);
        stdin.setRawMode(false);
        stdin.pause();
      };
    },
  };
}

const code = await run(process.argv.slice(2), {
  stdout: {
    write: (s) => void process.stdout.write(s),
    writeBytes: (b) => void process.stdout.write(b),
    isTTY: process.stdout.isTTY,
  },
  stderr: { write: (s) => void process.stderr.write(s), isTTY: process.stderr.isTTY },
  env: process.env,
  onInterrupt: (handler) => {
    process.on("SIGINT", handler);
    return () => void process.off("SIGINT", handler);
  },
  ...(process.stdin.isTTY ? { terminal: processTerminal() } : {}),
});
// Exit explicitly: a detached daemon or a lingering socket must not keep the CLI alive.
process.exit(code);
