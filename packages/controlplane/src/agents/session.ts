// One open Session stream to a clawkerd (API.md §3), control-plane side: routes Responses to the
// command that asked by command_id, enforces "exactly one Done or Error per ShellCommand", and
// publishes command progress on the overseer's commands topic.
import type { ClientDuplexStream } from "@grpc/grpc-js";
import { clawkerd } from "@clawker/proto";
import type { CommandEvent, CommandPlan, Topic } from "@clawker/overseer";
import type { Logger } from "../logging.js";

/** Why a Session operation failed. */
export type SessionErrorReason =
  "session_closed" | "timeout" | "protocol" | "duplicate_command" | "command_failed";

/** A Session operation failed; `reason` is stable. */
export class SessionError extends Error {
  readonly reason: SessionErrorReason;
  constructor(reason: SessionErrorReason, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SessionError";
    this.reason = reason;
  }
}

/** How a ShellCommand ended when it ended with Error (ErrorCode name and message). */
export class CommandError extends SessionError {
  readonly code: string;
  constructor(code: string, message: string) {
    super("command_failed", `${code}: ${message}`);
    this.name = "CommandError";
    this.code = code;
  }
}

/** Options for one command sent with `exec`. */
export interface ExecOptions {
  /** Which plan it belongs to (default "user"). */
  readonly plan?: CommandPlan;
  /** Short human description for the commands topic; never secrets. Default "exec". */
  readonly description?: string;
  /** The command_id; default `<plan>-<n>`. Must not be in flight. */
  readonly commandId?: string;
}

/** Options of an AgentSession. */
export interface AgentSessionOptions {
  readonly containerId: string;
  readonly stream: ClientDuplexStream<clawkerd.Command, clawkerd.Response>;
  readonly commands?: Pick<Topic<CommandEvent>, "publish">;
  readonly log: Logger;
  readonly now?: () => number;
  /** Responses buffered for one slow reader before the stream is paused. Default 64. */
  readonly highWaterMark?: number;
}

interface Pending {
  readonly resolve: (r: clawkerd.Response) => void;
  readonly reject: (err: Error) => void;
}

/** Buffers one command's Responses for its async iterator; ends after the first Done or Error. */
class CommandStream implements AsyncIterableIterator<clawkerd.Response, undefined> {
  readonly #queue: clawkerd.Response[] = [];
  #waiter:
    | { resolve: (r: IteratorResult<clawkerd.Response, undefined>) => void; reject: (e: Error) => void }
    | undefined;
  #failure: Error | undefined;
  #ended = false;
  #returned = false;
  constructor(
    readonly commandId: string,
    private readonly onDrain: () => void,
    private readonly onReturn: () => void,
  ) {}

  get size(): number {
    return this.#queue.length;
  }

  push(r: clawkerd.Response): void {
    if (this.#returned) return;
    if (this.#waiter !== undefined) {
      const w = this.#waiter;
      this.#waiter = undefined;
      w.resolve({ value: r, done: false });
    } else this.#queue.push(r);
  }

  end(failure?: Error): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#failure = failure;
    const w = this.#waiter;
    this.#waiter = undefined;
    if (w === undefined) return;
    if (failure === undefined) w.resolve({ value: undefined, done: true });
    else w.reject(failure);
  }

