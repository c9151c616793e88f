// V8's gc function for this process without exposing one: taken out of a fresh vm context created
// while --expose-gc is set, so the daemon's own global never gets a `gc`, and the flag is off again
// at once. Memory relief runs its last-resort full collection with it (memory-relief.ts), the
// scavenge pacer its young-generation collections (scavenge-pacer.ts).
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

/** What V8's gc extension takes (`type` default "major", `execution` default "sync"). */
export interface GcOptions {
  readonly type?: "major" | "minor";
  /** "last-resort": full, compacting collections until nothing more is freed; major only. */
  readonly flavor?: "regular" | "last-resort";
}

/** V8's gc extension function. */
export type GcFunction = (options?: GcOptions) => void;

/** The one taken from a vm context so far: each context costs ~0.6 MiB, so its users share one. */
let fromContext: GcFunction | undefined;

/** The gc function of this process's V8 (a global `gc` if there is one); throws when V8 gives none. */
export function acquireGcFunction(): GcFunction {
  const global: unknown = (globalThis as { gc?: unknown }).gc;
  if (isGc(global)) return global;
  fromContext ??= gcFromContext();
  return fromContext;
}

function gcFromContext(): GcFunction {
  let gc: unknown;
  try {
    setFlagsFromString("--expose-gc");
    gc = runInNewContext("gc");
  } catch (cause) {
    throw new Error("V8 gave no gc function", { cause });
  } finally {
    setFlagsFromString("--no-expose-gc");
  }
  if (!isGc(gc)) throw new Error("V8 gave no gc function");
  return gc;
}

function isGc(value: unknown): value is GcFunction {
  return typeof value === "function";
}
