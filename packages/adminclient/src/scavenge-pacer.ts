// A young-generation collection (a scavenge) per 8 MiB of ExecAgent output this process reads, as
// the control plane's ScavengePacer runs one per 8 MiB its Sessions take in (issue 15;
// packages/controlplane/README.md, "Memory"). The output arrives in Buffers outside V8's heap,
// each HTTP/2 read and grpc-js's copy of each message. Reading them allocates too little on the
// heap for V8 to scavenge, so the dead Buffers piled up as external memory until V8 ran a full
// collection for them: ~35 % of a reading process's CPU samples were in marking. The import graph
// keeps this package apart from the control plane's (adminclient imports only proto), hence a copy
// of its few lines.
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

/** Output read between two scavenges. */
export const SCAVENGE_EVERY_BYTES = 8 << 20;

/**
 * Returns `account(bytes)`, which runs `scavenge` each time `everyBytes` more have been accounted.
 * The default scavenge is V8's young-generation collection, through a gc function taken from a
 * fresh vm context while --expose-gc is set (never on this process's global); where V8 gives none,
 * accounting does nothing.
 */
export function scavengePacer(
  everyBytes: number = SCAVENGE_EVERY_BYTES,
  scavenge?: () => void,
): (bytes: number) => void {
  if (!(Number.isSafeInteger(everyBytes) && everyBytes > 0)) {
    throw new RangeError(`everyBytes must be a positive integer, got ${everyBytes}`);
  }
  let run = scavenge;
  let pending = 0;
  return (bytes) => {
    pending += bytes;
    if (pending < everyBytes) return;
    pending = 0;
    run ??= minorGc();
    run();
  };
}

/** V8's young-generation collection, or a no-op when V8 gives no gc function. */
function minorGc(): () => void {
  try {
    setFlagsFromString("--expose-gc");
    const gc: unknown = runInNewContext("gc");
    if (typeof gc === "function") {
      const collect = gc as (options: { type: "minor" }) => void;
      return () => collect({ type: "minor" });
    }
  } catch {
    // A CPU optimisation only: V8 collects as it would without it.
  } finally {
    setFlagsFromString("--no-expose-gc");
  }
  return () => undefined;
}