  next(): Promise<IteratorResult<clawkerd.Response, undefined>> {
    const r = this.#queue.shift();
    if (r !== undefined) {
      if (this.#queue.length === 0) this.onDrain();
      return Promise.resolve({ value: r, done: false });
    }
    if (this.#ended || this.#returned) {
      if (this.#failure !== undefined && !this.#returned) {
        const failure = this.#failure;
        this.#failure = undefined;
        return Promise.reject(failure);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    this.onDrain();
    return new Promise((resolve, reject) => (this.#waiter = { resolve, reject }));
  }

  return(): Promise<IteratorResult<clawkerd.Response, undefined>> {
    // The reader stopped listening; the command keeps running in clawkerd and its output is dropped.
    this.#returned = true;
    this.#queue.length = 0;
    // A next() already waiting settles too: its reader must not hang on a stream nobody feeds.
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.resolve({ value: undefined, done: true });
    this.onDrain();
    this.onReturn();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}

/** The control plane's end of one Session stream. */
export class AgentSession {
  readonly containerId: string;
  readonly #stream: ClientDuplexStream<clawkerd.Command, clawkerd.Response>;
  readonly #commandsTopic: AgentSessionOptions["commands"];
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #highWater: number;
  /** One-shot answers (hello, register) by command id. */
  readonly #pending = new Map<string, Pending>();
  /** Running ShellCommands by command id. */
  readonly #running = new Map<
    string,
    { stream: CommandStream; plan: CommandPlan; description: string; stages: number }
  >();
  /** Every command id sent on this session: ids are unique per session (events.ts, clawkerd). */
  readonly #used = new Set<string>();
  /** Command ids whose iterator was returned early but whose Done/Error has not arrived yet. */
  readonly #abandoned = new Set<string>();
  #seq = 0;
  #closeReason: string | undefined;
  #isPaused = false;
  readonly closed: Promise<string>;
  #resolveClosed!: (reason: string) => void;

  constructor(options: AgentSessionOptions) {
    this.containerId = options.containerId;
    this.#stream = options.stream;
    this.#commandsTopic = options.commands;
    this.#log = options.log;
    this.#now = options.now ?? Date.now;
    this.#highWater = options.highWaterMark ?? 64;
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));
    this.#stream.on("data", (r: clawkerd.Response) => this.#onResponse(r));
    this.#stream.on("error", (err: Error) => this.#finish(`stream error: ${err.message}`));
    this.#stream.on("end", () => this.#finish("stream ended"));
    this.#stream.on("close", () => this.#finish("stream closed"));
  }

  /** True once the stream has ended or `close` was called. */
  get isClosed(): boolean {
    return this.#closeReason !== undefined;
  }

  /** Sends Hello (command id `hello`) and resolves with HelloAck. */
  async hello(timeoutMs: number): Promise<clawkerd.HelloAck> {
    const r = await this.#ask("hello", { $case: "hello", value: {} }, timeoutMs);
    if (r.payload?.$case !== "helloAck") throw this.#unexpected("hello", r);
    return r.payload.value;
  }

  /** Sends RegisterRequired and resolves with RegisterDone. */
  async registerRequired(timeoutMs: number): Promise<clawkerd.RegisterDone> {
    const r = await this.#ask("register", { $case: "registerRequired", value: {} }, timeoutMs);
    if (r.payload?.$case !== "registerDone") throw this.#unexpected("register", r);
    return r.payload.value;
  }

  /** Records that the init plan finished (AgentInitialized; answered only on failure). */
  initialized(): void {
    this.#send({ commandId: "initialized", payload: { $case: "agentInitialized", value: {} } });
  }

  /** Starts the container's main command (AgentReady; answered only on failure). */
  ready(defaultCmd: string): void {
    this.#send({ commandId: "ready", payload: { $case: "agentReady", value: { defaultCmd } } });
  }

  /**
   * Sends a ShellCommand and yields its Responses (Started, output, stage exits) up to and including
   * its one Done or Error; throws SessionError("session_closed") if the stream ends first.
   */
  exec(
    shell: clawkerd.ShellCommand,
    options: ExecOptions = {},
  ): AsyncIterableIterator<clawkerd.Response, undefined> {
    const plan = options.plan ?? "user";
    const commandId = options.commandId ?? `${plan}-${++this.#seq}`;
    if (this.#closeReason !== undefined)
      throw new SessionError("session_closed", `session closed: ${this.#closeReason}`);
    if (this.#used.has(commandId)) {
      throw new SessionError("duplicate_command", `command id ${commandId} was already used in this session`);
    }
    this.#used.add(commandId);
    const stream = new CommandStream(
      commandId,
      () => this.#maybeResume(),
      () => {
        if (this.#running.delete(commandId)) this.#abandoned.add(commandId);
      },
    );
    this.#running.set(commandId, {
      stream,
      plan,
      description: options.description ?? "exec",
      stages: shell.stages.length,
    });
    this.#send({ commandId, payload: { $case: "shell", value: shell } });
    return stream;
  }

  /** Runs a ShellCommand to its end: resolves with the Done exit code, rejects with CommandError on Error. */
  async run(shell: clawkerd.ShellCommand, options: ExecOptions = {}): Promise<number> {
    for await (const r of this.exec(shell, options)) {
      if (r.payload?.$case === "done") return r.payload.value.finalExitCode;
      if (r.payload?.$case === "error") {
        throw new CommandError(clawkerd.errorCodeToJSON(r.payload.value.code), r.payload.value.message);
      }
    }
    throw new SessionError("protocol", "command ended without Done or Error");
  }

  /** Feeds bytes to a running command's first stage. */
  stdin(commandId: string, data: Uint8Array): void {
    this.#send({ commandId, payload: { $case: "stdin", value: { data: Buffer.from(data) } } });
  }

  /** Closes a running command's stdin. */
  closeStdin(commandId: string): void {
    this.#send({ commandId, payload: { $case: "closeStdin", value: {} } });
  }

  /** Signals every stage of a running command. */
  signal(commandId: string, signo: number): void {
    this.#send({ commandId, payload: { $case: "signal", value: { signo } } });
  }

  /** Cancels the stream; every waiter fails with session_closed. Idempotent. */
  close(reason = "closed"): void {
    if (this.#closeReason !== undefined) return;
    this.#finish(reason);
    this.#stream.cancel();
  }

  #send(cmd: clawkerd.Command): void {
    if (this.#closeReason !== undefined)
      throw new SessionError("session_closed", `session closed: ${this.#closeReason}`);
    this.#stream.write(cmd);
  }

  #ask(
    commandId: string,
    payload: clawkerd.Command["payload"],
    timeoutMs: number,
  ): Promise<clawkerd.Response> {
    if (this.#used.has(commandId)) {
      return Promise.reject(
        new SessionError("duplicate_command", `command id ${commandId} was already used`),
      );
    }
    this.#used.add(commandId);
    return new Promise<clawkerd.Response>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(commandId);
        reject(new SessionError("timeout", `no answer to ${commandId} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(commandId, {
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      try {
        this.#send({ commandId, payload });
      } catch (err) {
        this.#pending.get(commandId)?.reject(err as Error);
        this.#pending.delete(commandId);
      }
    });
  }

  #unexpected(what: string, r: clawkerd.Response): SessionError {
    if (r.payload?.$case === "error") {
      const e = r.payload.value;
      return new CommandError(clawkerd.errorCodeToJSON(e.code), e.message);
    }
    return new SessionError("protocol", `unexpected answer to ${what}: ${r.payload?.$case ?? "empty"}`);
  }

  #onResponse(r: clawkerd.Response): void {
    const id = r.commandId;
    const one = this.#pending.get(id);
    if (one !== undefined) {
      this.#pending.delete(id);
      one.resolve(r);
      return;
    }
    const cmd = this.#running.get(id);
    const isTerminal = r.payload?.$case === "done" || r.payload?.$case === "error";
    if (cmd === undefined) {
      if (this.#abandoned.has(id)) {
        if (isTerminal) this.#abandoned.delete(id);
        return;
      }
      // A stray after a command's Done/Error (already delivered exactly once): dropped.
      if (this.#used.has(id) && r.payload?.$case !== "error") return;
      // Stdin/CloseStdin/Signal/AgentReady/AgentInitialized answer only on failure.
      this.#log.warn(
        {
          event: "session_unmatched_response",
          containerId: this.containerId,
          commandId: id,
          kind: r.payload?.$case,
        },
        r.payload?.$case === "error" ? r.payload.value.message : "response for no command in flight",
      );
      return;
    }
    this.#publishProgress(id, cmd, r);
    cmd.stream.push(r);
    if (isTerminal) {
      // Exactly one Done or Error: the command is over, anything later for this id is a stray.
      this.#running.delete(id);
      cmd.stream.end();
    } else if (cmd.stream.size >= this.#highWater && !this.#isPaused) {
      this.#isPaused = true;
      this.#stream.pause();
    }
  }

  #maybeResume(): void {
    if (!this.#isPaused) return;
    for (const { stream } of this.#running.values()) if (stream.size >= this.#highWater) return;
    this.#isPaused = false;
    this.#stream.resume();
  }

  #publishProgress(
    commandId: string,
    cmd: { plan: CommandPlan; description: string; stages: number },
    r: clawkerd.Response,
  ): void {
    const topic = this.#commandsTopic;
    if (topic === undefined || r.payload === undefined) return;
    const base = { containerId: this.containerId, commandId, time: this.#now() };
    const p = r.payload;
    switch (p.$case) {
      case "started":
        topic.publish({
          ...base,
          type: "command.started",
          plan: cmd.plan,
          description: cmd.description,
          stages: cmd.stages,
        });
        break;
      case "output":
        topic.publish({ ...base, type: "command.output", bytes: p.value.data.length });
        break;
      case "stageExit":
        topic.publish({
          ...base,
          type: "command.stage_exit",
          stageIndex: p.value.stageIndex,
          exitCode: p.value.exitCode,
          signo: p.value.signo,
        });
        break;
      case "done":
        topic.publish({ ...base, type: "command.done", exitCode: p.value.finalExitCode });
        break;
      case "error":
        topic.publish({
          ...base,
          type: "command.error",
          code: clawkerd.errorCodeToJSON(p.value.code),
          message: p.value.message,
        });
        break;
      default:
        break;
    }
  }

  #finish(reason: string): void {
    if (this.#closeReason !== undefined) return;
    this.#closeReason = reason;
    const err = new SessionError("session_closed", `session closed: ${reason}`);
    for (const p of this.#pending.values()) p.reject(err);
    this.#pending.clear();
    for (const { stream } of this.#running.values()) stream.end(err);
    this.#running.clear();
    this.#abandoned.clear();
    if (this.#isPaused) {
      this.#isPaused = false;
      this.#stream.resume();
    }
    this.#resolveClosed(reason);
  }
}
