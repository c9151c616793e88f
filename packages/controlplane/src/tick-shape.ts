// One of Node's own `process.nextTick` objects, held for the life of the process (issue 15). A
// memory-reducing collection (memory relief's last-resort GC, and V8's memory reducer, which
// follows one up after ~10 s idle) keeps no map that no live object uses; when no tick is queued
// at that moment, the maps of Node's tick object (a literal with three symbol keys) go, and every
// later `process.nextTick` builds its object ~4x slower for good (Node 24: ~80 -> ~400 ns, each
// call of the daemon queues several): ~7 us of daemon CPU per authorized call after the start-up
// collection. A tick object kept alive keeps its maps, and the fast path, through every collection.
import { createHook } from "node:async_hooks";

let held: object | undefined;

/**
 * Captures one real tick object (through an async hook enabled only around one `nextTick`) and
 * keeps it; idempotent. Returns it, or undefined when Node made none (nothing is held then).
 */
export function holdTickShape(): object | undefined {
  if (held !== undefined) return held;
  let captured: object | undefined;
  const hook = createHook({
    init(_asyncId, type, _triggerAsyncId, resource) {
      if (type === "TickObject" && captured === undefined) captured = resource;
    },
  });
  hook.enable();
  try {
    process.nextTick(keepShape);
  } finally {
    hook.disable();
  }
  held = captured;
  return held;
}

/** The held tick's callback: it runs once, at once, and does nothing. */
function keepShape(): void {}
