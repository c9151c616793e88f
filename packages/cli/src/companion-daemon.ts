// Where the clawker-cp that ships with this CLI is: the install tree (scripts/install-tree.ts,
// the npm package and the image) and a built checkout both keep it at
// packages/controlplane/dist/main.js, beside this package's folder.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** The companion daemon's entry script, or undefined when it is not there (an unbuilt checkout). */
export function companionDaemon(): string | undefined {
  // This module is packages/cli/{src,dist}/companion-daemon.{ts,js}: two levels up is packages/.
  const entry = fileURLToPath(new URL("../../controlplane/dist/main.js", import.meta.url));
  return existsSync(entry) ? entry : undefined;
}
