// clawker proper, loaded by main.ts once the Node version is right. All logic is in cli.ts; this
// only binds it to the process.
import { run } from "./cli.js";

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
});
// Exit explicitly: a detached daemon or a lingering socket must not keep the CLI alive.
process.exit(code);
