// A job's gate started before the job (issue 13's first byte): one `/bin/sh` kept waiting at its
// gate, as clawkerd's own user, so that StartJob finds its first process already running instead
// of paying for a fork of clawkerd's whole address space and an exec of the shell. When a job
// takes it, clawkerd places it (or hands its pid to the control plane) exactly as a gate spawned
// for the job, then writes one line: the job's directory, environment and target, quoted, which
// the shell evaluates to execute the target (through `setpriv` to the jobs' user when clawkerd is
// root). Until then it runs nothing of the job's. It waits as clawkerd's user (root in an agent):
// the agent's own processes (uid 1000) can neither write to its stdin through /proc nor trace it.
import { spawnSync } from "node:child_process";
import { Job } from "./job.js";
import type { Logger } from "./log.js";

/** Where the privilege drop comes from (util-linux, in every Debian image). */
export const SETPRIV = "/usr/bin/setpriv";

// The spare's script: a newline in a variable (a quoted newline cannot cross `read`), then one
// line, evaluated. EOF without the line (clawkerd gone, or the spare no longer wanted) exits 125
// having run nothing. The names are unlikely in any environment, so nothing exported is changed.
const SPARE_SCRIPT = `__clawker_nl='\n'; IFS= read -r __clawker_line || exit 125; eval "$__clawker_line"`;

// Names the shell can assign, except the spare's own (an assigned __clawker_nl would change the
// newlines of the words after it).
const ENV_NAME = /^(?!__clawker_)[A-Za-z_][A-Za-z0-9_]*$/;

// What a job's environment would make setpriv load or read while it still runs as root, before
// it drops to the jobs' user: glibc's dynamic-loader and "unsecure" variables (ignored only for
// set-uid programs, which setpriv is not), and locale or time-zone names that are paths. Such a
// job gets a gate of its own, where the environment first applies after the drop.
const ROOT_STEERING_NAME =
  /^(LD_.*|MALLOC_.*|GCONV_PATH|GETCONF_DIR|GLIBC_TUNABLES|HOSTALIASES|LOCALDOMAIN|LOCPATH|NIS_PATH|NLSPATH|RESOLV_HOST_CONF|RES_OPTIONS|TMPDIR|TZDIR)$/;
const LOCALE_NAME = /^(LANG|LANGUAGE|LC_[A-Z_]+|TZ)$/;

/** Whether `env` would steer setpriv while it runs as root (see ROOT_STEERING_NAME). */
function steersRoot(env: Readonly<Record<string, string>>): boolean {
  return Object.entries(env).some(
    ([k, v]) => ROOT_STEERING_NAME.test(k) || (LOCALE_NAME.test(k) && (v.includes("/") || v.startsWith(":"))),
  );
}

/** What a job asks of its first process. */
export interface GateTarget {
  readonly argv: readonly string[];
  /** "" keeps clawkerd's. */
  readonly cwd: string;
  /** Over the spare's environment (clawkerd's base). */
  readonly env: Readonly<Record<string, string>>;
}

/** The ids the target runs as, when they differ from clawkerd's (then through setpriv). */
export interface DropTo {
  readonly uid: number;
  readonly gid: number;
}

