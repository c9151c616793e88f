// The control-plane side of the eBPF manager's Unix socket: typed calls, validated before they are
// sent, pipelined on one connection, each with a timeout; events on a connection of their own.
import { createConnection, type Socket } from "node:net";
import { createInterface } from "node:readline";
import type { Logger } from "pino";
import type { z } from "zod";
import { EbpfError, managerReason } from "./errors.js";
import {
  bypassSecondsSchema,
  cgroupTargetSchema,
  checkDnsEntries,
  checkRoutes,
  containerConfigSchema,
  gatewayPortsSchema,
  type BatchIssue,
  type CgroupTarget,
  type ContainerConfig,
  type DecisionEvent,
  type DnsEntry,
  type Dump,
  type EnrollResult,
  type GatewayPort,
  type GcResult,
  type Route,
  type Status,
} from "./protocol.js";

/** Options of an EbpfClient. */
export interface EbpfClientOptions {
  /** The manager's control socket (`ebpf-manager serve --socket PATH`). */
  readonly socketPath: string;
  /** Per-request timeout; default 5 s. */
  readonly timeoutMs?: number;
  /** Timeout for connecting; default 2 s. */
  readonly connectTimeoutMs?: number;
  readonly log?: Logger;
}

interface Pending {
  readonly op: string;
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: EbpfError) => void;
  readonly timer: NodeJS.Timeout;
}

/** A live subscription to the manager's decision events; iterate it, close it when done. */
export interface EventStream extends AsyncIterable<DecisionEvent> {
  close(): void;
}

/** Client of the eBPF manager's control socket. Reconnects on the next call after the manager restarts. */
export class EbpfClient {
  private readonly socketPath: string;
  private readonly timeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly log: Logger | undefined;
  private socket: Socket | undefined;
  private connecting: Promise<Socket> | undefined;
  private readonly pending = new Map<number, Pending>();
  private readonly streams = new Set<Socket>();
  private nextId = 1;
  private closed = false;
  private abortListener: (() => void) | undefined;
  private signal: AbortSignal | undefined;

  constructor(options: EbpfClientOptions) {
    this.socketPath = options.socketPath;
    this.timeoutMs = options.timeoutMs ?? 5_000;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 2_000;
    this.log = options.log?.child({ component: "ebpf-client" });
  }

  /** Connects; `signal` aborting closes the client. Rejects with `unavailable` if the manager is not there. */
  async start(signal: AbortSignal): Promise<void> {
    if (this.closed) throw new EbpfError("closed", "client is closed");
    this.signal = signal;
    this.abortListener = () => void this.close();
    signal.addEventListener("abort", this.abortListener, { once: true });
    await this.connection();
  }

  /** Closes the connection and every event stream; pending calls fail with `closed`. Idempotent. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    if (this.signal && this.abortListener) this.signal.removeEventListener("abort", this.abortListener);
    this.failAll(new EbpfError("closed", "client closed"));
    this.socket?.destroy();
    this.socket = undefined;
    for (const s of this.streams) s.destroy();
    this.streams.clear();
    return Promise.resolve();
  }

  /** Version, pin directory and the parent cgroup the manager serves. */
  async status(): Promise<Status> {
    return this.call<Status>("status", {});
  }

  /** Puts a cgroup under enforcement with `config` (cgroups outside the parent get their own links). */
  async enroll(target: CgroupTarget, config: ContainerConfig): Promise<EnrollResult> {
    const t = parse(cgroupTargetSchema, target, "enroll");
    const c = parse(containerConfigSchema, config, "enroll");
    return this.call<EnrollResult>("enroll", { ...t, config: c });
  }

  /** Removes a cgroup's config, bypass flag and own links. */
  async unenroll(target: CgroupTarget): Promise<{ cgroupId: string }> {
    return this.call("unenroll", parse(cgroupTargetSchema, target, "unenroll"));
  }

  /**
   * Lets a cgroup's sockets through untouched until `unbypass`, or, with `seconds` (1 to
   * LIMITS.maxBypassSeconds), until the kernel ends it by itself (no manager or control plane
   * needed; at most one second late, never early).
   */
  async bypass(target: CgroupTarget, seconds?: number): Promise<{ cgroupId: string; bypass: boolean }> {
    const t = parse(cgroupTargetSchema, target, "bypass");
    if (seconds === undefined) return this.call("bypass", t);
    return this.call("bypass", { ...t, seconds: parse(bypassSecondsSchema, seconds, "bypass") });
  }

  /** Ends a bypass. */
  async unbypass(target: CgroupTarget): Promise<{ cgroupId: string; bypass: boolean }> {
    return this.call("unbypass", parse(cgroupTargetSchema, target, "unbypass"));
  }

  /** Replaces the whole route table atomically. */
  async syncRoutes(routes: readonly Route[]): Promise<{ routes: number }> {
    reject(checkRoutes(routes), "sync-routes");
    return this.call("sync-routes", { routes });
  }

  /** Adds (or with ttl 0 removes) DNS answer addresses of route identities, as one batch. */
  async dnsUpdate(entries: readonly DnsEntry[]): Promise<{ entries: number }> {
    reject(checkDnsEntries(entries), "dns-update");
    return this.call("dns-update", { entries });
  }

  /**
   * Replaces the set of gateway ports that pass (every other port of a cgroup's `gateway` is
   * refused: TCP to the catch-all, UDP denied). Removals apply before additions.
   */
  async gatewayPorts(ports: readonly GatewayPort[]): Promise<{ ports: number }> {
    return this.call("gateway-ports", { ports: parse(gatewayPortsSchema, ports, "gateway-ports") });
  }

