// @peculiar/x509 uses tsyringe, which refuses to load without the Reflect metadata API
// (normally the `reflect-metadata` package, not installed here). This installs the four
// functions tsyringe and tslib's decorator helper call, only when no polyfill is present.
type Target = object;
const store = new WeakMap<Target, Map<unknown, unknown>>();

interface ReflectMetadata {
  getMetadata?: (key: unknown, target: Target) => unknown;
  getOwnMetadata?: (key: unknown, target: Target) => unknown;
  defineMetadata?: (key: unknown, value: unknown, target: Target) => void;
  metadata?: (key: unknown, value: unknown) => (target: Target) => void;
}

const reflect = Reflect as unknown as ReflectMetadata;
if (typeof reflect.getMetadata !== "function") {
  const getOwn = (key: unknown, target: Target): unknown => store.get(target)?.get(key);
  const define = (key: unknown, value: unknown, target: Target): void => {
    let map = store.get(target);
    if (map === undefined) store.set(target, (map = new Map()));
    map.set(key, value);
  };
  reflect.getOwnMetadata = getOwn;
  reflect.defineMetadata = define;
  reflect.getMetadata = (key, target) => {
    // Walk the prototype chain, as reflect-metadata does.
    for (let t: Target | null = target; t !== null; t = Object.getPrototypeOf(t) as Target | null) {
      const map = store.get(t);
      if (map?.has(key) === true) return map.get(key);
    }
    return undefined;
  };
  reflect.metadata = (key, value) => (target) => define(key, value, target);
}

/** Marker export so the module is imported for its effect explicitly. */
export const reflectMetadataInstalled = true;
