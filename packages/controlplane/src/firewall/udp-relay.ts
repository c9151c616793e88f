// The UDP relay: HAProxy proxies no UDP, so allowed UDP rules end here. The eBPF sendmsg4 hook
// steers an agent's datagram for a routed (name, port) to this relay's socket for that pair on the
// proxy's address; the relay resolves the name itself (never the agent's original address),
// refuses forbidden destinations, and keeps one upstream socket per agent source (a session) so
// replies find their way back; recvmsg4 makes them appear to come from the original destination.
// See README.md, "UDP".
import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import { BlockList, isIPv4 } from "node:net";
import type { Logger } from "pino";
import type { ProxyDecision } from "./proxy/index.js";
import type { ProxyAction, ProxyScope, ProxySource } from "./proxy/index.js";

/** One rule's say on a relayed (name, port): its scope and action. */
export interface UdpRelayEntry {
  readonly ruleId: string;
  readonly scope: ProxyScope;
  readonly action: ProxyAction;
}

/** One relay socket: datagrams to `listener` on the proxy's address are for `dst`:`port`. */
export interface UdpRelayRoute {
  readonly listener: number;
  /** A DNS name or an IPv4 address (never a wildcard or CIDR: compile.ts leaves those out). */
  readonly dst: string;
  readonly port: number;
  readonly entries: readonly UdpRelayEntry[];
}

/** What the relay enforces; apply() replaces the previous one as a whole. */
export interface UdpRelayPolicy {
  readonly routes: readonly UdpRelayRoute[];
  readonly sources: readonly ProxySource[];
  /** IPv4 addresses or CIDRs never relayed to, checked after resolution. */
  readonly forbidden: readonly string[];
}

/** Why a datagram was dropped (the keys of `UdpRelayStats.dropped`). */
export type UdpDropReason =
  | "not_agent"
  | "no_rule"
  | "rule_denies"
  | "session_cap"
  | "pending_full"
  | "unresolvable"
  | "forbidden_destination"
  | "send_failed";

/** Counters for status and tests. */
export interface UdpRelayStats {
  readonly sockets: number;
  readonly sessions: number;
  readonly relayed: number;
  readonly replies: number;
  readonly dropped: Readonly<Record<UdpDropReason, number>>;
}

/** Options of a UdpRelay. */
export interface UdpRelayOptions {
  /** The proxy's address: every relay socket binds here. */
  readonly address: string;
  /** A records of a name, from the firewall's upstream resolvers. */
  readonly resolve: (name: string) => Promise<readonly string[]>;
  readonly log: Logger;
  readonly onDecision?: (decision: ProxyDecision) => void;
  /** A session without a datagram either way for this long is closed (default 30 s). */
  readonly idleMs?: number;
  /** Sessions over all sockets (default 4096): beyond it new sources are dropped, counted. */
  readonly maxSessions?: number;
  /** Datagrams held per session while its name resolves (default 16). */
  readonly maxPending?: number;
  /** At most one drop log line per reason in this window (default 10 s). */
  readonly logIntervalMs?: number;
}

/** A UDP relay error with a stable reason. */
export class UdpRelayError extends Error {
  override readonly name = "UdpRelayError";
  constructor(
    readonly reason: "bind_failed" | "closed",
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

interface Session {
  readonly key: string;
  readonly source: string;
  readonly sourcePort: number;
  readonly agent: ProxySource;
  readonly ruleId: string;
  readonly opened: number;
  upstream: Socket | undefined;
  pending: Buffer[] | undefined;
  last: number;
  bytesIn: number;
  bytesOut: number;
}

interface Relay {
  route: UdpRelayRoute;
  readonly socket: Socket;
  readonly sessions: Map<string, Session>;
}

const DROP_REASONS: readonly UdpDropReason[] = [
  "not_agent",
  "no_rule",
  "rule_denies",
  "session_cap",
  "pending_full",
  "unresolvable",
  "forbidden_destination",
  "send_failed",
];

/** The UDP relay: one socket per UDP route on the proxy's address, sessions per agent source. */
export class UdpRelay {
  readonly #o: Required<Omit<UdpRelayOptions, "onDecision">> & Pick<UdpRelayOptions, "onDecision">;
  readonly #relays = new Map<number, Relay>();
  #sources: readonly ProxySource[] = [];
  #forbidden = new BlockList();
  #sessionCount = 0;
  #relayed = 0;
  #replies = 0;
  readonly #dropped = Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<UdpDropReason, number>;
  readonly #lastLog = new Map<UdpDropReason, number>();
  #sweeper: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(options: UdpRelayOptions) {
    this.#o = {
      idleMs: 30_000,
      maxSessions: 4096,
      maxPending: 16,
      logIntervalMs: 10_000,
      ...options,
    };
  }

