// One open Session stream to a clawkerd (API.md §3), control-plane side: routes Responses to the
// command that asked by command_id, enforces "exactly one Done or Error per ShellCommand", and
// publishes command progress on the overseer's commands topic. With a clawkerd that offers our
// flow-control extension (HelloAck.flow_control), each command has its own bounded output window
// and stdin window (command-flow.ts), so one slow reader holds back only its own command; with
// one that does not (the Go clawkerd), a slow reader pauses the whole stream, as HTTP/2 allows.
import { once } from "node:events";
import type { ClientDuplexStream } from "@grpc/grpc-js";
import { clawkerd } from "@clawker/proto";
import type { CommandEvent, CommandPlan, Topic } from "@clawker/overseer";
import type { Logger } from "../logging.js";
import { DEFAULT_OUTPUT_WINDOW, OutputFlow, StdinFlow, type OutputWindow } from "./command-flow.js";

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
  /**
   * Without per-command flow control (a clawkerd that does not offer it): Responses buffered for
   * one slow reader before the whole stream is paused. Default 64.
   */
  readonly highWaterMark?: number;
  /** With per-command flow control: each command's output window. Default DEFAULT_OUTPUT_WINDOW. */
  readonly outputWindow?: OutputWindow;
  /** Told the size of each OutputChunk as it arrives, any command's (the daemon's ScavengePacer). */
  readonly onOutput?: (bytes: number) => void;
}

/** Largest Stdin message sent (a write is split into pieces of at most this). */
const STDIN_CHUNK_BYTES = 64 << 10;

/** The flow control of one command, when the peer offered it. */
interface CommandFlow {
  readonly output: OutputFlow;
  readonly stdin: StdinFlow;
}

/** A running ShellCommand. */
interface RunningCommand {
  readonly stream: CommandStream;
  readonly plan: CommandPlan;
  readonly description: string;
  readonly stages: number;
  readonly flow: CommandFlow | undefined;
  /** Stdin writes and the close of stdin, in call order. */
  stdinTail: Promise<unknown>;
}

interface Pending {
  readonly resolve: (r: clawkerd.Response) => void;
  readonly reject: (err: Error) => void;
}

/**
 * Buffers one command's Responses for its async iterator; ends after the first Done or Error.
 * `onTaken` sees every Response handed to the reader, and those dropped by `return()`.
 */
