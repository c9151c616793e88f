// The DNS gate: UDP and TCP listeners on one address and port that answer only the names the
// asking agent may reach, record every answer's addresses in the eBPF dns_cache before replying,
// and forward allowed A queries upstream through a positive cache. README.md has the decisions.
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { setMaxListeners } from "node:events";
import { createServer, type Server, type Socket } from "node:net";
import type { Logger } from "pino";
import { AnswerCache, remainingSeconds, type CachedAnswer } from "./answer-cache.js";
import type { DnsCacheWriter } from "./cache-writer.js";
import {
  DecisionLog,
  type DecisionSink,
  type DnsAnswerError,
  type DnsDecision,
  type DnsDecisionReason,
} from "./decision.js";
import {
  buildHeaderResponse,
  buildResponse,
  CLASS_IN,
  EDE_CODE,
  ipv4ToNumber,
  MAX_QUERY_EDNS,
  parseQuery,
  QTYPE,
  RCODE,
  typeName,
  udpLimit,
  type Query,
  type RcodeName,
} from "./dns-message.js";
import { DnsGateError, InvalidPolicyError } from "./errors.js";
import {
  compilePolicy,
  EMPTY_POLICY,
  type CompiledPolicy,
  type DnsCaller,
  type MatchedRule,
} from "./policy.js";
import { RateLimiter } from "./rate-limiter.js";
import { UpstreamResolver } from "./upstream.js";

/** The EXTRA-TEXT of a blocked name's Extended DNS Error (RFC 8914 INFO-CODE 15). */
export function blockedText(name: string | undefined): string {
  return `${name ?? "the name"} is not allowed by the clawker egress policy`;
}

/** The EXTRA-TEXT of a refusal for a source address that is not a known agent (INFO-CODE 18). */
export const UNKNOWN_SOURCE_TEXT = "the source address is not a known clawker agent";

/** Options of a DnsGate. */
export interface DnsGateOptions {
  /** IPv4 address to bind (in production an address on the agents' network only). */
  readonly address: string;
  /** Port for both UDP and TCP; 0 picks a free one (the same for both). */
  readonly port: number;
  /** Where answer addresses are recorded before each reply. */
  readonly writer: DnsCacheWriter;
  readonly log: Logger;
  /** Receives every decision (issue 11's decision stream). */
  readonly onDecision?: DecisionSink;
  /** Positive cache size in (name, type) entries; default 10,000. */
  readonly cacheMaxEntries?: number;
  /** Rate-limit buckets kept (source addresses); default 65,536. */
  readonly maxClients?: number;
  /** Concurrent TCP connections; default 256. */
  readonly maxTcpConnections?: number;
  /** A TCP connection idle this long is closed (RFC 7766 §6.2.3); default 10 s. */
  readonly tcpIdleMs?: number;
  /** Queries of one TCP connection being answered at once before it is paused; default 16. */
  readonly maxTcpPending?: number;
  /** Budget for recording addresses; past it the query gets SERVFAIL. Default 1 s. */
  readonly writeTimeoutMs?: number;
  /** SO_RCVBUF of the UDP socket, bytes (the kernel caps it at net.core.rmem_max). */
  readonly udpReceiveBufferBytes?: number;
}

/** Counters since start. */
export interface DnsGateStats {
  /** Messages received (UDP datagrams and TCP frames). */
  readonly queries: number;
  /** Allowed names answered (NOERROR with or without addresses, or the upstream's NXDOMAIN). */
  readonly answers: number;
  /** Refused by policy: NXDOMAIN with EDE 15, or REFUSED for an unknown source address. */
  readonly blocked: number;
  /** Refused by the per-client rate limit. */
  readonly rateLimited: number;
  /** FORMERR, NOTIMP, BADVERS, non-IN class, SERVFAIL (upstream or cache write failed). */
  readonly errors: number;
  /** Messages not answered at all (responses, runts, oversized TCP frames). */
  readonly dropped: number;
  readonly cacheHits: number;
  readonly cacheMisses: number;
  readonly cacheEntries: number;
  readonly upstreamQueries: number;
  readonly cacheWriteFailures: number;
  readonly tcpConnections: number;
  readonly policyGeneration: number;
}

/** What applyPolicy installed. */
export interface PolicySummary {
  readonly generation: number;
  readonly rules: number;
  readonly clients: number;
}

interface Counters {
  queries: number;
  answers: number;
  blocked: number;
  rateLimited: number;
  errors: number;
  dropped: number;
  cacheHits: number;
  cacheMisses: number;
  cacheWriteFailures: number;
}

