// The dialer: one link per running agent container, which dials clawkerd at <ip>:7700 with the
// control plane's client leaf (TLS 1.3), opens the Session and drives it: Hello, trust
// classification against the registry, RegisterRequired when there is no row, the init and boot
// plans, AgentReady. It connects even to a clawkerd whose certificate does not verify (the CP must
// reach a misbehaving agent), but such an agent is classified untrusted and driven no further.
import { X509Certificate } from "node:crypto";
import { connect as tcpConnect } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { credentials, type ChannelCredentials, type Client } from "@grpc/grpc-js";
import type { clawkerd } from "@clawker/proto";
import { CLAWKERD_CN, CLAWKERD_PORT, ClawkerdClientFast, LABELS, agentFullName } from "@clawker/proto";
import type { AgentEvent, CommandEvent, Topic } from "@clawker/overseer";
import type { Logger } from "../logging.js";
import { enforceTls13 } from "../server/grpc-listener.js";
import type { AddressIndexChange, ContainerAddressIndex, ContainerRecord } from "./address-index.js";
import { thumbprintOf } from "./identity-gate.js";
import { DEFAULT_PLANS, toShellCommand, type AgentPlans, type PlanStep } from "./plans.js";
import type { Registry } from "./registry.js";
import { AgentSession, SessionError, type ExecOptions } from "./session.js";

/** PEM material the control plane dials clawkerd with (trust dir: ca.crt, controlplane-client.*). */
export interface DialerTls {
  readonly ca: Buffer;
  readonly cert: Buffer;
  readonly key: Buffer;
}

/** Reconnect schedule: `initialMs` doubling to `maxMs`, giving up `giveUpMs` after the first failure. */
export interface BackoffOptions {
  readonly initialMs: number;
  readonly maxMs: number;
  readonly giveUpMs: number;
}

/**
 * grpc-js's own reconnect backoff within one attempt: 25 ms, growing 1.6x (jittered) to 100 ms.
 * clawkerd takes its Node start (~0.2 s of CPU) to listen; a refused connect on the agents bridge
 * costs next to nothing, while a longer step is time the agent waits after it listens.
 */
const RECONNECT_INITIAL_MS = 25;
const RECONNECT_MAX_MS = 100;

/**
 * Until clawkerd listens, a bare TCP connect 10 ms after the last, the step growing 1.5x to 30 ms:
 * a refused connect on the agents bridge costs ~0.1-0.2 ms of CPU here, where each of grpc-js's
 * reconnects builds a TLS and HTTP/2 client, so its steps had to stay long (25 ms growing to
 * 100) and the agent waited up to a step (mean ~50 ms) after clawkerd listened. The step stays
 * above 10 ms because each probe is CPU taken from clawkerd's own start on a loaded host. The
 * Session's own connect follows the first accepted probe.
 */
export const LISTEN_PROBE_MS = Object.freeze({ firstMs: 10, maxMs: 30, factor: 1.5 });

/**
 * The HTTP/2 receive window of a Session's connection and stream: four commands' output windows
 * (DEFAULT_OUTPUT_WINDOW), so one command at full credit never waits for a WINDOW_UPDATE.
 */
export const SESSION_WINDOW_BYTES = 4 << 20;

/** Default schedule: 500 ms doubling to 10 s, give up after 60 s. */
export const DEFAULT_BACKOFF: BackoffOptions = Object.freeze({
  initialMs: 500,
  maxMs: 10_000,
  giveUpMs: 60_000,
});

/** Per-step time limits of a link. */
export interface DialerTimeouts {
  /** One connection attempt (TCP + TLS + HTTP/2). */
  readonly connectMs: number;
  readonly helloMs: number;
  /** RegisterRequired -> RegisterDone (token exchange + Register). */
  readonly registerMs: number;
}

/** Default time limits. */
export const DEFAULT_DIALER_TIMEOUTS: DialerTimeouts = Object.freeze({
  connectMs: 5_000,
  helloMs: 10_000,
  registerMs: 30_000,
});