  /**
   * Puts a policy into effect: sockets for new routes are bound (rejects UdpRelayError
   * `bind_failed`, leaving the others as they were), a removed or re-targeted route's socket and
   * sessions are closed (revocation), and sessions their rules no longer allow end.
   */
  async apply(policy: UdpRelayPolicy): Promise<void> {
    if (this.#closed) throw new UdpRelayError("closed", "the UDP relay is closed");
    this.#sources = policy.sources;
    const forbidden = new BlockList();
    for (const f of policy.forbidden) {
      const [addr, bits] = f.split("/");
      if (bits === undefined) forbidden.addAddress(addr!, "ipv4");
      else forbidden.addSubnet(addr!, Number(bits), "ipv4");
    }
    this.#forbidden = forbidden;
    const wanted = new Map(policy.routes.map((r) => [r.listener, r]));
    for (const [listener, relay] of this.#relays) {
      const next = wanted.get(listener);
      if (next === undefined || next.dst !== relay.route.dst || next.port !== relay.route.port) {
        this.#closeRelay(listener, relay);
      }
    }
    for (const route of wanted.values()) {
      const held = this.#relays.get(route.listener);
      if (held !== undefined) {
        held.route = route;
        // Narrowed: a session whose source the rules no longer allow ends now, not at idle.
        for (const s of held.sessions.values()) {
          if (this.#verdict(route, s.agent).action !== "allow") this.#closeSession(held, s);
        }
        continue;
      }
      await this.#open(route);
    }
    if (this.#sweeper === undefined) {
      this.#sweeper = setInterval(() => this.#sweep(), Math.max(50, this.#o.idleMs / 4));
      this.#sweeper.unref();
    }
  }

  /** The relay's counters. */
  stats(): UdpRelayStats {
    return {
      sockets: this.#relays.size,
      sessions: this.#sessionCount,
      relayed: this.#relayed,
      replies: this.#replies,
      dropped: { ...this.#dropped },
    };
  }

  /** Closes every socket and session; idempotent. */
  close(): Promise<void> {
    this.#closed = true;
    if (this.#sweeper !== undefined) clearInterval(this.#sweeper);
    this.#sweeper = undefined;
    for (const [listener, relay] of this.#relays) this.#closeRelay(listener, relay);
    return Promise.resolve();
  }

  async #open(route: UdpRelayRoute): Promise<void> {
    const socket = createSocket("udp4");
    const relay: Relay = { route, socket, sessions: new Map() };
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once("error", reject);
        socket.bind({ address: this.#o.address, port: route.listener, exclusive: true }, () => {
          socket.off("error", reject);
          resolve();
        });
      });
    } catch (err) {
      socket.close();
      throw new UdpRelayError(
        "bind_failed",
        `udp ${this.#o.address}:${route.listener}: ${(err as Error).message}`,
        { cause: err },
      );
    }
    socket.on("error", (err) => {
      this.#o.log.warn(
        { err, listener: route.listener, event: "udp_relay_socket_error" },
        "udp relay socket error",
      );
    });
    socket.on("message", (msg, rinfo) => this.#fromAgent(relay, msg, rinfo));
    this.#relays.set(route.listener, relay);
    this.#o.log.info(
      { listener: route.listener, dst: route.dst, port: route.port, event: "udp_relay_open" },
      "udp relay open",
    );
  }