interface Resolved {
  readonly rcode: "NOERROR" | "NXDOMAIN";
  readonly entry: CachedAnswer | undefined;
  readonly error: DnsAnswerError | undefined;
}

type Transport = "udp" | "tcp";

/** Writes started in one turn: how many are unsettled, and their shared deadline. */
interface WriteGroup {
  pending: number;
  readonly timer: NodeJS.Timeout;
  readonly expired: Promise<never>;
}

/** The DNS gate. Starts with a policy that knows no caller (everything REFUSED) until applyPolicy. */
export class DnsGate {
  private readonly options: DnsGateOptions;
  private readonly log: Logger;
  private readonly decisions: DecisionLog;
  private readonly cache: AnswerCache;
  private readonly limiter: RateLimiter;
  private readonly resolver: UpstreamResolver;
  private readonly inflight = new Map<string, Promise<Resolved>>();
  private readonly abort = new AbortController();
  private readonly tcpSockets = new Set<Socket>();
  private readonly counters: Counters = {
    queries: 0,
    answers: 0,
    blocked: 0,
    rateLimited: 0,
    errors: 0,
    dropped: 0,
    cacheHits: 0,
    cacheMisses: 0,
    cacheWriteFailures: 0,
  };
  private policy: CompiledPolicy = EMPTY_POLICY;
  private generation = 0;
  private udp: UdpSocket | undefined;
  private tcp: Server | undefined;
  private bound: { address: string; port: number } | undefined;
  private closing: Promise<void> | undefined;
  private writeFailureLoggedAt = Number.NEGATIVE_INFINITY;
  private writeGroup: WriteGroup | undefined;

  constructor(options: DnsGateOptions) {
    this.options = options;
    this.log = options.log.child({ component: "dns-gate" });
    this.decisions = new DecisionLog(this.log);
    this.cache = new AnswerCache(options.cacheMaxEntries ?? 10_000);
    this.limiter = new RateLimiter(options.maxClients ?? 65_536);
    this.resolver = new UpstreamResolver({ log: this.log });
    // Every upstream query in flight listens on it (and stops when done): no leak to warn about.
    setMaxListeners(0, this.abort.signal);
  }

  /** Binds UDP and TCP on one port; `signal` aborting closes the gate. Rejects `bind_failed`. */
  async start(signal: AbortSignal): Promise<{ address: string; port: number }> {
    if (this.closing !== undefined || this.bound !== undefined) {
      throw new DnsGateError("closed", "the DNS gate was started or closed already");
    }
    if (signal.aborted) throw new DnsGateError("closed", "aborted before the DNS gate started");
    signal.addEventListener("abort", () => void this.close(), { once: true });
    const { address, port } = this.options;
    // With port 0 the TCP listener takes the port UDP got; another process may hold it for TCP.
    for (let attempt = 0; ; attempt++) {
      const udp = createSocket({
        type: "udp4",
        ...(this.options.udpReceiveBufferBytes === undefined
          ? {}
          : { recvBufferSize: this.options.udpReceiveBufferBytes }),
      });
      try {
        await new Promise<void>((resolve, reject) => {
          udp.once("error", reject);
          udp.bind({ address, port, exclusive: true }, () => {
            udp.off("error", reject);
            resolve();
          });
        });
      } catch (err) {
        udp.close();
        throw new DnsGateError("bind_failed", `udp ${address}:${port}: ${(err as Error).message}`, {
          cause: err,
        });
      }
      const udpPort = udp.address().port;
      const tcp = createServer({ noDelay: true }, (sock) => this.serveTcp(sock));
      tcp.maxConnections = this.options.maxTcpConnections ?? 256;
      try {
        await new Promise<void>((resolve, reject) => {
          tcp.once("error", reject);
          tcp.listen({ host: address, port: udpPort, exclusive: true }, () => {
            tcp.off("error", reject);
            resolve();
          });
        });
      } catch (err) {
        udp.close();
        if (port === 0 && attempt < 5 && (err as NodeJS.ErrnoException).code === "EADDRINUSE") continue;
        throw new DnsGateError("bind_failed", `tcp ${address}:${udpPort}: ${(err as Error).message}`, {
          cause: err,
        });
      }
      if (this.closing !== undefined) {
        // close() ran while binding: undo, leave nothing listening.
        udp.close();
        tcp.close();
        throw new DnsGateError("closed", "the DNS gate was closed while starting");
      }
      this.udp = udp;
      this.tcp = tcp;
      udp.on("message", (msg, rinfo) => this.onDatagram(udp, msg, rinfo.address, rinfo.port));
      udp.on("error", (err) => this.log.error({ err, event: "dns_udp_error" }, "udp socket error"));
      tcp.on("error", (err) => this.log.error({ err, event: "dns_tcp_error" }, "tcp listener error"));
      this.bound = { address, port: udpPort };
      this.log.info({ address, port: udpPort, event: "dns_gate_listening" }, "dns gate listening");
      return this.bound;
    }
  }

