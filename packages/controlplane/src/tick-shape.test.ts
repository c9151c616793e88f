// holdTickShape: it holds one of Node's own nextTick objects (the shape every later tick is built
// with), the same one for good. What holding it is worth is a
// figure (bench/controlplane-authz.bench.ts, daemon CPU per call), never a test's timing.
import assert from "node:assert/strict";
import { createHook } from "node:async_hooks";
import { test } from "node:test";
import { holdTickShape } from "./tick-shape.js";

/** The tick objects Node builds while `fn` runs. */
function ticksDuring(fn: () => void): object[] {
  const ticks: object[] = [];
  const hook = createHook({
    init(_id, type, _trigger, resource) {
      if (type === "TickObject") ticks.push(resource);
    },
  });
  hook.enable();
  try {
    fn();
  } finally {
    hook.disable();
  }
  return ticks;
}

/** An object's own keys in order, symbols by their description. */
function shapeOf(value: object): string[] {
  return Reflect.ownKeys(value).map((k) => (typeof k === "symbol" ? `@${k.description ?? ""}` : k));
}

void test("holdTickShape holds a real nextTick object, the same one on every call", () => {
  const held = holdTickShape();
  assert.ok(held !== undefined, "no tick object was held");
  // The shape Node gives every tick (a literal led by its async ids and context frame symbols).
  const [fresh] = ticksDuring(() => process.nextTick(() => {}));
  assert.ok(fresh !== undefined);
  assert.deepEqual(shapeOf(held), shapeOf(fresh));
  assert.ok(shapeOf(held).includes("@async_id_symbol"), `unexpected shape ${shapeOf(held).join(",")}`);
  assert.equal(holdTickShape(), held);
});