  #fromAgent(relay: Relay, msg: Buffer, rinfo: RemoteInfo): void {
    const key = `${rinfo.address}:${rinfo.port}`;
    const held = relay.sessions.get(key);
    if (held !== undefined) {
      held.last = Date.now();
      this.#toUpstream(relay, held, msg);
      return;
    }
    const agent = this.#agentOf(rinfo.address);
    if (agent === undefined) {
      this.#drop(relay, "not_agent", rinfo, undefined);
      return;
    }
    const verdict = this.#verdict(relay.route, agent);
    if (verdict.action !== "allow") {
      this.#drop(
        relay,
        verdict.ruleId === undefined ? "no_rule" : "rule_denies",
        rinfo,
        agent,
        verdict.ruleId,
      );
      return;
    }
    if (this.#sessionCount >= this.#o.maxSessions) {
      this.#drop(relay, "session_cap", rinfo, agent, verdict.ruleId);
      return;
    }
    const session: Session = {
      key,
      source: rinfo.address,
      sourcePort: rinfo.port,
      agent,
      ruleId: verdict.ruleId!,
      opened: Date.now(),
      upstream: undefined,
      pending: [msg],
      last: Date.now(),
      bytesIn: 0,
      bytesOut: 0,
    };
    relay.sessions.set(key, session);
    this.#sessionCount++;
    void this.#connect(relay, session);
  }

  async #connect(relay: Relay, session: Session): Promise<void> {
    const { dst, port } = relay.route;
    let upstream: string | undefined;
    let reason: UdpDropReason | undefined;
    try {
      // By name, always: the agent's original address is never used (it may be anything the
      // agent made the name resolve to in its own cache).
      const addresses = isIPv4(dst) ? [dst] : await this.#o.resolve(dst);
      upstream = addresses.find((a) => isIPv4(a) && !this.#forbidden.check(a, "ipv4"));
      if (upstream === undefined) reason = addresses.length === 0 ? "unresolvable" : "forbidden_destination";
    } catch {
      reason = "unresolvable";
    }
    if (relay.sessions.get(session.key) !== session) return; // closed while resolving
    if (reason !== undefined || upstream === undefined) {
      const count = session.pending?.length ?? 1;
      this.#closeSession(relay, session);
      this.#drop(
        relay,
        reason ?? "unresolvable",
        { address: session.source, port: session.sourcePort },
        session.agent,
        session.ruleId,
        count,
      );
      return;
    }
    const socket = createSocket("udp4");
    socket.on("error", (err) => {
      this.#o.log.warn({ err, dst, port, event: "udp_relay_upstream_error" }, "udp relay upstream error");
    });
    socket.on("message", (reply) => {
      session.last = Date.now();
      session.bytesIn += reply.length;
      this.#replies++;
      relay.socket.send(reply, session.sourcePort, session.source);
    });
    await new Promise<void>((resolve) => socket.connect(port, upstream, () => resolve()));
    if (relay.sessions.get(session.key) !== session) {
      socket.close();
      return;
    }
    session.upstream = socket;
    this.#decide(
      relay,
      session.agent,
      { address: session.source, port: session.sourcePort },
      "allow",
      undefined,
      session.ruleId,
      upstream,
    );
    const pending = session.pending ?? [];
    session.pending = undefined;
    for (const m of pending) this.#toUpstream(relay, session, m);
  }

  #toUpstream(relay: Relay, session: Session, msg: Buffer): void {
    if (session.upstream === undefined) {
      if (session.pending === undefined || session.pending.length >= this.#o.maxPending) {
        this.#count(relay, "pending_full", { address: session.source, port: session.sourcePort });
        return;
      }
      session.pending.push(msg);
      return;
    }
    session.bytesOut += msg.length;
    this.#relayed++;
    session.upstream.send(msg, (err) => {
      if (err) this.#count(relay, "send_failed", { address: session.source, port: session.sourcePort });
    });
  }

  /** Agent entries win over project entries over global ones (the proxy's order). */
  #verdict(route: UdpRelayRoute, agent: ProxySource): { action: ProxyAction | undefined; ruleId?: string } {
    const tiers: ((s: ProxyScope) => boolean)[] = [
      (s) => s.kind === "agent" && s.agent === agent.agent,
      (s) => s.kind === "project" && agent.project !== undefined && s.project === agent.project,
      (s) => s.kind === "global",
    ];
    for (const inTier of tiers) {
      const hits = route.entries.filter((e) => inTier(e.scope));
      if (hits.length === 0) continue;
      const deny = hits.find((e) => e.action === "deny");
      const hit = deny ?? hits[0]!;
      return { action: hit.action, ruleId: hit.ruleId };
    }
    return { action: undefined };
  }

  /** The agent a source address belongs to; undefined for anything that is not an agent. */
  #agentOf(address: string): ProxySource | undefined {
    for (const s of this.#sources) {
      if (s.agent === undefined) continue;
      if (!s.address.includes("/")) {
        if (s.address === address) return s;
        continue;
      }
      const [net, bits] = s.address.split("/");
      const list = new BlockList();
      list.addSubnet(net!, Number(bits), "ipv4");
      if (list.check(address, "ipv4")) return s;
    }
    return undefined;
  }

  #sweep(): void {
    const cutoff = Date.now() - this.#o.idleMs;
    for (const relay of this.#relays.values()) {
      for (const s of relay.sessions.values()) {
        if (s.last <= cutoff) this.#closeSession(relay, s);
      }
    }
  }

  #closeSession(relay: Relay, session: Session): void {
    if (relay.sessions.get(session.key) !== session) return;
    relay.sessions.delete(session.key);
    this.#sessionCount--;
    session.pending = undefined;
    session.upstream?.close();
    session.upstream = undefined;
  }

  #closeRelay(listener: number, relay: Relay): void {
    for (const s of [...relay.sessions.values()]) this.#closeSession(relay, s);
    relay.socket.close();
    this.#relays.delete(listener);
    this.#o.log.info(
      { listener, dst: relay.route.dst, port: relay.route.port, event: "udp_relay_closed" },
      "udp relay closed",
    );
  }

  #drop(
    relay: Relay,
    reason: UdpDropReason,
    from: { address: string; port: number },
    agent: ProxySource | undefined,
    ruleId?: string,
    count = 1,
  ): void {
    this.#count(relay, reason, from, count);
    // Floods (non-agents, the cap) are counted only; a decision per datagram would be the flood again.
    if (reason === "not_agent" || reason === "session_cap") return;
    this.#decide(relay, agent, from, "deny", reason, ruleId, undefined);
  }

  #count(relay: Relay, reason: UdpDropReason, from: { address: string; port: number }, count = 1): void {
    this.#dropped[reason] += count;
    const now = Date.now();
    const last = this.#lastLog.get(reason);
    if (last !== undefined && now - last < this.#o.logIntervalMs) return;
    this.#lastLog.set(reason, now);
    this.#o.log.warn(
      {
        reason,
        source: from.address,
        listener: relay.route.listener,
        dst: relay.route.dst,
        port: relay.route.port,
        dropped: this.#dropped[reason],
        event: "udp_relay_drop",
      },
      "udp datagram dropped",
    );
  }

  #decide(
    relay: Relay,
    agent: ProxySource | undefined,
    from: { address: string; port: number },
    verdict: "allow" | "deny",
    reason: string | undefined,
    ruleId: string | undefined,
    upstream: string | undefined,
  ): void {
    this.#o.onDecision?.({
      layer: "udp",
      time: Math.floor(Date.now() / 1000),
      source: from.address,
      sourcePort: from.port,
      agent: agent?.agent,
      project: agent?.project,
      name: relay.route.dst,
      port: relay.route.port,
      verdict,
      reason,
      rule: ruleId,
      upstream,
      method: undefined,
      path: undefined,
      status: undefined,
      durationMs: 0,
      bytesIn: 0,
      bytesOut: 0,
      termination: verdict === "allow" ? "--" : "PR",
    });
  }
}