  /** Where the gate listens (after start). */
  address(): { address: string; port: number } | undefined {
    return this.bound;
  }

  /**
   * Validates and installs a policy in one assignment: a query sees the old policy or the new one,
   * never a mix. Throws InvalidPolicyError (every problem listed); the policy in force stays.
   */
  applyPolicy(input: unknown): PolicySummary {
    const compiled = compilePolicy(input);
    const self = this.bound ?? { address: this.options.address, port: this.options.port };
    compiled.settings.upstreams.forEach((u, i) => {
      if (u.address === self.address && u.port === self.port) {
        throw new InvalidPolicyError([
          {
            path: `upstreams[${i}]`,
            message: `${u.address}:${u.port} is the gate itself (a forwarding loop)`,
          },
        ]);
      }
    });
    this.policy = compiled;
    this.generation++;
    const summary = { generation: this.generation, rules: compiled.ruleCount, clients: compiled.callerCount };
    this.log.info({ ...summary, event: "dns_policy_applied" }, "dns policy applied");
    return summary;
  }

  /** Counters since start. */
  stats(): DnsGateStats {
    return {
      ...this.counters,
      cacheEntries: this.cache.size,
      upstreamQueries: this.resolver.queries,
      tcpConnections: this.tcpSockets.size,
      policyGeneration: this.generation,
    };
  }

