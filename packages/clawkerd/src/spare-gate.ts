// A job's gate started before the job (issue 13's first byte): one `/bin/sh` kept waiting at its
// gate, as clawkerd's own user, so that StartJob finds its first process already running instead
// of paying for a fork of clawkerd's whole address space and an exec of the shell. When a job
// takes it, clawkerd places it (or hands its pid to the control plane) exactly as a gate spawned
// for the job, then writes one line: the job's directory, environment and target, quoted, which
// the shell evaluates to execute the target (through `setpriv` to the jobs' user when clawkerd is
// root). Until then it runs nothing of the job's. It waits as clawkerd's user (root in an agent):
// the agent's own processes (uid 1000) can neither write to its stdin through /proc nor trace it.
// Where clawkerd is root and Debian's perl is there (perl-base is Essential), the spare is a perl
// that drops to the jobs' user itself as it starts, then waits: the job's start then costs one
// exec (the target) instead of two (setpriv, then the target). Having changed its ids without an
// exec, the kernel keeps it undumpable (fs.suid_dumpable), so the jobs' user still cannot open its
// stdin or trace it while it waits; it checks its own ids and capabilities before it waits.
import { spawn, type ChildProcess } from "node:child_process";
import { Job } from "./job.js";
import type { Logger } from "./log.js";

/** Where the privilege drop comes from (util-linux, in every Debian image). */
export const SETPRIV = "/usr/bin/setpriv";

/** The spare that drops itself (perl-base, Essential in Debian). */
export const PERL = "/usr/bin/perl";

// The dropping spare (argv: uid gid). Groups first (as root): the job's gid as its only group,
// real/effective/saved gid, then uid (perl sets all three, which clears the capabilities); then
// /proc/self/status must say exactly that and fs.suid_dumpable must make it undumpable, or it
// exits 125 (the spare is not used). It then waits for one line of hex words: cwd, the number of
// environment pairs, the pairs, the argv. EOF without it exits 125 having run nothing. Core perl
// only: no module is loaded.
const PERL_SPARE = [
  String.raw`my ($u, $g) = @ARGV; $) = "$g $g"; $( = $g; $< = $> = $u;`,
  String.raw`open(my $st, "<", "/proc/self/status") or exit 125; my %s = map { /^(\w+):\s*(.*?)\s*$/ } <$st>; close $st;`,
  String.raw`exit 125 unless $s{Uid} eq join("\t", ($u) x 4) && $s{Gid} eq join("\t", ($g) x 4) && $s{Groups} eq $g`,
  String.raw`  && $s{CapPrm} =~ /^0+$/ && $s{CapEff} =~ /^0+$/ && $s{CapAmb} =~ /^0+$/;`,
  // Undumpable only where fs.suid_dumpable is 0 or 2 (1 would leave it open to the jobs' user).
  String.raw`open(my $sd, "<", "/proc/sys/fs/suid_dumpable") or exit 125; exit 125 unless <$sd> =~ /^[02]$/;`,
  String.raw`my $l = <STDIN>; exit 125 unless defined $l && chomp($l);`,
  String.raw`my ($cwd, $n, @w) = map { pack("H*", $_) } split(/ /, $l, -1);`,
  String.raw`if ($cwd ne "" && !chdir($cwd)) { print STDERR "clawker-job: cd $cwd: $!\n"; exit 127 }`,
  String.raw`for (1 .. $n) { my $k = shift @w; $ENV{$k} = shift @w }`,
  String.raw`open(STDIN, "<", "/dev/null") or exit 125; exec { $w[0] } @w;`,
  String.raw`print STDERR "clawker-job: cannot run $w[0]: $!\n"; exit 127;`,
].join("\n");

// What perl reads from its environment as it starts (as root): not given to the dropping spare.
const PERL_STARTUP_NAME = /^PERL/;

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

/** Hex of `s` (UTF-8), as the dropping spare's line carries each word. */
function hexWord(s: string): string {
  return Buffer.from(s).toString("hex");
}

