// The start-up's first steps, up to the first auth helper's spawn: reap what a SIGKILLed predecessor
// left, read the trust material, open the registry (a damaged one refuses the start before anything
// is spawned), write the auth helpers' configs and fork the first one. The auth helper's boot is the
// critical path of the start-up, so run.ts runs these steps on this small module graph and loads
// the daemon's own modules (gRPC, Docker, the firewall) only afterwards, while the helper boots.
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { Registry } from "./agents/registry.js";
import { prepareAuthProcesses, type AuthPlan } from "./auth-processes.js";
import type { Config } from "./config.js";
import type { Logger } from "./logging.js";
import { StartupTimeline } from "./startup-timeline.js";
import { SubprocessManager } from "./supervisor/subprocess-manager.js";
import { loadTrustDir, type TrustMaterial } from "./trust-dir.js";

/** Where the supervisor records its helpers, so a restart can kill what a SIGKILL of ours left. */
export const HELPER_RECORD_FILE = "helpers.json";

/** The daemon's sqlite file in the data dir: the registry's agents and the firewall's rules. */
export const DATABASE_FILE = "registry.db";

/** What the first steps leave for the Daemon: the first helper in `plan` is already forked. */
export interface Booted {
  readonly trust: TrustMaterial;
  readonly registry: Registry;
  readonly plan: AuthPlan;
}

/** The first start-up steps (through the first auth helper's spawn); the Daemon takes over from them. */
export class AuthBoot {
  /** Supervises the auth helpers from here on, and every later helper of the daemon. */
  readonly supervisor: SubprocessManager;
  /** This start's nonce: the embedded authserver's health answer must echo it. */
  readonly instance = randomBytes(18).toString("base64url");

  readonly #config: Config;
  readonly #timeline: StartupTimeline;
  #registry: Registry | undefined;
  #result: Promise<Booted> | undefined;
  /** Helper starts before the Daemon listens for them (it counts them in its metrics). */
  readonly #starts: string[] = [];
  #onStarted: ((name: string) => void) | undefined;

  constructor(config: Config, log: Logger) {
    this.#config = config;
    this.#timeline = new StartupTimeline(log);
    this.supervisor = new SubprocessManager({
      logger: log,
      graceMs: config.shutdownGraceMs,
      stateFile: join(config.dataDir, HELPER_RECORD_FILE),
      onStarted: (name) => (this.#onStarted === undefined ? this.#starts.push(name) : this.#onStarted(name)),
    });
  }

  /** The registry once opened, also when a later step failed (the drain closes it). */
  get registry(): Registry | undefined {
    return this.#registry;
  }

  /** Routes every helper start to `fn`, the ones already made first. */
  onHelperStarted(fn: (name: string) => void): void {
    for (const name of this.#starts.splice(0)) fn(name);
    this.#onStarted = fn;
  }

  /**
   * Runs the steps. Resolves once the first helper is forked or a step failed, never rejects: the
   * failure (already logged as a `failed` step) is `result`'s, for the Daemon's start to report.
   */
  async start(): Promise<void> {
    this.#result ??= this.#run();
    await this.#result.then(
      () => undefined,
      () => undefined,
    );
  }

  /** What the steps left, or the failed step's error; starts them if `start()` was not called. */
  get result(): Promise<Booted> {
    this.#result ??= this.#run();
    return this.#result;
  }

  async #run(): Promise<Booted> {
    const cfg = this.#config;
    const t = this.#timeline;
    // Before anything binds or spawns: helpers a SIGKILLed predecessor left holding their ports.
    await t.step("reap_leftovers", () => this.supervisor.reapLeftovers());
    const trust = t.stepSync("trust", () => loadTrustDir(cfg.trustDir));
    const registry = t.stepSync("registry", () => new Registry(join(cfg.dataDir, DATABASE_FILE)));
    this.#registry = registry;
    const plan = await t.step("auth_configs", () => prepareAuthProcesses(cfg, trust, this.instance));
    const first = plan.helpers[0];
    if (first !== undefined) {
      await t.step(`spawn_${first.name}`, () => this.supervisor.start(first.name, first.command));
    }
    return { trust, registry, plan };
  }
}