/** Options of a Dialer. */
export interface DialerOptions {
  readonly index: Pick<ContainerAddressIndex, "records" | "onChange" | "get">;
  readonly registry: Pick<Registry, "get" | "touch">;
  readonly agents: Pick<Topic<AgentEvent>, "publish">;
  readonly commands?: Pick<Topic<CommandEvent>, "publish">;
  readonly tls: DialerTls;
  readonly log: Logger;
  readonly plans?: AgentPlans;
  /** AgentReady.default_cmd for a container; default "" (the image's own command). */
  readonly defaultCmd?: (record: ContainerRecord) => string;
  /** host:port to dial for a container; default its first address and CLAWKERD_PORT. */
  readonly target?: (record: ContainerRecord) => string | undefined;
  readonly backoff?: Partial<BackoffOptions>;
  readonly timeouts?: Partial<DialerTimeouts>;
  readonly now?: () => number;
  /**
   * Told each time a container's link becomes ready (readyChannel answers), a re-dial of a running
   * agent included (which publishes no `agent.ready`): the firewall CA push (firewall/ca-push.ts).
   */
  readonly onLinkReady?: (containerId: string) => void;
  /** Every Session's `onOutput` (AgentSessionOptions): the daemon's ScavengePacer. */
  readonly onOutput?: (bytes: number) => void;
}

/** How a link's last session went, for callers and tests. */
export type LinkState =
  "dialing" | "open" | "ready" | "untrusted" | "register_failed" | "plan_failed" | "gave_up" | "closed";

/** What the dialer knows about one container's Session. */
export interface LinkStatus {
  readonly containerId: string;
  readonly state: LinkState;
  readonly peerThumbprint?: string;
  readonly isChainVerified?: boolean;
  readonly attempts: number;
}

/** The dialer is closed, or has no open Session for a container. */
export class DialerError extends Error {
  readonly reason: "no_session" | "closed";
  constructor(reason: "no_session" | "closed", message: string) {
    super(message);
    this.name = "DialerError";
    this.reason = reason;
  }
}

/** Whether a clawkerd leaf chains to our CA, is in its validity window and has the clawkerd CN. */
export function verifyAgentCertificate(der: Buffer, ca: X509Certificate, nowMs: number): boolean {
  try {
    const leaf = new X509Certificate(der);
    if (!leaf.checkIssued(ca) || !leaf.verify(ca.publicKey)) return false;
    if (nowMs < Date.parse(leaf.validFrom) || nowMs > Date.parse(leaf.validTo)) return false;
    return leaf.subject.split("\n").includes(`CN=${CLAWKERD_CN}`);
  } catch {
    return false;
  }
}

/** A gRPC channel as a client holds it (what `channelOverride` takes). */
export type AgentChannel = ReturnType<Client["getChannel"]>;

/** Outcomes of one session that end the link (no re-dial). */
type Final = "untrusted" | "register_failed" | "plan_failed";

class ConnectError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ConnectError";
  }
}

class Link {
  readonly abort = new AbortController();
  state: LinkState = "dialing";
  attempts = 0;
  peerThumbprint: string | undefined;
  isChainVerified: boolean | undefined;
  session: AgentSession | undefined;
  /** The gRPC channel of the open Session (other services of clawkerd ride on it). */
  channel: AgentChannel | undefined;
  done: Promise<void> = Promise.resolve();
  constructor(public record: ContainerRecord) {}
  status(): LinkStatus {
    return {
      containerId: this.record.id,
      state: this.state,
      attempts: this.attempts,
      ...(this.peerThumbprint === undefined ? {} : { peerThumbprint: this.peerThumbprint }),
      ...(this.isChainVerified === undefined ? {} : { isChainVerified: this.isChainVerified }),
    };
  }
}