/**
 * The line a dropping spare (PERL_SPARE) reads: cwd, the number of environment pairs, the pairs,
 * the argv, each in hex. Undefined under the same rules as gateLine's (the request then gets a
 * gate of its own), so both spares take the same jobs.
 */
export function dropLine(t: GateTarget, drop: DropTo): string | undefined {
  if (gateLine(t, drop) === undefined) return undefined;
  const env = Object.entries(t.env);
  return [t.cwd, String(env.length), ...env.flat(), ...t.argv].map(hexWord).join(" ") + "\n";
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
  /** false: never the dropping spare (PERL_SPARE), only setpriv's; default true. */
  readonly selfDrop?: boolean;
}

/** Keeps one spare gate ready; take() hands it to a job. */
export class SpareGate {
  readonly #o: SpareGateOptions;
  readonly #drop: DropTo | undefined;
  #usable = false;
  /** The spare drops itself (PERL_SPARE) instead of executing setpriv at the job's start. */
  #selfDrop = false;
  #spare: Job | undefined;
  /** The spare set aside for the control plane's next placed job (reserve()). */
  #reserved: { readonly uuid: string; readonly job: Job } | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  /** The checks of start(), while they run; then whether a spare is used. */
  #probing: Promise<void> | undefined;
  readonly #checks = new Set<ChildProcess>();

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
   * How a spare drops to the jobs' user: itself (perl), through setpriv, or not at all; known
   * once the checks of start() answered (by the time the first spare waits).
   */
  get dropBy(): "perl" | "setpriv" | "none" {
    return this.#drop === undefined ? "none" : this.#selfDrop ? "perl" : "setpriv";
  }

  /**
   * Starts the first spare, after checking once that setpriv drops to the jobs' user here (a
   * missing one, or busybox's, which has no --reuid: every job then gets a gate of its own). The
   * checks run in the background: clawkerd's start (listen, the Session, registration) does not
   * wait for perl's or setpriv's exec; until they answer, a job gets a gate of its own.
   */
  start(): void {
    if (this.#probing !== undefined) return;
    this.#probing = this.#probe().then(
      (usable) => {
        if (!usable || this.#closed) return;
        this.#usable = true;
        this.#fill();
      },
      (err: unknown) =>
        this.#o.log.warn(
          { err, event: "spare_gate_unavailable" },
          "spare gate check failed; jobs spawn their own",
        ),
    );
  }

