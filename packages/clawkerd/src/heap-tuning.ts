// The V8 setting clawkerd serves with, set from inside once it listens (main.ts): a heap growing
// factor of 3.5, so that after a full collection the old generation's limit leaves room for the
// output Buffers a scavenge has not freed yet (README, "Heap settings"). Set from inside because
// on the command line it cost every start ~25 ms before `listening` (measured for this flag and
// for `--initial-old-space-size` alike; `--max-semi-space-size`, CLAWKERD_NODE_FLAGS, costs
// nothing there). Our reading, not verified: V8 refuses code cached under other flags, and node's
// built-in modules load from such a cache.
import { setFlagsFromString } from "node:v8";

/** The V8 flags clawkerd sets on itself once it listens. */
export const CLAWKERD_V8_FLAGS = ["--heap-growing-percent=250"] as const;

/** Sets CLAWKERD_V8_FLAGS on this process's V8. */
export function tuneHeap(): void {
  for (const flag of CLAWKERD_V8_FLAGS) setFlagsFromString(flag);
}