  /** Collects expired DNS entries, defunct links and state of vanished cgroups. */
  async gc(): Promise<GcResult> {
    return this.call<GcResult>("gc", {});
  }

  /** Detaches every program and removes every pin; the manager exits afterwards. */
  async flushAll(): Promise<void> {
    await this.call("flush-all", {});
  }

  /** Everything the manager holds. */
  async dump(): Promise<Dump> {
    return this.call<Dump>("dump", {});
  }

  /** Subscribes to decision events; resolves once the manager has confirmed the subscription. */
  async events(signal?: AbortSignal): Promise<EventStream> {
    if (this.closed) throw new EbpfError("closed", "client is closed", "events");
    const sock = await this.dial();
    this.streams.add(sock);
    const lines = createInterface({ input: sock, crlfDelay: Infinity });
    const iterator = lines[Symbol.asyncIterator]();
    const stop = (): void => {
      sock.destroy();
      lines.close();
      this.streams.delete(sock);
    };
    signal?.addEventListener("abort", stop, { once: true });
    sock.write('{"id":"events","op":"events"}\n');
    const first = await withTimeout(iterator.next(), this.timeoutMs, "events");
    const reply = first.done === true ? undefined : parseLine(first.value);
    if (reply?.["ok"] !== true) {
      stop();
      throw new EbpfError("protocol", "events subscription was not confirmed", "events");
    }
    return {
      close: stop,
      async *[Symbol.asyncIterator]() {
        try {
          for (;;) {
            const next = await iterator.next().catch(() => ({ done: true as const, value: undefined }));
            if (next.done === true) return;
            const msg = parseLine(next.value);
            const event = msg?.["event"];
            if (event !== undefined && typeof event === "object") yield event as DecisionEvent;
          }
        } finally {
          stop();
        }
      },
    };
  }

  private async call<T>(op: string, body: Record<string, unknown>): Promise<T> {
    if (this.closed) throw new EbpfError("closed", "client is closed", op);
    const sock = await this.connection();
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new EbpfError("timeout", `${op}: no reply within ${this.timeoutMs} ms`, op));
      }, this.timeoutMs);
      this.pending.set(id, { op, resolve: resolve as (v: unknown) => void, reject, timer });
      sock.write(JSON.stringify({ id, op, ...body }) + "\n");
    });
  }

  private async connection(): Promise<Socket> {
    if (this.socket && !this.socket.destroyed) return this.socket;
    this.connecting ??= this.dial()
      .then((sock) => {
        this.attach(sock);
        return sock;
      })
      .finally(() => {
        this.connecting = undefined;
      });
    return this.connecting;
  }

  private dial(): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const sock = createConnection(this.socketPath);
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new EbpfError("unavailable", `connect ${this.socketPath}: timed out`));
      }, this.connectTimeoutMs);
      sock.once("connect", () => {
        clearTimeout(timer);
        sock.removeAllListeners("error");
        resolve(sock);
      });
      sock.once("error", (err) => {
        clearTimeout(timer);
        reject(
          new EbpfError("unavailable", `connect ${this.socketPath}: ${err.message}`, undefined, {
            cause: err,
          }),
        );
      });
    });
  }

  private attach(sock: Socket): void {
    this.socket = sock;
    let buffered = "";
    sock.setEncoding("utf8");
    sock.on("data", (chunk: string) => {
      buffered += chunk;
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        this.onReply(line);
      }
    });
    sock.on("error", (err) => this.log?.warn({ err, event: "ebpf_socket_error" }, "manager socket error"));
    sock.on("close", () => {
      if (this.socket === sock) this.socket = undefined;
      this.failAll(new EbpfError("unavailable", "manager connection closed"));
    });
  }

  private onReply(line: string): void {
    const msg = parseLine(line);
    const id = msg?.["id"];
    const entry = typeof id === "number" ? this.pending.get(id) : undefined;
    if (msg === undefined || entry === undefined || typeof id !== "number") {
      this.log?.warn({ event: "ebpf_unexpected_reply" }, "unexpected reply from the manager");
      return;
    }
    this.pending.delete(id);
    clearTimeout(entry.timer);
    if (msg["ok"] === true) {
      entry.resolve(msg["result"]);
      return;
    }
    const error = (msg["error"] ?? {}) as { reason?: unknown; message?: unknown };
    entry.reject(
      new EbpfError(
        managerReason(error.reason),
        typeof error.message === "string" ? error.message : "manager error",
        entry.op,
      ),
    );
  }

  private failAll(err: EbpfError): void {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new EbpfError(err.reason, `${p.op}: ${err.message}`, p.op));
      this.pending.delete(id);
    }
  }
}

function parse<S extends z.ZodType>(schema: S, value: unknown, op: string): z.infer<S> {
  const result = schema.safeParse(value);
  if (!result.success) {
    const first = result.error.issues[0];
    const where = first && first.path.length > 0 ? `${first.path.join(".")}: ` : "";
    throw new EbpfError("invalid_argument", `${op}: ${where}${first?.message ?? "invalid"}`, op);
  }
  return result.data;
}

function reject(issue: BatchIssue | undefined, op: string): void {
  if (issue !== undefined)
    throw new EbpfError("invalid_argument", `${op}: ${issue.path}: ${issue.message}`, op);
}

function parseLine(line: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(line);
    return typeof v === "object" && v !== null ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

async function withTimeout<T>(p: Promise<T>, ms: number, op: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new EbpfError("timeout", `${op}: no reply within ${ms} ms`, op)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
