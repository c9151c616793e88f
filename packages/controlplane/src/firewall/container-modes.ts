// Per-container firewall modes: enforced (the default for every agent), disabled, or a bypass
// that ends by itself (a dead-man timer, at most an hour; the enforcer gets its length, so the
// kernel ends it too when no control plane is left). Memory only: a control plane restart
// clears every bypass and disable, so every agent is enforced again (API.md §1, fail closed).
// Whether a mode is enforced is the enrolment's business (eBPF); without one it is only recorded.
import type { Logger } from "pino";
import { FirewallError } from "./errors.js";

/** The longest bypass (API.md §1). */
export const MAX_BYPASS_SECONDS = 3600;

/** What a container's egress is subject to. */
export type ContainerMode = "enforced" | "disabled" | "bypass";

/**
 * What puts a mode into effect for a container (the eBPF enforcement). Resolves true once the
 * kernel enforces `mode`, false when nothing can (the mode is then only recorded). A `bypass`
 * comes with its `seconds`, so the kernel can end it without us.
 */
export interface ModeEnforcer {
  apply(containerId: string, mode: ContainerMode, signal?: AbortSignal, seconds?: number): Promise<boolean>;
}

/** A mode that is not the default, as FirewallStatus lists it. */
export interface ContainerModeState {
  readonly containerId: string;
  readonly mode: Exclude<ContainerMode, "enforced">;
  /** Seconds a bypass has left (rounded up); 0 for `disabled`. */
  readonly secondsLeft: number;
  /** Whether the enforcer confirmed the mode. */
  readonly enforced: boolean;
}

/** Why a bypass ended (the audit log's bypass_end records). */
export type BypassEndCause = "expired" | "replaced" | "stack_down" | "shutdown" | "container_gone";

/** Options of ContainerModes. */
export interface ContainerModesOptions {
  readonly log: Logger;
  /** Told when a bypass ends, however it ends. Must not throw. */
  readonly onBypassEnd?: (containerId: string, cause: BypassEndCause) => void;
  /** Absent: modes are recorded only (and logged as such). */
  readonly enforcer?: ModeEnforcer;
  readonly now?: () => number;
}

interface Held {
  readonly mode: Exclude<ContainerMode, "enforced">;
  readonly untilMs: number;
  readonly enforced: boolean;
  readonly timer: NodeJS.Timeout | undefined;
}

/** The modes of every container that is not in the default one, with the bypass timers. */
export class ContainerModes {
  readonly #log: Logger;
  readonly #enforcer: ModeEnforcer | undefined;
  readonly #now: () => number;
  readonly #held = new Map<string, Held>();
  readonly #onBypassEnd: ((containerId: string, cause: BypassEndCause) => void) | undefined;

  constructor(options: ContainerModesOptions) {
    this.#log = options.log;
    this.#onBypassEnd = options.onBypassEnd;
    this.#enforcer = options.enforcer;
    this.#now = options.now ?? Date.now;
  }

  /** Back to the default: enforcement on (also ends a bypass early). */
  async enforce(containerId: string, signal?: AbortSignal): Promise<boolean> {
    this.#drop(containerId, "replaced");
    return await this.#apply(containerId, "enforced", signal);
  }

  /** Takes the container out of enforcement until enforce() (or a control plane restart). */
  async disable(containerId: string, signal?: AbortSignal): Promise<boolean> {
    this.#drop(containerId, "replaced");
    const enforced = await this.#apply(containerId, "disabled", signal);
    this.#held.set(containerId, { mode: "disabled", untilMs: 0, enforced, timer: undefined });
    return enforced;
  }

  /**
   * Unrestricted egress for `seconds` (1 to MAX_BYPASS_SECONDS, else FirewallError
   * `invalid_request`); enforcement comes back by itself when the time is up, whoever forgets.
   */
  async bypass(containerId: string, seconds: number, signal?: AbortSignal): Promise<boolean> {
    if (!Number.isInteger(seconds) || seconds < 1 || seconds > MAX_BYPASS_SECONDS) {
      throw new FirewallError(
        "invalid_request",
        `timeout_seconds must be 1-${MAX_BYPASS_SECONDS} (a bypass always ends by itself), got ${seconds}`,
      );
    }
    this.#drop(containerId, "replaced");
    const enforced = await this.#apply(containerId, "bypass", signal, seconds);
    const timer = setTimeout(() => void this.#expire(containerId), seconds * 1000);
    // The drain cancels timers; one must never keep the process alive on its own.
    timer.unref();
    this.#held.set(containerId, { mode: "bypass", untilMs: this.#now() + seconds * 1000, enforced, timer });
    return enforced;
  }

  /** Every container not in the default mode, by container id. */
  list(): ContainerModeState[] {
    const now = this.#now();
    return [...this.#held]
      .map(([containerId, h]) => ({
        containerId,
        mode: h.mode,
        secondsLeft: h.mode === "bypass" ? Math.max(0, Math.ceil((h.untilMs - now) / 1000)) : 0,
        enforced: h.enforced,
      }))
      .sort((a, b) => (a.containerId < b.containerId ? -1 : 1));
  }

  /** The container is gone: its mode goes with it (no timer left behind). */
  forget(containerId: string): void {
    this.#drop(containerId, "container_gone");
  }

  /**
   * Every container back to enforced, in the kernel too (FirewallRemove: no bypass or disable
   * outlives the stack); a failure is logged and the others still go back.
   */
  async restoreAll(): Promise<void> {
    const ids = [...this.#held.keys()];
    this.clear("stack_down");
    for (const containerId of ids) {
      try {
        await this.#apply(containerId, "enforced");
      } catch (err) {
        this.#log.error({ err, containerId, event: "mode_restore_failed" }, "could not restore enforcement");
      }
    }
  }

  /** Cancels every bypass timer and forgets every mode (the drain: the enforcement clears the kernel's). */
  clear(cause: BypassEndCause = "shutdown"): void {
    for (const [containerId, h] of this.#held) {
      clearTimeout(h.timer);
      if (h.mode === "bypass") this.#onBypassEnd?.(containerId, cause);
    }
    const bypasses = [...this.#held.values()].filter((h) => h.mode === "bypass").length;
    this.#held.clear();
    if (bypasses > 0)
      this.#log.info({ event: "bypasses_cancelled", count: bypasses }, "bypass timers cancelled");
  }

  async #expire(containerId: string): Promise<void> {
    const held = this.#held.get(containerId);
    if (held?.mode !== "bypass") return;
    this.#held.delete(containerId);
    this.#log.info({ event: "bypass_expired", containerId }, "bypass ended; egress enforced again");
    this.#onBypassEnd?.(containerId, "expired");
    try {
      await this.#apply(containerId, "enforced");
    } catch (err) {
      this.#log.error({ err, containerId, event: "bypass_expiry_failed" }, "could not restore enforcement");
    }
  }

  #drop(containerId: string, cause: BypassEndCause): void {
    const held = this.#held.get(containerId);
    if (held === undefined) return;
    clearTimeout(held.timer);
    this.#held.delete(containerId);
    if (held.mode === "bypass") this.#onBypassEnd?.(containerId, cause);
  }

  async #apply(
    containerId: string,
    mode: ContainerMode,
    signal?: AbortSignal,
    seconds?: number,
  ): Promise<boolean> {
    const enforced = (await this.#enforcer?.apply(containerId, mode, signal, seconds)) ?? false;
    this.#log.info(
      { event: "container_mode", containerId, mode, enforced },
      enforced ? "firewall mode applied" : "firewall mode recorded; no enrolment enforces it yet",
    );
    return enforced;
  }
}
