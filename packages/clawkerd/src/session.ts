// One Session stream (API.md §3). The first command must be Hello. Each ShellCommand runs as a
// Job in the executor; this Session is the job's blocking watcher, so its output is streamed
// from the first byte, in chunks <= 64 KiB, and the gRPC stream's write()/'drain' backpressure
// pauses the job's pipes instead of buffering without bound. A shell that carries our
// flow-control extension (CommandFlowControl) also waits for its own output credit, so a slow
// reader of one command holds back only that command. Every ShellCommand ends with exactly one
// Done or Error. When the stream ends, the commands it started are killed (cancel/error at once;
// a client half-close lets them finish first).
import type { ServerDuplexStream } from "@grpc/grpc-js";
import { CLAWKERD_ERRORS, clawkerd } from "@clawker/proto";
import { CreditWindow } from "./credit-window.js";
import { ClawkerdError } from "./errors.js";
import type { Executor } from "./executor.js";
import type { Job, ShellSpec } from "./job.js";
import type { Logger } from "./log.js";
import type { MainCommand } from "./main-command.js";
import type { Watcher } from "./output-buffer.js";
import type { Registrar } from "./registrar.js";
import type { StateStore } from "./state-store.js";

type Command = clawkerd.Command;
type Response = clawkerd.Response;
type Payload = NonNullable<Response["payload"]>;

/** What a Session needs from the rest of clawkerd. */
export interface SessionDeps {
  readonly executor: Executor;
  readonly registrar: Registrar;
  readonly state: StateStore;
  readonly main: MainCommand;
  readonly log: Logger;
  /** Called when a ShellCommand with exit_on_non_zero ended non-zero (after its Done was written). */
  readonly requestExit: (code: number) => void;
}

const MAX_SIGNAL = 64;

/**
 * Stdin bytes held per command (FlowControlOffer.stdin_window_bytes): a flow-controlled sender
 * stays within it; past it (a sender that ignores it, e.g. a Go control plane) the Session stops
 * reading the stream until that command's stdin is down to half.
 */
export const STDIN_WINDOW_BYTES = 1 << 20;

/** One running ShellCommand of this Session. */
interface Running {
  readonly job: Job;
  readonly watcher: Watcher;
  /** The output credit of a flow-controlled shell; undefined: paced by the stream alone. */
  readonly credit: CreditWindow | undefined;
  /** Stdin bytes handed on since the last StdinCredit (flow-controlled shells only). */
  stdinFreed: number;
}

/** A Session on one call. close() kills what it started and ends the stream. */
export class Session {
  readonly #call: ServerDuplexStream<Command, Response>;
  readonly #d: SessionDeps;
  readonly #log: Logger;
  readonly #ids = new Set<string>();
  readonly #jobs = new Map<string, Running>();
  readonly #drainWaiters = new Set<() => void>();
  /** Commands whose stdin is over STDIN_WINDOW_BYTES: while any, the stream is not read. */
  readonly #stdinFull = new Set<string>();
  #hello = false;
  #closed = false;
  #halfClosed = false;

  constructor(
    readonly id: number,
    call: ServerDuplexStream<Command, Response>,
    deps: SessionDeps,
  ) {
    this.#call = call;
    this.#d = deps;
    this.#log = deps.log.child({ session: id });
    call.setMaxListeners(0);
    call.on("data", (cmd: Command) => this.#onCommand(cmd));
    call.on("drain", () => this.#wakeDrain());
    call.on("end", () => {
      this.#halfClosed = true;
      this.#maybeEnd();
    });
    call.on("cancelled", () => this.close("cancelled"));
    call.on("error", (err) => {
      this.#log.debug({ err, event: "session_error" }, "session stream error");
      this.close("error");
    });
    call.on("close", () => this.close("closed"));
    this.#log.info({ peer: call.getPeer(), event: "session_opened" }, "session opened");
  }

  /** Commands of this session still running. */
  get running(): number {
    return this.#jobs.size;
  }

  /** Kills this session's running commands and ends the stream. Idempotent. */
  close(why = "closed"): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const { job, watcher, credit } of this.#jobs.values()) {
      job.kill();
      void watcher.return();
      credit?.close();
    }
    this.#wakeDrain();
    this.#log.info({ why, killed: this.#jobs.size, event: "session_closed" }, "session closed");
    try {
      this.#call.end();
    } catch {
      // the stream is already gone
    }
  }

  #send(commandId: string, payload: Payload): boolean {
    if (this.#closed) return true;
    try {
      return this.#call.write({ commandId, payload });
    } catch (err) {
      this.#log.debug({ err, event: "write_failed" }, "write after the stream ended");
      return true;
    }
  }

