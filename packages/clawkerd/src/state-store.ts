// clawkerd's small persistent state (one JSON file, written atomically, 0600): whether the
// one-time initialisation finished, and the registration record. The registration record is
// written *before* the assertion leaves the container, so a clawkerd restarted mid-exchange
// never sends the single-use assertion twice.
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ClawkerdError } from "./errors.js";

/** Default state directory inside the agent container. */
export const DEFAULT_STATE_DIR = "/run/clawker/state";
/** The state file's name inside the state directory. */
export const STATE_FILE = "clawkerd-state.json";

/** The registration record: begun (assertion about to be / being sent) or its outcome. */
export type RegistrationRecord =
  | { readonly phase: "started"; readonly at: string }
  | { readonly phase: "done"; readonly ok: boolean; readonly error: string; readonly at: string };

interface StateFile {
  version: 1;
  initialized: boolean;
  registration?: RegistrationRecord;
}

/** The state file, cached in memory; writes are serialised. */
export class StateStore {
  readonly path: string;
  #state: StateFile = { version: 1, initialized: false };
  #writes: Promise<void> = Promise.resolve();

  constructor(readonly dir: string) {
    this.path = join(dir, STATE_FILE);
  }

  /** Creates the directory (0700) and reads the file if present; throws ClawkerdError("state_io"). */
  async load(): Promise<void> {
    try {
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new ClawkerdError("state_io", `cannot create state dir ${this.dir}`, { cause: err });
    }
    let raw: string;
    try {
      raw = await readFile(this.path, "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      throw new ClawkerdError("state_io", `cannot read ${this.path}`, { cause: err });
    }
    try {
      const parsed = JSON.parse(raw) as Partial<StateFile>;
      this.#state = {
        version: 1,
        initialized: parsed.initialized === true,
        ...(isRecord(parsed.registration) ? { registration: parsed.registration } : {}),
      };
    } catch (err) {
      throw new ClawkerdError("state_io", `corrupt state file ${this.path}`, { cause: err });
    }
  }

  /** True once AgentInitialized was recorded. */
  get initialized(): boolean {
    return this.#state.initialized;
  }

  /** The registration record, if any. */
  get registration(): RegistrationRecord | undefined {
    return this.#state.registration;
  }

  /** Records the one-time initialisation. */
  setInitialized(): Promise<void> {
    this.#state = { ...this.#state, initialized: true };
    return this.#save();
  }

  /** Records a registration phase. */
  setRegistration(record: RegistrationRecord): Promise<void> {
    this.#state = { ...this.#state, registration: record };
    return this.#save();
  }

  #save(): Promise<void> {
    const body = JSON.stringify(this.#state) + "\n";
    const next = this.#writes.then(async () => {
      const tmp = `${this.path}.${process.pid}.tmp`;
      try {
        await writeFile(tmp, body, { mode: 0o600 });
        await rename(tmp, this.path);
      } catch (err) {
        throw new ClawkerdError("state_io", `cannot write ${this.path}`, { cause: err });
      }
    });
    this.#writes = next.catch(() => undefined);
    return next;
  }
}

function isRecord(v: unknown): v is RegistrationRecord {
  if (typeof v !== "object" || v === null) return false;
  const r = v as Record<string, unknown>;
  if (r["phase"] === "started") return typeof r["at"] === "string";
  return r["phase"] === "done" && typeof r["ok"] === "boolean" && typeof r["error"] === "string";
}
