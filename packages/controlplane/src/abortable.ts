// Waiting on a promise that cannot itself be cancelled (a shared introspection request, an
// iterator's next()), for as long as one caller's signal allows.

/** Rejects with the signal's reason as soon as `signal` aborts, else settles like `promise`. */
export function unlessAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(err instanceof Error ? err : new Error(String(err), { cause: err }));
      },
    );
  });
}