class CommandStream implements AsyncIterableIterator<clawkerd.Response, undefined> {
  readonly #queue: clawkerd.Response[] = [];
  #outputBytes = 0;
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
    private readonly onTaken: (r: clawkerd.Response) => void,
  ) {}

  get size(): number {
    return this.#queue.length;
  }

  /** Output bytes waiting for the reader. */
  get outputBytes(): number {
    return this.#outputBytes;
  }

  push(r: clawkerd.Response): void {
    if (this.#returned) return;
    if (this.#waiter !== undefined) {
      const w = this.#waiter;
      this.#waiter = undefined;
      this.onTaken(r);
      w.resolve({ value: r, done: false });
    } else {
      this.#queue.push(r);
      if (r.payload?.$case === "output") this.#outputBytes += r.payload.value.data.length;
    }
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
      if (r.payload?.$case === "output") this.#outputBytes -= r.payload.value.data.length;
      this.onTaken(r);
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
    const dropped = this.#queue.splice(0);
    this.#outputBytes = 0;
    // A next() already waiting settles too: its reader must not hang on a stream nobody feeds.
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.resolve({ value: undefined, done: true });
    for (const r of dropped) this.onTaken(r);
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
  readonly #outputWindow: OutputWindow;
  readonly #onOutput: ((bytes: number) => void) | undefined;
  /** The peer's flow-control offer (HelloAck.flow_control); undefined: session-wide only. */
  #offer: clawkerd.FlowControlOffer | undefined;
  /** One-shot answers (hello, register) by command id. */
  readonly #pending = new Map<string, Pending>();
  /** Running ShellCommands by command id. */
  readonly #running = new Map<string, RunningCommand>();
  /** Every command id sent on this session: ids are unique per session (events.ts, clawkerd). */
  readonly #used = new Set<string>();
  /**
   * Commands whose iterator was returned early but whose Done/Error has not arrived yet, with
   * their flow control: their output is credited as it arrives, since nobody will read it.
   */
  readonly #abandoned = new Map<string, CommandFlow | undefined>();
  #seq = 0;
  #closeReason: string | undefined;
  #isPaused = false;
  #drain: Promise<void> | undefined;
  readonly closed: Promise<string>;
  #resolveClosed!: (reason: string) => void;

  constructor(options: AgentSessionOptions) {
    this.containerId = options.containerId;
    this.#stream = options.stream;
    this.#commandsTopic = options.commands;
    this.#log = options.log;
    this.#now = options.now ?? Date.now;
    this.#highWater = options.highWaterMark ?? 64;
    this.#outputWindow = options.outputWindow ?? DEFAULT_OUTPUT_WINDOW;
    this.#onOutput = options.onOutput;
    // Checked now, so a bad window fails the construction rather than the first command.
    new OutputFlow(this.#outputWindow);
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

  /** True when the peer offered per-command flow control (known after `hello`). */
  get hasCommandFlowControl(): boolean {
    return this.#offer !== undefined;
  }

  /**
   * Sends Hello (command id `hello`) and resolves with HelloAck. A flow-control offer in it turns
   * on per-command flow control for every command sent afterwards.
   */
  async hello(timeoutMs: number): Promise<clawkerd.HelloAck> {
    const r = await this.#ask("hello", { $case: "hello", value: {} }, timeoutMs);
    if (r.payload?.$case !== "helloAck") throw this.#unexpected("hello", r);
    const offer = r.payload.value.flowControl;
    // An offer without a stdin window cannot be honoured: treat the peer as one without the extension.
    this.#offer = offer !== undefined && offer.stdinWindowBytes > 0 ? offer : undefined;
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
    const offer = this.#offer;
    const flow: CommandFlow | undefined =
      offer === undefined
        ? undefined
        : { output: new OutputFlow(this.#outputWindow), stdin: new StdinFlow(offer.stdinWindowBytes) };
    const stream = new CommandStream(
      commandId,
      () => this.#maybeResume(),
      () => {
        if (this.#running.delete(commandId)) this.#abandoned.set(commandId, flow);
      },
      (r) => this.#taken(commandId, flow, r),
    );
    this.#running.set(commandId, {
      stream,
      plan,
      description: options.description ?? "exec",
      stages: shell.stages.length,
      flow,
      stdinTail: Promise.resolve(),
    });
    // The window is ours to set: whatever a caller put in flow_control is replaced.
    const window = flow?.output.window;
    const sent: clawkerd.ShellCommand = {
      ...shell,
      flowControl:
        window === undefined
          ? undefined
          : { outputWindowBytes: window.bytes, outputWindowChunks: window.chunks },
    };
    flow?.stdin.sent(shell.initialStdin.length);
    this.#send({ commandId, payload: { $case: "shell", value: sent } });
    return stream;
  }

  /** What a running command's reader has not taken yet: Responses and output bytes. */
  queued(commandId: string): { readonly responses: number; readonly outputBytes: number } | undefined {
    const stream = this.#running.get(commandId)?.stream;
    return stream === undefined ? undefined : { responses: stream.size, outputBytes: stream.outputBytes };
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

  /**
   * Feeds bytes to a running command's first stage, after its earlier stdin writes. Resolves true
   * once every byte is on the stream, false when the command ended (or was never sent on this
   * session) first: the rest is dropped, as clawkerd drops stdin after stage 0's ends. Held back
   * while the command's stdin window is full (per-command flow control) or the stream's write
   * buffer is (otherwise). Rejects with SessionError("session_closed").
   */
  stdin(commandId: string, data: Uint8Array): Promise<boolean> {
    const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    return this.#afterStdin(commandId, (cmd) => this.#pumpStdin(commandId, cmd, bytes));
  }

  /** Closes a running command's stdin once its earlier stdin writes are sent; false if it ended. */
  closeStdin(commandId: string): Promise<boolean> {
    return this.#afterStdin(commandId, () => {
      this.#send({ commandId, payload: { $case: "closeStdin", value: {} } });
      return Promise.resolve(true);
    });
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

  #send(cmd: clawkerd.Command): boolean {
    if (this.#closeReason !== undefined)
      throw new SessionError("session_closed", `session closed: ${this.#closeReason}`);
    return this.#stream.write(cmd);
  }

  // Runs `step` after the command's earlier stdin operations; false at once when it is not running.
  #afterStdin(commandId: string, step: (cmd: RunningCommand) => Promise<boolean>): Promise<boolean> {
    if (this.#closeReason !== undefined) {
      return Promise.reject(new SessionError("session_closed", `session closed: ${this.#closeReason}`));
    }
    const cmd = this.#running.get(commandId);
    if (cmd === undefined) return Promise.resolve(false);
    const result = cmd.stdinTail.then(() => {
      if (this.#closeReason !== undefined)
        throw new SessionError("session_closed", `session closed: ${this.#closeReason}`);
      return this.#running.get(commandId) === cmd ? step(cmd) : false;
    });
    cmd.stdinTail = result.catch(() => undefined);
    return result;
  }

  async #pumpStdin(commandId: string, cmd: RunningCommand, data: Buffer): Promise<boolean> {
    let offset = 0;
    while (offset < data.length) {
      if (this.#closeReason !== undefined)
        throw new SessionError("session_closed", `session closed: ${this.#closeReason}`);
      if (this.#running.get(commandId) !== cmd) return false;
      const flow = cmd.flow?.stdin;
      if (flow !== undefined && flow.room() === 0) {
        await flow.wait();
        continue;
      }
      const piece = data.subarray(
        offset,
        offset + Math.min(flow?.room() ?? STDIN_CHUNK_BYTES, STDIN_CHUNK_BYTES),
      );
      offset += piece.length;
      flow?.sent(piece.length);
      const isWritable = this.#send({ commandId, payload: { $case: "stdin", value: { data: piece } } });
      // The stream's own write buffer is bounded too (the whole story for a peer without the extension).
      if (!isWritable && this.#closeReason === undefined) await this.#drained();
    }
    return true;
  }

  // One shared wait for the stream's 'drain' or its end, however many writers are waiting (an
  // 'error' ends the session too, and the writer then sees session_closed).
  #drained(): Promise<void> {
    this.#drain ??= Promise.race([once(this.#stream, "drain").catch(() => undefined), this.closed]).then(
      () => {
        this.#drain = undefined;
      },
    );
    return this.#drain;
  }

  // A Response reached the reader (or was dropped by return()): credit its output back.
  #taken(commandId: string, flow: CommandFlow | undefined, r: clawkerd.Response): void {
    if (flow === undefined || r.payload?.$case !== "output" || this.#closeReason !== undefined) return;
    const grant = flow.output.taken(r.payload.value.data.length);
    if (grant !== undefined) this.#send({ commandId, payload: { $case: "outputCredit", value: grant } });
  }

  // clawkerd broke the flow-control contract: its memory claim on us is unbounded, so end the session.
  #violated(commandId: string, what: string): void {
    this.#log.error(
      { event: "session_flow_control_violated", containerId: this.containerId, commandId, what },
      "clawkerd exceeded a command's flow-control window",
    );
    this.close(`protocol: flow control violated (${what})`);
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
    if (this.#closeReason !== undefined) return;
    const id = r.commandId;
    const one = this.#pending.get(id);
    if (one !== undefined) {
      this.#pending.delete(id);
      one.resolve(r);
      return;
    }
    const cmd = this.#running.get(id);
    const p = r.payload;
    if (p?.$case === "output") this.#onOutput?.(p.value.data.length);
    if (p?.$case === "stdinCredit") {
      // For the writer only: never a reader's Response, never published. Late ones are ignored.
      (cmd?.flow ?? this.#abandoned.get(id))?.stdin.credited(p.value.bytes);
      return;
    }
    const isTerminal = p?.$case === "done" || p?.$case === "error";
    if (cmd === undefined) {
      if (this.#abandoned.has(id)) {
        const flow = this.#abandoned.get(id);
        if (isTerminal) {
          this.#abandoned.delete(id);
          flow?.stdin.end();
        } else if (flow !== undefined && p?.$case === "output") {
          if (!flow.output.received(p.value.data.length)) return this.#violated(id, "output credit");
          this.#taken(id, flow, r);
        }
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
    if (cmd.flow !== undefined) {
      // Within its credit a command buffers at most its window; past it clawkerd broke the contract.
      if (p?.$case === "output" && !cmd.flow.output.received(p.value.data.length)) {
        return this.#violated(id, "output credit");
      }
      // Non-output Responses are few (Started, one StageExit per stage, Done): more is a flood.
      if (cmd.stream.size >= cmd.flow.output.window.chunks + cmd.stages + 2) {
        return this.#violated(id, "response count");
      }
    }
    this.#publishProgress(id, cmd, r);
    cmd.stream.push(r);
    if (isTerminal) {
      // Exactly one Done or Error: the command is over, anything later for this id is a stray.
      this.#running.delete(id);
      cmd.flow?.stdin.end();
      cmd.stream.end();
    } else if (cmd.flow === undefined && cmd.stream.size >= this.#highWater && !this.#isPaused) {
      // No per-command flow control: the only way to bound this reader's buffer is to stop them all.
      this.#isPaused = true;
      this.#stream.pause();
    }
  }

  #maybeResume(): void {
    if (!this.#isPaused) return;
    for (const { stream, flow } of this.#running.values()) {
      if (flow === undefined && stream.size >= this.#highWater) return;
    }
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
    for (const { stream, flow } of this.#running.values()) {
      flow?.stdin.end();
      stream.end(err);
    }
    this.#running.clear();
    for (const flow of this.#abandoned.values()) flow?.stdin.end();
    this.#abandoned.clear();
    if (this.#isPaused) {
      this.#isPaused = false;
      this.#stream.resume();
    }
    this.#resolveClosed(reason);
  }
}