  /** Stops listening, ends TCP connections and upstream queries. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.abort.abort();
      const udp = this.udp;
      const tcp = this.tcp;
      this.udp = undefined;
      this.tcp = undefined;
      for (const s of this.tcpSockets) s.destroy();
      this.tcpSockets.clear();
      await Promise.all([
        udp === undefined ? undefined : new Promise<void>((resolve) => udp.close(() => resolve())),
        tcp === undefined ? undefined : new Promise<void>((resolve) => tcp.close(() => resolve())),
      ]);
      this.cache.clear();
      if (this.bound !== undefined) this.log.info({ event: "dns_gate_closed" }, "dns gate closed");
    })();
    return this.closing;
  }

  private onDatagram(udp: UdpSocket, msg: Buffer, address: string, port: number): void {
    this.answer(msg, address, "udp").then(
      (reply) => {
        if (reply !== undefined && this.udp === udp) udp.send(reply, port, address);
      },
      (err: unknown) => this.log.error({ err, event: "dns_answer_failed" }, "answering a query failed"),
    );
  }

  private serveTcp(sock: Socket): void {
    // The listener is IPv4-only, so this is a dotted address; a socket already gone has none.
    const client = sock.remoteAddress ?? "";
    this.tcpSockets.add(sock);
    sock.setTimeout(this.options.tcpIdleMs ?? 10_000, () => sock.destroy());
    sock.on("error", () => sock.destroy());
    sock.on("close", () => this.tcpSockets.delete(sock));
    const maxPending = this.options.maxTcpPending ?? 16;
    let buffered: Buffer = Buffer.alloc(0);
    let pending = 0;
    sock.on("data", (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2) {
        const len = buffered.readUInt16BE(0);
        // RFC 7766 frames: a query this long is no query; reading it would only cost memory.
        if (len > MAX_QUERY_EDNS) {
          this.counters.dropped++;
          sock.destroy();
          return;
        }
        if (buffered.length < 2 + len) return;
        const frame = Buffer.from(buffered.subarray(2, 2 + len));
        buffered = buffered.subarray(2 + len);
        pending++;
        if (pending >= maxPending) sock.pause();
        this.answer(frame, client, "tcp").then(
          (reply) => {
            pending--;
            if (sock.destroyed) return;
            if (pending < maxPending) sock.resume();
            if (reply === undefined) return;
            const framed = Buffer.allocUnsafe(2 + reply.length);
            framed.writeUInt16BE(reply.length, 0);
            reply.copy(framed, 2);
            sock.write(framed);
          },
          (err: unknown) => {
            pending--;
            this.log.error({ err, event: "dns_answer_failed" }, "answering a query failed");
            sock.destroy();
          },
        );
      }
    });
  }

  /** The reply to one message from `client`, or undefined to send nothing. */
  private async answer(msg: Buffer, client: string, transport: Transport): Promise<Buffer | undefined> {
    const c = this.counters;
    c.queries++;
    const now = performance.now();
    // One snapshot per query: a policy swapped meanwhile applies to the next query.
    const policy = this.policy;
    const parsed = parseQuery(msg);
    if (parsed.kind === "drop") {
      c.dropped++;
      return undefined;
    }
    const { queriesPerSecond, burst } = policy.settings.rateLimit;
    if (!this.limiter.take(client, now, queriesPerSecond, burst)) {
      c.rateLimited++;
      this.decisions.rateLimited(client, now);
      return parsed.kind === "query"
        ? buildResponse(parsed.query, { rcode: RCODE.REFUSED }, limitFor(parsed.query, transport))
        : buildHeaderResponse(parsed.id, parsed.opcode, parsed.rd, RCODE.REFUSED);
    }
    if (parsed.kind === "error") {
      c.errors++;
      if (this.log.isLevelEnabled("debug")) {
        this.log.debug({ client, reason: parsed.reason, event: "dns_bad_query" }, "malformed query");
      }
      return buildHeaderResponse(parsed.id, parsed.opcode, parsed.rd, parsed.rcode);
    }
    const q = parsed.query;
    const limit = limitFor(q, transport);
    if (q.edns !== undefined && q.edns.version !== 0) {
      c.errors++;
      return buildResponse(q, { rcode: RCODE.BADVERS }, limit);
    }
    if (q.qclass !== CLASS_IN) {
      c.errors++;
      return buildResponse(q, { rcode: RCODE.REFUSED }, limit);
    }

    const caller = policy.caller(client);
    if (caller === undefined) {
      c.blocked++;
      this.emit(q, client, transport, undefined, "denied", "unknown_source", undefined, "REFUSED");
      return buildResponse(
        q,
        { rcode: RCODE.REFUSED, ede: { code: EDE_CODE.PROHIBITED, text: UNKNOWN_SOURCE_TEXT } },
        limit,
      );
    }
    if (!q.isPlainName || q.name === "") {
      c.blocked++;
      this.emit(q, client, transport, caller, "denied", "invalid_name", undefined, "NXDOMAIN");
      return buildResponse(
        q,
        { rcode: RCODE.NXDOMAIN, ede: { code: EDE_CODE.BLOCKED, text: blockedText(undefined) } },
        limit,
      );
    }
    const verdict = policy.decide(caller, q.name);
    if (!verdict.allowed) {
      c.blocked++;
      const rule = verdict.reason === "rule_deny" ? verdict.rule : undefined;
      this.emit(q, client, transport, caller, "denied", verdict.reason, rule, "NXDOMAIN");
      return buildResponse(
        q,
        { rcode: RCODE.NXDOMAIN, ede: { code: EDE_CODE.BLOCKED, text: blockedText(q.name) } },
        limit,
      );
    }
    if (q.qtype !== QTYPE.A) {
      // IPv4 only: AAAA (and every other type) of an allowed name is answered empty, never forwarded.
      c.answers++;
      this.emit(
        q,
        client,
        transport,
        caller,
        "allowed",
        "rule_allow",
        verdict.rule,
        "NOERROR",
        verdict.identity,
      );
      return buildResponse(q, { rcode: RCODE.NOERROR }, limit);
    }

    let entry = this.cache.get(AnswerCache.key(q.name, QTYPE.A), now);
    const cached = entry !== undefined;
    if (entry !== undefined) {
      c.cacheHits++;
    } else {
      c.cacheMisses++;
      const resolved = await this.resolve(q.name, policy);
      if (resolved.error !== undefined || resolved.rcode === "NXDOMAIN" || resolved.entry === undefined) {
        const rcode: RcodeName = resolved.error !== undefined ? "SERVFAIL" : resolved.rcode;
        if (resolved.error !== undefined) c.errors++;
        else c.answers++;
        this.emit(
          q,
          client,
          transport,
          caller,
          "allowed",
          "rule_allow",
          verdict.rule,
          rcode,
          verdict.identity,
          {
            error: resolved.error,
          },
        );
        return buildResponse(q, { rcode: RCODE[rcode] }, limit);
      }
      entry = resolved.entry;
    }

    const later = performance.now();
    const ttl = remainingSeconds(entry.expiresAt, later);
    const identity = verdict.identity;
    try {
      await this.record(entry.addresses.map((address) => ({ address, identity, ttl })));
    } catch (err) {
      c.errors++;
      c.cacheWriteFailures++;
      if (later - this.writeFailureLoggedAt >= 1_000) {
        this.writeFailureLoggedAt = later;
        this.log.warn(
          { err, name: q.name, event: "dns_cache_write_failed" },
          "recording answer addresses failed",
        );
      }
      this.emit(q, client, transport, caller, "allowed", "rule_allow", verdict.rule, "SERVFAIL", identity, {
        error: "cache_write_failed",
        cached,
      });
      return buildResponse(q, { rcode: RCODE.SERVFAIL }, limit);
    }
    c.answers++;
    this.emit(q, client, transport, caller, "allowed", "rule_allow", verdict.rule, "NOERROR", identity, {
      addresses: entry.addresses,
      cached,
    });
    const records = entry.numeric.map((address) => ({ address, ttl }));
    return buildResponse(q, { rcode: RCODE.NOERROR, answers: records }, limit);
  }

