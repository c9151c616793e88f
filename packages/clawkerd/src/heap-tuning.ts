// The V8 setting clawkerd serves with, set from inside once it listens (main.ts): a heap growing
// factor of 3.5, so that after a full collection the old generation's limit leaves room for the
// output Buffers a scavenge has not freed yet (README, "Heap settings"). Set from inside because
// on the command line it costs the start-up ~25 ms: node's built-in code cache was made under
// the default flags and is refused under others (measured with `--initial-old-space-size` and
// this flag alike; `--max-semi-space-size`, CLAWKERD_NODE_FLAGS, costs nothing there).
import { setFlagsFromString } from "node:v8";

/** The V8 flags clawkerd sets on itself once it listens. */
export const CLAWKERD_V8_FLAGS = ["--heap-growing-percent=250"] as const;

/** Sets CLAWKERD_V8_FLAGS on this process's V8. */
export function tuneHeap(): void {
  for (const flag of CLAWKERD_V8_FLAGS) setFlagsFromString(flag);
}