  /** Whether a spare can be used here: perl drops itself, or setpriv drops, or no drop is needed. */
  async #probe(): Promise<boolean> {
    const drop = this.#drop;
    if (drop !== undefined && this.#o.selfDrop !== false) {
      // The dropping spare, tried once with an empty line: 127 (`exec` of nothing) after its checks.
      const status = await this.#exitOf(PERL, this.#perlArgs(drop), this.#perlEnv(), "\n");
      this.#selfDrop = status === 127;
      if (!this.#selfDrop)
        this.#o.log.info(
          { perl: PERL, event: "spare_gate_self_drop_unavailable" },
          "spare gates drop through setpriv",
        );
    }
    if (drop !== undefined && !this.#selfDrop && !this.#closed) {
      const argv = [
        `--reuid=${drop.uid}`,
        `--regid=${drop.gid}`,
        "--clear-groups",
        "--",
        "/bin/sh",
        "-c",
        "exit 0",
      ];
      if ((await this.#exitOf(SETPRIV, argv, undefined, undefined)) !== 0) {
        this.#o.log.info(
          { setpriv: SETPRIV, event: "spare_gate_unavailable" },
          "no usable setpriv: every job spawns its own gate",
        );
        return false;
      }
    }
    return !this.#closed;
  }

  /**
   * A check's exit status (null: it could not run, was signalled or ran over 10 s). Tracked so
   * that close() ends a check still running.
   */
  #exitOf(
    file: string,
    args: string[],
    env: Record<string, string> | undefined,
    input: string | undefined,
  ): Promise<number | null> {
    if (this.#closed) return Promise.resolve(null);
    return new Promise((resolve) => {
      const child = spawn(file, args, {
        stdio: [input === undefined ? "ignore" : "pipe", "ignore", "ignore"],
        ...(env === undefined ? {} : { env }),
        timeout: 10_000,
      });
      this.#checks.add(child);
      child.stdin?.on("error", () => undefined).end(input);
      child.once("error", () => {
        this.#checks.delete(child);
        resolve(null);
      });
      child.once("close", (code) => {
        this.#checks.delete(child);
        resolve(code);
      });
    });
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
    const line = this.#lineFor(t);
    if (line === undefined) return undefined;
    this.#spare = undefined;
    this.#refillLater();
    return { job: spare, line: Buffer.from(line) };
  }

  /**
   * Starts a spare set aside for job `uuid` (the control plane moves it into that job's cgroups
   * before the job is asked for) and answers its pid; undefined when no spare can wait here. A
   * previous reservation ends first (its spare runs nothing). A spare of its own, not the one
   * waiting for any start: this call is on no job's start, a StartJob meanwhile still finds that.
   */
  reserve(uuid: string): number | undefined {
    this.#endReserved();
    if (this.#closed || !this.#usable) return undefined;
    const spare = this.#spawn();
    if (spare === undefined) return undefined;
    this.#reserved = { uuid, job: spare };
    return spare.pids[0];
  }

  /**
   * The spare reserved for job `uuid`, with the line that makes it execute `t`, while its
   * process has not been reaped (so the pid the control plane moved was this spare's); undefined
   * otherwise. The reservation ends either way: a spare that cannot carry `t` ends having run
   * nothing.
   */
  takeReserved(uuid: string, t: GateTarget): { job: Job; line: Buffer } | undefined {
    const r = this.#reserved;
    if (r === undefined || r.uuid !== uuid) return undefined;
    this.#reserved = undefined;
    const line = r.job.isFirstUnreaped ? this.#lineFor(t) : undefined;
    if (line === undefined) {
      endSpare(r.job);
      return undefined;
    }
    return { job: r.job, line: Buffer.from(line) };
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
    for (const check of this.#checks) check.kill("SIGKILL");
    await this.#probing;
    clearTimeout(this.#timer);
    const spares = [this.#spare, this.#reserved?.job].filter((j): j is Job => j !== undefined);
    this.#spare = undefined;
    this.#reserved = undefined;
    for (const j of spares) endSpare(j);
    await Promise.all(spares.map((j) => j.finished));
  }

  #lineFor(t: GateTarget): string | undefined {
    return this.#selfDrop ? dropLine(t, this.#drop!) : gateLine(t, this.#drop);
  }

  #endReserved(): void {
    const r = this.#reserved;
    this.#reserved = undefined;
    if (r !== undefined) endSpare(r.job);
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

  #perlArgs(drop: DropTo): string[] {
    return ["-e", PERL_SPARE, String(drop.uid), String(drop.gid)];
  }

  #perlEnv(): Record<string, string> {
    return Object.fromEntries(Object.entries(this.#o.baseEnv).filter(([k]) => !PERL_STARTUP_NAME.test(k)));
  }

  #fill(): void {
    if (this.#closed || !this.#usable || this.#spare?.isRunning === true) return;
    this.#spare = this.#spawn();
  }

  #spawn(): Job | undefined {
    const drop = this.#selfDrop ? this.#drop : undefined;
    const job = new Job(
      "spare-gate",
      {
        stages: [
          {
            argv: drop ? [PERL, ...this.#perlArgs(drop)] : ["/bin/sh", "-c", SPARE_SCRIPT, "clawker-job"],
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
      // Perl reads PERL5OPT/PERL5LIB as it starts, as root: those are left out of its environment.
      { log: this.#o.log, baseEnv: drop ? this.#perlEnv() : this.#o.baseEnv },
    );
    if (!job.spawned) {
      this.#o.log.warn({ event: "spare_gate_failed" }, "cannot start a spare job gate; jobs spawn their own");
      return undefined;
    }
    return job;
  }
}

/** Ends a spare that will not be used: EOF at its read (exit 125, nothing run), and a kill. */
export function endSpare(job: Job): void {
  job.closeStdin();
  job.kill();
}