/** Quotes `s` as one word for the spare's shell (single quotes; a newline through its variable). */
export function shellWord(s: string): string {
  return `'${s.replaceAll("'", `'\\''`).replaceAll("\n", `'"$__clawker_nl"'`)}'`;
}

/**
 * The line a spare evaluates: change to `cwd`, export `env`, execute the target with stdin from
 * /dev/null (as the gate spawned for a job does), dropping to `drop` when given. Undefined when
 * the shell cannot carry the request as given (an environment name it cannot assign or its own, a
 * NUL), or when dropping and the environment would steer setpriv as root: such a job gets a gate
 * of its own.
 */
export function gateLine(t: GateTarget, drop: DropTo | undefined): string | undefined {
  const words = [t.cwd, ...t.argv, ...Object.keys(t.env), ...Object.values(t.env)];
  if (words.some((w) => w.includes("\0")) || Object.keys(t.env).some((k) => !ENV_NAME.test(k)))
    return undefined;
  if (drop !== undefined && steersRoot(t.env)) return undefined;
  const parts: string[] = [];
  // 127 as `exec` of a missing program: the job ends FAILED spawn_failed either way.
  if (t.cwd !== "") parts.push(`cd -- ${shellWord(t.cwd)} || exit 127`);
  for (const [k, v] of Object.entries(t.env)) parts.push(`${k}=${shellWord(v)}`, `export ${k}`);
  const via =
    drop === undefined ? [] : [SETPRIV, `--reuid=${drop.uid}`, `--regid=${drop.gid}`, "--clear-groups", "--"];
  parts.push(`exec ${[...via.map(shellWord), ...t.argv.map(shellWord)].join(" ")} </dev/null`);
  return parts.join("; ") + "\n";
}

/** Construction options. */
export interface SpareGateOptions {
  readonly log: Logger;
  /** The environment jobs start from (clawkerd's, minus CLAWKERD_*). */
  readonly baseEnv: Readonly<Record<string, string>>;
  /** The ids jobs run as. */
  readonly runAs: DropTo;
  /** After a spare is taken, how long until the next is started; default 50 ms. */
  readonly refillDelayMs?: number;
}

/** Keeps one spare gate ready; take() hands it to a job. */
export class SpareGate {
  readonly #o: SpareGateOptions;
  readonly #drop: DropTo | undefined;
  #usable = false;
  #spare: Job | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(options: SpareGateOptions) {
    this.#o = options;
    const uid = process.getuid?.() ?? 0;
    const gid = process.getgid?.() ?? 0;
    const isOwn = options.runAs.uid === uid && options.runAs.gid === gid;
    this.#drop = isOwn ? undefined : options.runAs;
  }

  /** The waiting spare's pid (tests), if one waits. */
  get pid(): number | undefined {
    return this.#spare?.isRunning === true ? this.#spare.pids[0] : undefined;
  }

  /**
   * Starts the first spare, after checking once that setpriv drops to the jobs' user here (a
   * missing one, or busybox's, which has no --reuid: every job then gets a gate of its own).
   */
  start(): void {
    const drop = this.#drop;
    if (drop !== undefined) {
      const probe = spawnSync(
        SETPRIV,
        [`--reuid=${drop.uid}`, `--regid=${drop.gid}`, "--clear-groups", "--", "/bin/sh", "-c", "exit 0"],
        { stdio: "ignore", timeout: 10_000 },
      );
      if (probe.status !== 0) {
        this.#o.log.info(
          { setpriv: SETPRIV, event: "spare_gate_unavailable" },
          "no usable setpriv: every job spawns its own gate",
        );
        return;
      }
    }
    this.#usable = true;
    this.#fill();
  }

  /**
   * The spare for a job that wants `t`, with the line that makes it execute the target, or
   * undefined (none ready, or `t` needs a gate of its own). The next spare follows a little
   * later, after the taking job's own calls.
   */
  take(t: GateTarget): { job: Job; line: Buffer } | undefined {
    const spare = this.#spare;
    if (spare === undefined || !spare.isRunning) {
      this.#refillLater();
      return undefined;
    }
    const line = gateLine(t, this.#drop);
    if (line === undefined) return undefined;
    this.#spare = undefined;
    this.#refillLater();
    return { job: spare, line: Buffer.from(line) };
  }

  /**
   * The taking job's start is over (its first output went out, or it ended): the next spare
   * starts once the pending I/O is flushed instead of at the timer, ready for a next StartJob.
   */
  refillSoon(): void {
    if (this.#timer === undefined) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    setImmediate(() => this.#fill());
  }

  /** Ends the waiting spare (it runs nothing) and starts no other. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#timer);
    const spare = this.#spare;
    this.#spare = undefined;
    if (spare === undefined) return;
    spare.closeStdin();
    spare.kill();
    await spare.finished;
  }

  // Not at once: a spawn blocks clawkerd's loop for a fork, and the taking job's watcher is due.
  #refillLater(): void {
    if (this.#closed || !this.#usable || this.#timer !== undefined) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#fill();
    }, this.#o.refillDelayMs ?? 50);
    this.#timer.unref();
  }

  #fill(): void {
    if (this.#closed || !this.#usable || this.#spare?.isRunning === true) return;
    const job = new Job(
      "spare-gate",
      {
        stages: [
          {
            argv: ["/bin/sh", "-c", SPARE_SCRIPT, "clawker-job"],
            uid: process.getuid?.() ?? 0,
            gid: process.getgid?.() ?? 0,
            cwd: "",
            env: {},
          },
        ],
        timeoutSeconds: 0,
        initialStdin: Buffer.alloc(0),
        printOutput: false,
      },
      { log: this.#o.log, baseEnv: this.#o.baseEnv },
    );
    if (!job.spawned) {
      this.#o.log.warn({ event: "spare_gate_failed" }, "cannot start a spare job gate; jobs spawn their own");
      return;
    }
    this.#spare = job;
  }
}