/** Dials every running agent's clawkerd and drives its Session; one link per container. */
export class Dialer {
  readonly #o: DialerOptions;
  readonly #backoff: BackoffOptions;
  readonly #timeouts: DialerTimeouts;
  readonly #plans: AgentPlans;
  readonly #now: () => number;
  readonly #ca: X509Certificate;
  readonly #links = new Map<string, Link>();
  #unsubscribe: (() => void) | undefined;
  #closing: Promise<void> | undefined;

  constructor(options: DialerOptions) {
    this.#o = options;
    this.#backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.#timeouts = { ...DEFAULT_DIALER_TIMEOUTS, ...options.timeouts };
    this.#plans = options.plans ?? DEFAULT_PLANS;
    this.#now = options.now ?? Date.now;
    this.#ca = new X509Certificate(options.tls.ca);
  }

  /** Dials every container the index knows and follows its changes until `close()` or `signal`. */
  start(signal?: AbortSignal): void {
    if (this.#unsubscribe !== undefined || this.#closing !== undefined) return;
    enforceTls13();
    this.#unsubscribe = this.#o.index.onChange((c) => this.#onChange(c));
    for (const record of this.#o.index.records()) this.#ensure(record);
    signal?.addEventListener("abort", () => void this.close(), { once: true });
  }

  /** The link status of a container, if it has a link. */
  status(containerId: string): LinkStatus | undefined {
    return this.#links.get(containerId)?.status();
  }

  /** The open Session of a container, if any. */
  session(containerId: string): AgentSession | undefined {
    const s = this.#links.get(containerId)?.session;
    return s?.isClosed === false ? s : undefined;
  }

  /**
   * The mTLS channel of a container's open, ready Session, for clawkerd's other services
   * (JobService): a client built with `channelOverride` on it shares the connection and its
   * verified peer. Undefined unless the link is `ready` (trusted, registered, booted).
   */
  readyChannel(containerId: string): AgentChannel | undefined {
    const link = this.#links.get(containerId);
    if (link?.state !== "ready" || link.session?.isClosed !== false) return undefined;
    return link.channel;
  }

  /**
   * Runs a ShellCommand in a container over its open Session and yields its Responses up to its
   * one Done or Error. Throws DialerError("no_session") when the container has no open Session.
   */
  exec(
    containerId: string,
    shell: clawkerd.ShellCommand,
    options?: ExecOptions,
  ): AsyncIterableIterator<clawkerd.Response, undefined> {
    if (this.#closing !== undefined) throw new DialerError("closed", "dialer is closed");
    const session = this.session(containerId);
    if (session === undefined) throw new DialerError("no_session", `no open session to ${containerId}`);
    return session.exec(shell, options);
  }

  /** Stops following the index, cancels every link and waits for them. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#unsubscribe?.();
      const links = [...this.#links.values()];
      for (const link of links) link.abort.abort("dialer closed");
      await Promise.all(links.map((l) => l.done));
    })();
    return this.#closing;
  }

  #onChange(change: AddressIndexChange): void {
    if (change.kind === "up") this.#ensure(change.record);
    else {
      const link = this.#links.get(change.containerId);
      link?.abort.abort(`container ${change.reason}`);
    }
  }

  #ensure(record: ContainerRecord): void {
    if (this.#closing !== undefined) return;
    const existing = this.#links.get(record.id);
    if (existing !== undefined && !existing.abort.signal.aborted) {
      existing.record = record;
      return; // one dial per container at a time
    }
    const link = new Link(record);
    this.#links.set(record.id, link);
    link.done = this.#run(link).finally(() => {
      if (this.#links.get(record.id) === link && link.abort.signal.aborted) this.#links.delete(record.id);
    });
  }

  #fullName(record: ContainerRecord): string {
    return agentFullName(record.labels[LABELS.project] ?? "", record.labels[LABELS.agent] ?? "");
  }

  async #run(link: Link): Promise<void> {
    const signal = link.abort.signal;
    const log = this.#o.log.child({ containerId: link.record.id });
    let delay = this.#backoff.initialMs;
    let firstFailure: number | undefined;
    while (!signal.aborted) {
      let final: Final | "closed";
      try {
        final = await this.#connectOnce(link, log);
      } catch (err) {
        if (signal.aborted) break;
        link.attempts++;
        const now = this.#now();
        firstFailure ??= now;
        const message = err instanceof Error ? err.message : String(err);
        this.#o.agents.publish({
          type: "agent.dial_failed",
          containerId: link.record.id,
          agentName: this.#fullName(link.record),
          attempt: link.attempts,
          error: message,
          time: now,
        });
        log.warn({ event: "dial_failed", attempt: link.attempts, err: message }, "cannot reach clawkerd");
        if (now - firstFailure + delay > this.#backoff.giveUpMs) {
          link.state = "gave_up";
          log.error({ event: "dial_gave_up", attempts: link.attempts }, "giving up on clawkerd");
          return;
        }
        try {
          await sleep(delay, undefined, { signal });
        } catch {
          break;
        }
        delay = Math.min(delay * 2, this.#backoff.maxMs);
        continue;
      }
      if (final !== "closed") {
        link.state = final;
        return;
      }
      // An established session ended while the container runs: start the schedule afresh.
      firstFailure = undefined;
      delay = this.#backoff.initialMs;
      try {
        await sleep(delay, undefined, { signal });
      } catch {
        break;
      }
    }
    link.state = "closed";
  }

  #credentials(): ChannelCredentials {
    const { ca, key, cert } = this.#o.tls;
    // rejectUnauthorized=false: connect whatever the agent presents, then verify by hand below.
    // checkServerIdentity: we dial an IP that the agent leaf does not name; identity is the thumbprint.
    return credentials.createSsl(ca, key, cert, {
      rejectUnauthorized: false,
      checkServerIdentity: () => undefined,
    });
  }

  /** One connection: resolves when an established session ends; throws when none was established. */
  async #connectOnce(link: Link, log: Logger): Promise<Final | "closed"> {
    const signal = link.abort.signal;
    const record = link.record;
    const target = (this.#o.target ?? defaultTarget)(record);
    if (target === undefined) throw new ConnectError("container has no address");
    link.state = "dialing";
    await untilListening(target, Date.now() + this.#timeouts.connectMs, signal);
    const client = new ClawkerdClientFast(target, this.#credentials(), {
      "grpc.keepalive_time_ms": 20_000,
      "grpc.keepalive_timeout_ms": 10_000,
      "grpc.keepalive_permit_without_calls": 1,
      "grpc.use_local_subchannel_pool": 1,
      "grpc.enable_retries": 0,
      "grpc.max_receive_message_length": 8 * 1024 * 1024,
      // Output arrives in chunks of up to 64 KiB: with HTTP/2's 64 KiB default window clawkerd
      // stalls on a WINDOW_UPDATE every chunk or two, which cost twice the CPU per MiB on both sides.
      // Memory stays bounded: per-command credit (command-flow.ts) caps each command, this window
      // the stream.
      "grpc-node.flow_control_window": SESSION_WINDOW_BYTES,
      // We dial as soon as Docker reports the start, usually before clawkerd listens: grpc-js's
      // default first reconnect backoff (1 s) was most of an agent's start-to-registered time.
      // Refused connects are cheap; waitForReady's deadline (connectMs) still bounds the attempt.
      "grpc.initial_reconnect_backoff_ms": RECONNECT_INITIAL_MS,
      "grpc.max_reconnect_backoff_ms": RECONNECT_MAX_MS,
    });
    const onAbort = (): void => client.close();
    signal.addEventListener("abort", onAbort, { once: true });
    const agentName = this.#fullName(record);
    const facts = (): { containerId: string; agentName: string; time: number } => ({
      containerId: record.id,
      agentName,
      time: this.#now(),
    });
    let session: AgentSession | undefined;
    let cancel: (() => void) | undefined;
    try {
      await new Promise<void>((resolve, reject) =>
        client.waitForReady(Date.now() + this.#timeouts.connectMs, (err) =>
          err ? reject(new ConnectError(`connect ${target}: ${err.message}`, { cause: err })) : resolve(),
        ),
      );
      if (signal.aborted) throw new ConnectError("cancelled");
      const stream = client.session();
      session = new AgentSession({
        containerId: record.id,
        stream,
        ...(this.#o.commands === undefined ? {} : { commands: this.#o.commands }),
        ...(this.#o.onOutput === undefined ? {} : { onOutput: this.#o.onOutput }),
        log,
        now: this.#now,
      });
      const open = session;
      cancel = (): void => open.close(`cancelled: ${String(signal.reason)}`);
      signal.addEventListener("abort", cancel, { once: true });
      let ack: clawkerd.HelloAck;
      try {
        ack = await session.hello(this.#timeouts.helloMs);
      } catch (err) {
        session.close("hello failed");
        throw new ConnectError(`hello: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
      link.session = session;
      link.channel = client.getChannel();
      link.state = "open";
      const peer = stream.getAuthContext()?.sslPeerCertificate;
      const der = peer?.raw;
      const peerThumbprint = der === undefined ? "" : thumbprintOf(der);
      const isChainVerified = der !== undefined && verifyAgentCertificate(der, this.#ca, this.#now());
      link.peerThumbprint = peerThumbprint;
      link.isChainVerified = isChainVerified;
      this.#o.agents.publish({
        ...facts(),
        type: "agent.session_opened",
        peerThumbprint,
        isChainVerified,
        isInitialized: ack.initialized,
        isCmdRunning: ack.cmdRunning,
      });
      log.info(
        {
          event: "session_opened",
          peerThumbprint,
          isChainVerified,
          initialized: ack.initialized,
          cmdRunning: ack.cmdRunning,
          // Per-command flow control, or the session-wide fallback of a clawkerd without it.
          commandFlowControl: session.hasCommandFlowControl,
        },
        "session opened",
      );

      const final = await this.#drive(link, session, ack, log, facts);
      if (final !== undefined) {
        session.close(final);
        await session.closed;
        this.#o.agents.publish({ ...facts(), type: "agent.session_closed", reason: final });
        return final;
      }
      const reason = await session.closed;
      this.#o.agents.publish({ ...facts(), type: "agent.session_closed", reason });
      log.info({ event: "session_closed", reason }, "session closed");
      return "closed";
    } finally {
      signal.removeEventListener("abort", onAbort);
      if (cancel !== undefined) signal.removeEventListener("abort", cancel);
      if (link.session === session) {
        link.session = undefined;
        link.channel = undefined;
      }
      client.close();
    }
  }

  /** Classifies and drives an open session; returns a Final outcome, or undefined when it is ready. */
  async #drive(
    link: Link,
    session: AgentSession,
    ack: clawkerd.HelloAck,
    log: Logger,
    facts: () => { containerId: string; agentName: string; time: number },
  ): Promise<Final | undefined> {
    const record = link.record;
    const presented = link.peerThumbprint ?? "";
    const untrusted = (expected: string, why: string): Final => {
      this.#o.agents.publish({
        ...facts(),
        type: "agent.untrusted",
        expectedThumbprint: expected,
        presentedThumbprint: presented,
      });
      log.warn({ event: "agent_untrusted", why, expected, presented }, "agent not trusted");
      return "untrusted";
    };
    const row = this.#o.registry.get(record.id);
    if (link.isChainVerified !== true)
      return untrusted(row?.certThumbprint ?? "", "certificate does not verify");
    if (row !== undefined && row.certThumbprint !== presented)
      return untrusted(row.certThumbprint, "thumbprint mismatch");
    try {
      if (row === undefined) {
        this.#o.agents.publish({ ...facts(), type: "agent.register_required" });
        const done = await session.registerRequired(this.#timeouts.registerMs);
        if (!done.ok) {
          log.warn({ event: "register_failed", error: done.error }, "agent could not register");
          return "register_failed";
        }
        const after = this.#o.registry.get(record.id);
        if (after === undefined) return untrusted("", "no registry row after RegisterDone");
        if (after.certThumbprint !== presented)
          return untrusted(after.certThumbprint, "registered another certificate");
      } else {
        this.#o.registry.touch(record.id, Math.floor(this.#now() / 1000));
      }
      if (ack.cmdRunning) {
        // A re-dial of a running agent (CP restart, dropped stream): it has booted already.
        link.state = "ready";
        this.#o.onLinkReady?.(record.id);
        return undefined;
      }
      if (!ack.initialized) {
        if (!(await this.#runPlan(session, "init", this.#plans.init, log))) return "plan_failed";
        session.initialized();
      }
      if (!(await this.#runPlan(session, "boot", this.#plans.boot, log))) return "plan_failed";
      session.ready(this.#o.defaultCmd?.(record) ?? "");
      link.state = "ready";
      this.#o.agents.publish({ ...facts(), type: "agent.ready" });
      this.#o.onLinkReady?.(record.id);
      return undefined;
    } catch (err) {
      if (err instanceof SessionError && err.reason === "session_closed") return undefined; // closed: re-dial
      log.warn({ event: "session_drive_failed", err }, "session failed before ready");
      return err instanceof SessionError && err.reason === "timeout" ? "register_failed" : "plan_failed";
    }
  }

  async #runPlan(
    session: AgentSession,
    plan: "init" | "boot",
    steps: readonly PlanStep[],
    log: Logger,
  ): Promise<boolean> {
    for (const step of steps) {
      try {
        const code = await session.run(toShellCommand(step), {
          plan,
          description: `${plan}: ${step.name}`,
          commandId: `${plan}-${step.name}`,
        });
        if (code !== 0) {
          log.error({ event: "plan_step_failed", plan, step: step.name, exitCode: code }, "plan step failed");
          return false;
        }
      } catch (err) {
        if (err instanceof SessionError && err.reason === "session_closed") throw err;
        log.error({ event: "plan_step_failed", plan, step: step.name, err }, "plan step failed");
        return false;
      }
    }
    return true;
  }
}

/**
 * Resolves once `target` (host:port, [v6]:port) accepts a TCP connection (closed at once: nothing
 * is sent); throws ConnectError at `deadline` or on abort. Only the wait: the Session's connection
 * does the TLS and every check.
 */
async function untilListening(target: string, deadline: number, signal: AbortSignal): Promise<void> {
  const colon = target.lastIndexOf(":");
  const host = target.slice(0, colon).replace(/^\[(.*)\]$/, "$1");
  const port = Number(target.slice(colon + 1));
  if (colon <= 0 || !Number.isInteger(port)) return; // not host:port: grpc-js's own connect decides
  let step: number = LISTEN_PROBE_MS.firstMs;
  for (;;) {
    if (signal.aborted) throw new ConnectError("cancelled");
    const left = deadline - Date.now();
    if (left <= 0) throw new ConnectError(`connect ${target}: not listening`);
    const isOpen = await new Promise<boolean>((resolve) => {
      const socket = tcpConnect({ host, port, timeout: Math.min(left, 1_000) });
      const done = (open: boolean): void => {
        socket.destroy();
        resolve(open);
      };
      socket.once("connect", () => done(true));
      socket.once("timeout", () => done(false));
      socket.once("error", () => done(false));
    });
    if (isOpen) return;
    try {
      await sleep(step, undefined, { signal });
      step = Math.min(step * LISTEN_PROBE_MS.factor, LISTEN_PROBE_MS.maxMs);
    } catch {
      throw new ConnectError("cancelled");
    }
  }
}

function defaultTarget(record: ContainerRecord): string | undefined {
  const address = record.addresses[0];
  if (address === undefined) return undefined;
  return address.includes(":") ? `[${address}]:${CLAWKERD_PORT}` : `${address}:${CLAWKERD_PORT}`;
}
