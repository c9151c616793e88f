// The DNS gate helper (dns/main.ts) as the firewall's `dnsGate` slot: its config file written 0600
// in a 0700 dir, spawned through the daemon's supervisor with its control channel on fd 3, ready
// once it says so, every reconcile's rules and clients sent as one `policy` request and counted as
// applied only once the gate answered ok. A crash is the supervisor's (a helper crash: the daemon
// drains), exactly as for HAProxy. See README.md, "The DNS gate".
import { createSocket } from "node:dgram";
import { mkdir, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { join } from "node:path";
import type { Duplex } from "node:stream";
import type { Logger } from "pino";
import type { HelperCommand } from "../supervisor/subprocess-manager.js";
import type { CompiledDns } from "./compile.js";
import type { DnsDecision } from "./dns/decision.js";
import { dnsGateEntry } from "./dns/entry.js";
import { lineSplitter } from "./dns/line-splitter.js";
import { FirewallError } from "./errors.js";
import type { DnsGate, DnsGateOptions } from "./firewall.js";

/** The helper name the gate runs under. */
export const DNS_GATE_HELPER_NAME = "dns-gate";
/** The gate's config file in its dir. */
export const DNS_GATE_CONFIG_FILE = "dns-gate.json";

/** What runs the gate: the daemon's SubprocessManager (start with `channel`, crash reporting). */
export interface DnsGateHost {
  start(name: string, command: HelperCommand): Promise<number>;
  /** Our end of the helper's fd 3 (started with `channel: true`). */
  channel(name: string): Duplex | undefined;
  stop(name: string): Promise<unknown>;
}

/** How the daemon runs every gate it builds. */
export interface DnsGateProcessSettings {
  readonly host: DnsGateHost;
  /** The eBPF manager's control socket; absent: answers are not recorded (the gate logs it once). */
  readonly ebpfSocket?: string | undefined;
  /** What to run; default `dnsGateEntry()` (built main.js, or main.ts through tsx from source). */
  readonly entry?: { readonly file: string; readonly args: readonly string[] };
  /** Budget from spawn to the gate's ready event (default 30 s: tsx from source is slow). */
  readonly readyTimeoutMs?: number;
  /** Budget of one control request (policy, stats); default 10 s. */
  readonly requestTimeoutMs?: number;
  /** Receives every decision the gate streams (the event hub); absent, decision lines are skipped. */
  readonly onDecision?: (decision: DnsDecision) => void;
  /** Receives the count of decisions the gate dropped because the daemon read too slowly. */
  readonly onDecisionsDropped?: (count: number) => void;
}

/** The `dnsGate` slot of FirewallOptions: a DnsGateProcess per bring-up. */
export function dnsGateProcess(settings: DnsGateProcessSettings): (options: DnsGateOptions) => DnsGate {
  return (options) => new DnsGateProcess(settings, options);
}

interface Pending {
  readonly resolve: (reply: ControlReply) => void;
  readonly reject: (err: Error) => void;
  readonly timer: NodeJS.Timeout;
}

interface ControlReply {
  readonly id: number;
  readonly ok: boolean;
  readonly result?: unknown;
  readonly error?: { readonly reason?: string; readonly message?: string };
}

// Decisions arrive one line each at the gate's answer rate: recognised by their prefix, parsed
// only when someone takes them (the event hub), skipped unparsed otherwise.
const DECISION_PREFIX = '{"event":"decision"';
const DECISION_BODY_AT = '{"event":"decision","decision":'.length;
/** A line from the gate longer than this is dropped (replies and events are small). */
const MAX_LINE_CHARS = 1 << 20;

/** One DNS gate helper process (see the file comment). */
export class DnsGateProcess implements DnsGate {
  readonly address: string;
  readonly #settings: DnsGateProcessSettings;
  readonly #options: DnsGateOptions;
  readonly #log: Logger;
  readonly #pending = new Map<number, Pending>();
  #channel: Duplex | undefined;
  #nextId = 1;
  #ready: ((port: number) => void) | undefined;
  #gone: ((why: Error) => void) | undefined;
  #started = false;
  #closed: Promise<void> | undefined;

  constructor(settings: DnsGateProcessSettings, options: DnsGateOptions) {
    this.#settings = settings;
    this.#options = options;
    this.address = options.address;
    this.#log = options.log.child({ component: "dns-gate-driver" });
  }

  /**
   * Writes the config (0600 in a 0700 dir), spawns the gate and resolves once it listens. Rejects
   * (nothing left running) when it cannot be spawned, exits first, or is not ready in time.
   */
  async start(signal: AbortSignal): Promise<void> {
    if (this.#started) throw new FirewallError("internal", "DNS gate started twice");
    this.#started = true;
    const o = this.#options;
    await mkdir(o.dir, { recursive: true, mode: 0o700 });
    const file = join(o.dir, DNS_GATE_CONFIG_FILE);
    const config = {
      listen: { address: o.address, port: o.port },
      ...(this.#settings.ebpfSocket === undefined ? {} : { ebpfSocket: this.#settings.ebpfSocket }),
    };
    await writeFile(file, `${JSON.stringify(config)}\n`, { mode: 0o600 });
    // The gate exiting on a taken port would be a helper crash (the daemon drains); a port we can
    // see is taken is refused here, as a start failure of the firewall.
    if (o.port !== 0) await assertCanListen(o.address, o.port);
    const entry = this.#settings.entry ?? dnsGateEntry();
    const ready = new Promise<number>((resolve, reject) => {
      this.#ready = resolve;
      this.#gone = reject;
    });
    ready.catch(() => undefined);
    await this.#settings.host.start(DNS_GATE_HELPER_NAME, {
      file: entry.file,
      args: [...entry.args, "--config", file],
      channel: true,
    });
    const channel = this.#settings.host.channel(DNS_GATE_HELPER_NAME);
    if (channel === undefined) {
      await this.close();
      throw new FirewallError("internal", "the DNS gate has no control channel");
    }
    this.#channel = channel;
    this.#read(channel);
    const timeoutMs = this.#settings.readyTimeoutMs ?? 30_000;
    let timer: NodeJS.Timeout | undefined;
    const onAbort = (): void => this.#gone?.(new Error("start aborted"));
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      const port = await Promise.race([
        ready,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`not ready within ${timeoutMs} ms (see its log lines)`)),
            timeoutMs,
          );
        }),
      ]);
      this.#log.info({ event: "dns_gate_ready", address: o.address, port }, "DNS gate ready");
    } catch (err) {
      await this.close();
      throw err;
    } finally {
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
    }
  }

  /** The reconcile's DNS share: one `policy` request, resolved once the gate answered ok. */
  async apply(dns: CompiledDns): Promise<void> {
    const reply = await this.#request({
      op: "policy",
      policy: {
        rules: dns.rules,
        clients: dns.clients,
        upstreams: this.#options.resolvers.map((r) => ({ address: r.address, port: r.port })),
      },
    });
    if (!reply.ok) {
      // The gate's own words: they name the rule or client it refused (no secret in a policy).
      throw new FirewallError(
        "reconcile_failed",
        `the DNS gate refused the policy: ${reply.error?.message ?? "no reason given"}`,
      );
    }
    this.#log.debug({ event: "dns_policy_applied", result: reply.result }, "DNS policy applied");
  }

  /** True when the gate answers a stats request in time. */
  async healthy(): Promise<boolean> {
    try {
      return (await this.#request({ op: "stats" })).ok;
    } catch {
      return false;
    }
  }

  /** Stops the gate (SIGTERM to its group through the supervisor). Idempotent. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#fail(new FirewallError("stack_failed", "the DNS gate is stopping"));
      if (this.#started) await this.#settings.host.stop(DNS_GATE_HELPER_NAME);
      this.#channel?.destroy();
    })();
    return this.#closed;
  }

  #request(body: Record<string, unknown>): Promise<ControlReply> {
    const channel = this.#channel;
    if (channel === undefined || this.#closed !== undefined || channel.destroyed) {
      return Promise.reject(new FirewallError("stack_failed", "the DNS gate is not running"));
    }
    const id = this.#nextId++;
    const timeoutMs = this.#settings.requestTimeoutMs ?? 10_000;
    return new Promise<ControlReply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new FirewallError("reconcile_failed", `the DNS gate did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
      channel.write(`${JSON.stringify({ id, ...body })}\n`);
    });
  }

  /** Reads the gate's lines: the ready event, replies by id, warnings, decisions. */
  #read(channel: Duplex): void {
    channel.setEncoding("utf8");
    // A line longer than any reply is not one: dropped up to its newline.
    channel.on(
      "data",
      lineSplitter(MAX_LINE_CHARS, (line) => {
        if (!line.startsWith(DECISION_PREFIX)) this.#onLine(line);
        else if (this.#settings.onDecision !== undefined) this.#onDecisionLine(line);
      }),
    );
    channel.on("error", () => undefined);
    // The channel ends when the gate exits (its crash is the supervisor's to report).
    channel.once("close", () => this.#fail(new FirewallError("stack_failed", "the DNS gate exited")));
  }

  #onLine(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      this.#log.warn({ event: "dns_gate_bad_line" }, "DNS gate wrote a line that is not JSON");
      return;
    }
    if (typeof msg["id"] === "number") {
      const pending = this.#pending.get(msg["id"]);
      if (pending === undefined) return;
      this.#pending.delete(msg["id"]);
      clearTimeout(pending.timer);
      pending.resolve(msg as unknown as ControlReply);
      return;
    }
    switch (msg["event"]) {
      case "ready":
        this.#ready?.(typeof msg["port"] === "number" ? msg["port"] : this.#options.port);
        return;
      case "decisions_dropped":
        if (typeof msg["count"] === "number") this.#settings.onDecisionsDropped?.(msg["count"]);
        this.#log.warn(
          { event: "dns_decisions_dropped", count: msg["count"] },
          "DNS gate dropped decisions the daemon did not read in time",
        );
        return;
      default:
        if (msg["id"] === null) {
          this.#log.warn(
            { event: "dns_gate_refused_request", error: msg["error"] },
            "DNS gate refused a request",
          );
        }
    }
  }

  /** One `{"event":"decision","decision":{...}}` line to the decision sink. */
  #onDecisionLine(line: string): void {
    let decision: DnsDecision;
    try {
      decision = JSON.parse(line.slice(DECISION_BODY_AT, -1)) as DnsDecision;
    } catch {
      this.#log.warn({ event: "dns_gate_bad_decision" }, "DNS gate wrote a decision that is not JSON");
      return;
    }
    try {
      this.#settings.onDecision?.(decision);
    } catch (err) {
      this.#log.error({ err, event: "dns_decision_handler_failed" }, "decision handler threw");
    }
  }

  /** Rejects the ready wait and every pending request. */
  #fail(why: Error): void {
    this.#gone?.(why);
    for (const [id, pending] of this.#pending) {
      clearTimeout(pending.timer);
      pending.reject(why);
      this.#pending.delete(id);
    }
  }
}

/** Binds UDP and TCP on address:port and lets go; rejects with stack_failed naming the errno. */
async function assertCanListen(address: string, port: number): Promise<void> {
  const udp = createSocket("udp4");
  const tcp = createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      udp.once("error", reject);
      udp.bind({ address, port, exclusive: true }, () => resolve());
    });
    await new Promise<void>((resolve, reject) => {
      tcp.once("error", reject);
      tcp.listen({ host: address, port, exclusive: true }, () => resolve());
    });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "error";
    throw new FirewallError("stack_failed", `the DNS gate cannot listen on ${address}:${port} (${code})`, {
      cause: err,
    });
  } finally {
    await new Promise<void>((resolve) => tcp.close(() => resolve()));
    await new Promise<void>((resolve) => {
      try {
        udp.close(() => resolve());
      } catch {
        resolve();
      }
    });
  }
}