  #error(commandId: string, code: clawkerd.ErrorCode, message: string): void {
    this.#send(commandId, { $case: "error", value: { code, message } });
  }

  #drained(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    return new Promise((resolve) => this.#drainWaiters.add(resolve));
  }

  #wakeDrain(): void {
    const waiters = [...this.#drainWaiters];
    this.#drainWaiters.clear();
    for (const w of waiters) w();
  }

  #onCommand(cmd: Command): void {
    if (this.#closed) return;
    const id = cmd.commandId;
    const p = cmd.payload;
    if (!this.#hello) {
      if (p?.$case !== "hello") {
        this.#error(id, clawkerd.ErrorCode.ERROR_CODE_INVALID_REQUEST, "the first command must be Hello");
        this.#log.warn({ event: "hello_missing", got: p?.$case ?? "none" }, "first command was not Hello");
        this.#closed = true;
        this.#call.emit("error", CLAWKERD_ERRORS.status("hello_required", "the first command must be Hello"));
        return;
      }
    }
    if (p === undefined) {
      return this.#error(id, clawkerd.ErrorCode.ERROR_CODE_INVALID_REQUEST, "command without a payload");
    }
    if (p.$case === "stdin") return this.#withRunning(id, (job) => this.#stdin(id, job, p.value.data));
    if (p.$case === "outputCredit") {
      // Never answered: a credit that crosses its command's Done is expected, not an error.
      this.#jobs.get(id)?.credit?.add(p.value.bytes, p.value.chunks);
      return;
    }
    if (p.$case === "closeStdin") return this.#withRunning(id, (job) => job.closeStdin());
    if (p.$case === "signal") {
      const signo = p.value.signo;
      if (!Number.isInteger(signo) || signo <= 0 || signo > MAX_SIGNAL) {
        return this.#error(id, clawkerd.ErrorCode.ERROR_CODE_INVALID_REQUEST, `bad signal number ${signo}`);
      }
      return this.#withRunning(id, (job) => job.signal(signo));
    }
    // Everything else opens a new command id.
    if (this.#ids.has(id)) {
      return this.#error(
        id,
        clawkerd.ErrorCode.ERROR_CODE_INVALID_REQUEST,
        `command id ${JSON.stringify(id)} was already used in this session`,
      );
    }
    this.#ids.add(id);
    switch (p.$case) {
      case "hello":
        this.#hello = true;
        this.#send(id, {
          $case: "helloAck",
          value: {
            initialized: this.#d.state.initialized,
            cmdRunning: this.#d.main.isRunning,
            flowControl: { stdinWindowBytes: STDIN_WINDOW_BYTES },
          },
        });
        return;
      case "shell":
        void this.#runShell(id, p.value);
        return;
      case "registerRequired":
        void this.#d.registrar.register().then((o) => this.#send(id, { $case: "registerDone", value: o }));
        return;
      case "agentReady":
        this.#d.main.start(p.value.defaultCmd).then(
          (started) => {
            if (!started)
              this.#log.info(
                { event: "main_already_started" },
                "AgentReady again: main command already started",
              );
          },
          (err: unknown) => this.#failed(id, err),
        );
        return;
      case "agentInitialized":
        this.#d.state.setInitialized().then(
          () => this.#log.info({ event: "initialized" }, "one-time initialisation recorded"),
          (err: unknown) => this.#failed(id, err),
        );
        return;
    }
  }

  #failed(id: string, err: unknown): void {
    const e =
      err instanceof ClawkerdError ? err : new ClawkerdError("io_error", "internal error", { cause: err });
    this.#log.warn({ err, command: id, event: "command_failed" }, "command failed");
    this.#error(id, e.code, e.message);
  }

  #withRunning(id: string, fn: (job: Job) => void): void {
    const entry = this.#jobs.get(id);
    if (entry === undefined || !entry.job.isRunning) {
      return this.#error(
        id,
        clawkerd.ErrorCode.ERROR_CODE_UNKNOWN_COMMAND_ID,
        `no running command ${JSON.stringify(id)}`,
      );
    }
    fn(entry.job);
  }

  // Queues stdin; past the window, stop reading the whole stream (HTTP/2 then holds the sender).
  #stdin(id: string, job: Job, data: Buffer): void {
    job.writeStdin(data);
    if (job.stdinQueued > STDIN_WINDOW_BYTES && !this.#stdinFull.has(id)) {
      this.#stdinFull.add(id);
      this.#log.debug(
        { command: id, queued: job.stdinQueued, event: "stdin_window_full" },
        "stdin over its window: session reads paused",
      );
      if (this.#stdinFull.size === 1) this.#call.pause();
    }
  }

  // Stdin bytes left a job's queue: credit them to a flow-controlled sender, resume reading.
  #stdinWritten(id: string, entry: Running, bytes: number): void {
    if (this.#jobs.get(id) !== entry) return; // the command answered Done/Error already
    if (this.#stdinFull.has(id) && entry.job.stdinQueued <= STDIN_WINDOW_BYTES / 2) this.#stdinDrained(id);
    if (entry.credit === undefined) return;
    entry.stdinFreed += bytes;
    // Batched, but never held back when the queue ran empty: the sender may be waiting on it.
    if (entry.stdinFreed >= STDIN_WINDOW_BYTES / 4 || entry.job.stdinQueued === 0) {
      this.#send(id, { $case: "stdinCredit", value: { bytes: entry.stdinFreed } });
      entry.stdinFreed = 0;
    }
  }

  #stdinDrained(id: string): void {
    if (this.#stdinFull.delete(id) && this.#stdinFull.size === 0 && !this.#closed) this.#call.resume();
  }

  async #runShell(id: string, shell: clawkerd.ShellCommand): Promise<void> {
    const flow = shell.flowControl;
    if (flow !== undefined && flow.outputWindowBytes === 0) {
      return this.#error(
        id,
        clawkerd.ErrorCode.ERROR_CODE_INVALID_REQUEST,
        "flow_control.output_window_bytes must be positive",
      );
    }
    const spec: ShellSpec = {
      stages: shell.stages.map((s) => ({ argv: s.argv, uid: s.uid, gid: s.gid, cwd: s.cwd, env: s.env })),
      timeoutSeconds: shell.timeoutSeconds,
      initialStdin: shell.initialStdin,
      printOutput: shell.printOutput,
    };
    let job: Job;
    try {
      job = this.#d.executor.start(`${this.id}/${id}`, spec);
    } catch (err) {
      return this.#failed(id, err);
    }
    // Registered before this tick ends, so no byte can be produced before we watch.
    const watcher = job.output.watch({ blocking: true });
    const credit =
      flow === undefined ? undefined : new CreditWindow(flow.outputWindowBytes, flow.outputWindowChunks);
    const entry: Running = { job, watcher, credit, stdinFreed: 0 };
    this.#jobs.set(id, entry);
    if (job.spawned) this.#send(id, { $case: "started", value: {} });
    job.on("stageExit", (e) => this.#send(id, { $case: "stageExit", value: e }));
    job.on("stdinWritten", (n) => this.#stdinWritten(id, entry, n));
    try {
      for await (const ev of watcher) {
        if (ev.type === "gap") {
          this.#log.warn(
            { command: id, missed: ev.missed, event: "output_gap" },
            "session watcher missed output",
          );
          continue;
        }
        if (credit === undefined) {
          if (!this.#send(id, { $case: "output", value: { data: ev.data } })) await this.#drained();
        } else {
          // Only this command waits for its credit; the watcher is not read meanwhile, so the
          // output buffer pauses this job's pipes and its processes block on write.
          let data = ev.data;
          while (data.length > 0 && !this.#closed) {
            const n = credit.spend(data.length);
            if (n === 0) {
              await credit.wait();
              continue;
            }
            const part = n === data.length ? data : data.subarray(0, n);
            data = data.subarray(n);
            if (!this.#send(id, { $case: "output", value: { data: part } })) await this.#drained();
          }
        }
        if (this.#closed) break;
        if (credit !== undefined) await this.#creditOrEnd(credit, watcher);
      }
      const result = await job.finished;
      if (result.kind === "done") {
        this.#send(id, { $case: "done", value: { finalExitCode: result.exitCode } });
        if (shell.exitOnNonZero && result.exitCode !== 0 && !this.#closed) {
          this.#log.warn(
            { command: id, exitCode: result.exitCode, event: "exit_on_non_zero" },
            "command failed with exit_on_non_zero",
          );
          this.#d.requestExit(result.exitCode < 0 ? 1 : result.exitCode);
        }
      } else {
        this.#error(id, result.error.code, result.error.message);
      }
    } finally {
      this.#jobs.delete(id);
      this.#stdinDrained(id);
      this.#maybeEnd();
    }
  }

  // Out of credit: waits before taking more from the watcher, so what the command writes meanwhile
  // stays in the buffer and goes out coalesced in as few messages as credit allows. The end of the
  // output needs no credit (Done goes out regardless), so that ends the wait too.
  async #creditOrEnd(credit: CreditWindow, watcher: Watcher): Promise<void> {
    let credited: Promise<void> | undefined;
    while (credit.exhausted && !credit.closed && !this.#closed && !watcher.atEnd) {
      // One credit wait across the loop: a command writing byte by byte adds no waiter per byte.
      credited ??= credit.wait().then(() => {
        credited = undefined;
      });
      await Promise.race([credited, watcher.changed()]);
    }
  }

  // After the client half-closed, end our side once the last command has answered.
  #maybeEnd(): void {
    if (this.#halfClosed && this.#jobs.size === 0 && !this.#closed) this.close("client_ended");
  }
}
