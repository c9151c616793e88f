// The firewall's action queue: one worker applies mutations in the order they arrived, and the
// reconcile (rules -> proxy, DNS gate, eBPF routes) they need is coalesced: every mutation and
// reload that queued up while a reconcile ran is served by one reconcile run after it.
import type { Logger } from "pino";
import { type FirewallError, QueueClosedError, ReconcileError, SAVED_NOT_APPLIED_MESSAGE } from "./errors.js";

/**
 * The result of a mutation whose write succeeded: applied by a reconcile, or saved durably but not
 * applied ("saved, will apply on next reload") because the reconcile failed or the queue closed
 * before one could run. A failed write rejects instead (nothing was saved).
 */
export type MutationOutcome<T, R> =
  | { readonly applied: true; readonly value: T; readonly reconciled: R }
  | {
      readonly applied: false;
      readonly value: T;
      /** SAVED_NOT_APPLIED_MESSAGE, for the caller. */
      readonly message: string;
      /** ReconcileError (its `cause` has the failure) or QueueClosedError. */
      readonly error: FirewallError;
    };

/** What the queue runs. */
export interface ActionQueueOptions<R> {
  /**
   * Applies the stored rules to the running stack; its result (e.g. whether a stack was running)
   * is handed to every caller the run served. `signal` aborts when the queue closes.
   */
  readonly reconcile: (signal: AbortSignal) => Promise<R>;
  readonly log: Logger;
}

type Item<R> =
  | {
      readonly kind: "mutation";
      readonly write: () => unknown;
      readonly resolve: (outcome: MutationOutcome<unknown, R>) => void;
      readonly reject: (err: unknown) => void;
    }
  | {
      readonly kind: "reconcile";
      readonly resolve: (value: R) => void;
      readonly reject: (err: unknown) => void;
    }
  | {
      readonly kind: "action";
      readonly run: (signal: AbortSignal) => Promise<unknown>;
      readonly resolve: (value: unknown) => void;
      readonly reject: (err: unknown) => void;
    };

type Waiter<R> =
  | { readonly item: Extract<Item<R>, { kind: "mutation" }>; readonly value: unknown }
  | { readonly item: Extract<Item<R>, { kind: "reconcile" }> };

/**
 * One queue per firewall. Mutations (`mutate`), reloads (`reconcile`) and other actions (`run`)
 * execute strictly in arrival order; consecutive mutations and reloads share one reconcile.
 * After `close()` every call rejects with QueueClosedError (UNAVAILABLE).
 */
export class ActionQueue<R> {
  readonly #options: ActionQueueOptions<R>;
  readonly #abort = new AbortController();
  #items: Item<R>[] = [];
  #draining: Promise<void> | undefined;
  #closed = false;
  #reconcileRuns = 0;

  constructor(options: ActionQueueOptions<R>) {
    this.#options = options;
  }

  /** How many times the reconcile function has been called (coalescing makes it < mutations). */
  get reconcileRuns(): number {
    return this.#reconcileRuns;
  }

  /**
   * Queues a durable write (e.g. `store.add(...)`), then a reconcile. Rejects with the write's
   * error when the write fails (nothing saved), or QueueClosedError when the queue is closed
   * before the write ran; otherwise resolves with a MutationOutcome.
   */
  mutate<T>(write: () => T | Promise<T>): Promise<MutationOutcome<T, R>> {
    return new Promise((resolve, reject) => {
      this.#enqueue({
        kind: "mutation",
        write,
        resolve: resolve as (outcome: MutationOutcome<unknown, R>) => void,
        reject,
      });
    });
  }

  /** Queues a reconcile alone (FirewallReload); rejects with ReconcileError when it fails. */
  reconcile(): Promise<R> {
    return new Promise((resolve, reject) => this.#enqueue({ kind: "reconcile", resolve, reject }));
  }

  /** Queues another action (enable, disable, bypass...); it runs alone, in order, never coalesced. */
  run<T>(action: (signal: AbortSignal) => Promise<T>): Promise<T> {
    return new Promise((resolve, reject) => {
      this.#enqueue({ kind: "action", run: action, resolve: resolve as (value: unknown) => void, reject });
    });
  }

  /**
   * Closes the queue: queued work that has not started rejects with QueueClosedError (nothing of
   * it was written), a running reconcile sees its signal abort, and the returned promise settles
   * once the worker is idle. Idempotent.
   */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      for (const item of this.#items.splice(0)) item.reject(new QueueClosedError());
      this.#abort.abort(new QueueClosedError());
    }
    await this.#draining;
  }

  #enqueue(item: Item<R>): void {
    if (this.#closed) {
      item.reject(new QueueClosedError());
      return;
    }
    this.#items.push(item);
    this.#draining ??= this.#drain();
  }

  async #drain(): Promise<void> {
    try {
      // One microtask first, so calls made in the same turn share the first reconcile.
      await Promise.resolve();
      for (let head = this.#items[0]; head !== undefined; head = this.#items[0]) {
        if (head.kind === "action") {
          this.#items.shift();
          await this.#runAction(head);
          continue;
        }
        // Everything up to the next action: mutations and reloads in order, one reconcile after.
        const next = this.#items.findIndex((item) => item.kind === "action");
        await this.#runBatch(this.#items.splice(0, next < 0 ? this.#items.length : next));
      }
    } finally {
      this.#draining = undefined;
    }
  }

  async #runAction(item: Extract<Item<R>, { kind: "action" }>): Promise<void> {
    try {
      item.resolve(await item.run(this.#abort.signal));
    } catch (err) {
      item.reject(err);
    }
  }

  async #runBatch(batch: readonly Item<R>[]): Promise<void> {
    const waiters: Waiter<R>[] = [];
    for (const item of batch) {
      if (item.kind === "mutation") {
        try {
          waiters.push({ item, value: await item.write() });
        } catch (err) {
          item.reject(err);
        }
      } else if (item.kind === "reconcile") {
        waiters.push({ item });
      }
    }
    if (waiters.length === 0) return;
    if (this.#closed) {
      this.#settle(waiters, { ok: false, error: new QueueClosedError() });
      return;
    }
    this.#reconcileRuns++;
    try {
      const reconciled = await this.#options.reconcile(this.#abort.signal);
      this.#settle(waiters, { ok: true, reconciled });
    } catch (err) {
      const error = new ReconcileError({ cause: err });
      this.#options.log.warn(
        { err, event: "firewall_reconcile_failed", waiting: waiters.length },
        "firewall reconcile failed",
      );
      this.#settle(waiters, { ok: false, error });
    }
  }

  #settle(
    waiters: readonly Waiter<R>[],
    result: { ok: true; reconciled: R } | { ok: false; error: FirewallError },
  ): void {
    for (const waiter of waiters) {
      if (waiter.item.kind === "reconcile") {
        if (result.ok) waiter.item.resolve(result.reconciled);
        else waiter.item.reject(result.error);
      } else if ("value" in waiter) {
        waiter.item.resolve(
          result.ok
            ? { applied: true, value: waiter.value, reconciled: result.reconciled }
            : {
                applied: false,
                value: waiter.value,
                message: SAVED_NOT_APPLIED_MESSAGE,
                error: result.error,
              },
        );
      }
    }
  }
}
