// Polling for tests: wait until a condition holds instead of sleeping a guessed amount.
import { setTimeout as sleep } from "node:timers/promises";

/** Options for waitFor: total budget and poll interval, in milliseconds. */
export interface WaitForOptions {
  readonly timeoutMs?: number;
  readonly intervalMs?: number;
  readonly what?: string;
}

/**
 * Polls `condition` until it returns a value other than undefined/false (which is returned), or
 * throws after the budget with the last error it saw.
 */
export async function waitFor<T>(
  condition: () => T | undefined | false | Promise<T | undefined | false>,
  { timeoutMs = 10_000, intervalMs = 20, what = "condition" }: WaitForOptions = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await condition();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`, { cause: lastError });
    }
    await sleep(intervalMs);
  }
}
