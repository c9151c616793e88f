// Per-container firewall modes: enforced (the default for every agent), disabled, or a bypass
// that ends by itself (a dead-man timer, at most an hour). Memory only: a control plane restart
// clears every bypass and disable, so every agent is enforced again (API.md §1, fail closed).
// Whether a mode is enforced is the enrolment's business (eBPF); without one it is only recorded.
import type { Logger } from "pino";
import { FirewallError } from "./errors.js";

/** The longest bypass (API.md §1). */
export const MAX_BYPASS_SECONDS = 3600;

/** What a container's egress is subject to. */
export type ContainerMode = "enforced" | "disabled" | "bypass";

/**
 * What puts a mode into effect for a container (the eBPF enrolment, when it lands). Resolves true
 * once the kernel enforces `mode`, false when nothing can (the mode is then only recorded).
 */
export interface ModeEnforcer {
  apply(containerId: string, mode: ContainerMode, signal?: AbortSignal): Promise<boolean>;
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

/** Options of ContainerModes. */
export interface ContainerModesOptions {
  readonly log: Logger;
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

  constructor(options: ContainerModesOptions) {
    this.#log = options.log;
    this.#enforcer = options.enforcer;
    this.#now = options.now ?? Date.now;
  }

  /** Back to the default: enforcement on (also ends a bypass early). */
  async enforce(containerId: string, signal?: AbortSignal): Promise<boolean> {
    this.#drop(containerId);
    return await this.#apply(containerId, "enforced", signal);
  }

  /** Takes the container out of enforcement until enforce() (or a control plane restart). */
  async disable(containerId: string, signal?: AbortSignal): Promise<boolean> {
    this.#drop(containerId);
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
    this.#drop(containerId);
    const enforced = await this.#apply(containerId, "bypass", signal);
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
    this.#drop(containerId);
  }

  /** Cancels every bypass timer and forgets every mode (the drain, FirewallRemove). */
  clear(): void {
    for (const h of this.#held.values()) clearTimeout(h.timer);
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
    try {
      await this.#apply(containerId, "enforced");
    } catch (err) {
      this.#log.error({ err, containerId, event: "bypass_expiry_failed" }, "could not restore enforcement");
    }
  }

  #drop(containerId: string): void {
    const held = this.#held.get(containerId);
    if (held === undefined) return;
    clearTimeout(held.timer);
    this.#held.delete(containerId);
  }

  async #apply(containerId: string, mode: ContainerMode, signal?: AbortSignal): Promise<boolean> {
    const enforced = (await this.#enforcer?.apply(containerId, mode, signal)) ?? false;
    this.#log.info(
      { event: "container_mode", containerId, mode, enforced },
      enforced ? "firewall mode applied" : "firewall mode recorded; no enrolment enforces it yet",
    );
    return enforced;
  }
}
