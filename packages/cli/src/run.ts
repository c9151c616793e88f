// clawker proper, loaded by main.ts once the Node version is right. All logic is in cli.ts; this
// only binds it to the process.
import { run } from "./cli.js";
import { ExitCode } from "./exit-codes.js";
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

// A reader that goes away (`clawker exec dev -- cat log | head`) ends clawker as SIGPIPE ends a C
// program: quietly, with 141, where Node would print the unhandled EPIPE's stack trace. An open
// call ends with the connection, and the control plane kills the command it was running.
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(ExitCode.brokenPipe);
    throw err;
  });
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