  /** Upstream A lookup for `name`, shared by concurrent queries for it, cached when positive. */
  private resolve(name: string, policy: CompiledPolicy): Promise<Resolved> {
    const key = AnswerCache.key(name, QTYPE.A);
    let running = this.inflight.get(key);
    if (running !== undefined) return running;
    const { upstreams, upstreamTimeoutMs, ttl } = policy.settings;
    running = this.resolver
      .resolveA(name, upstreams, upstreamTimeoutMs, this.abort.signal)
      .then(
        (answer): Resolved => {
          if (answer.rcode === "NXDOMAIN" || answer.addresses.length === 0) {
            return { rcode: answer.rcode, entry: undefined, error: undefined };
          }
          const clamped = Math.min(ttl.ceiling, Math.max(ttl.floor, answer.ttl));
          const numeric = answer.addresses.map(ipv4ToNumber);
          const entry = this.cache.set(key, answer.addresses, numeric, clamped, performance.now());
          return { rcode: "NOERROR", entry, error: undefined };
        },
        (err: unknown): Resolved => {
          const error: DnsAnswerError =
            err instanceof DnsGateError && err.reason === "upstream_timeout"
              ? "upstream_timeout"
              : "upstream_failed";
          this.log.debug({ err, name, event: "dns_upstream_failed" }, "upstream lookup failed");
          return { rcode: "NOERROR", entry: undefined, error };
        },
      )
      .finally(() => this.inflight.delete(key));
    this.inflight.set(key, running);
    return running;
  }

  /**
   * The writer's promise, bounded by writeTimeoutMs. Writes started in one event-loop turn share
   * one timer (a timer per query cost more than the rest of a cached answer).
   */
  private record(entries: { address: string; identity: number; ttl: number }[]): Promise<void> {
    let group = this.writeGroup;
    if (group === undefined) {
      const timeoutMs = this.options.writeTimeoutMs ?? 1_000;
      let expire!: (err: Error) => void;
      const expired = new Promise<never>((_, reject) => (expire = reject));
      const timer = setTimeout(
        () => expire(new DnsGateError("cache_write_failed", `recording addresses took over ${timeoutMs} ms`)),
        timeoutMs,
      );
      const fresh: WriteGroup = { pending: 0, timer, expired };
      group = fresh;
      this.writeGroup = fresh;
      setImmediate(() => {
        this.writeGroup = undefined;
        if (fresh.pending === 0) clearTimeout(fresh.timer);
      });
    }
    const g = group;
    g.pending++;
    return Promise.race([this.options.writer.write(entries), g.expired]).finally(() => {
      g.pending--;
      if (g.pending === 0 && this.writeGroup !== g) clearTimeout(g.timer);
    });
  }

  private emit(
    q: Query,
    client: string,
    transport: Transport,
    caller: DnsCaller | undefined,
    verdict: DnsDecision["verdict"],
    reason: DnsDecisionReason,
    rule: MatchedRule | undefined,
    rcode: RcodeName,
    identity?: number,
    extra: { addresses?: readonly string[]; cached?: boolean; error?: DnsAnswerError | undefined } = {},
  ): void {
    const decision: DnsDecision = {
      time: Date.now(),
      client,
      agent: caller?.agentScope,
      project: caller?.project,
      name: q.name,
      type: typeName(q.qtype),
      transport,
      verdict,
      reason,
      rule,
      identity,
      rcode,
      addresses: extra.addresses ?? [],
      cached: extra.cached ?? false,
      error: extra.error,
    };
    this.decisions.record(decision, performance.now());
    const sink = this.options.onDecision;
    if (sink === undefined) return;
    try {
      sink(decision);
    } catch (err) {
      this.log.error({ err, event: "dns_decision_sink_failed" }, "decision sink threw");
    }
  }
}

function limitFor(q: Query, transport: Transport): number {
  return transport === "udp" ? udpLimit(q) : 65_535;
}
