// How to start the gate process: the built main.js, or main.ts through tsx when the daemon itself
// runs from source (tests, `npm run` in a checkout).
import { fileURLToPath } from "node:url";

/** The command that runs the DNS gate process (pass `--config FILE` after `args`, fd 3 a pipe). */
export function dnsGateEntry(): { file: string; args: string[] } {
  const fromSource = import.meta.url.endsWith(".ts");
  const main = fileURLToPath(new URL(fromSource ? "./main.ts" : "./main.js", import.meta.url));
  if (!fromSource) return { file: process.execPath, args: [main] };
  return {
    file: process.execPath,
    args: ["--import", import.meta.resolve("tsx"), "--conditions=source", main],
  };
}
