// Forwarding allowed A queries to the configured upstream resolvers: UDP from a fresh socket (a
// random source port and id per query, RFC 5452), the same query over TCP when the answer comes
// back truncated, the next upstream on a timeout or a server failure. The answer is reduced to
// the addresses of the queried name (CNAME chains followed, everything else dropped).
import { randomBytes } from "node:crypto";
import { createSocket } from "node:dgram";
import { connect } from "node:net";
import { decode, encode, RECURSION_DESIRED, type Answer, type StringAnswer } from "dns-packet";
import type { Logger } from "pino";
import { GATE_UDP_PAYLOAD, RCODE } from "./dns-message.js";
import { DnsGateError } from "./errors.js";
import type { DnsUpstream } from "./policy.js";

/** At most this many addresses are kept from one answer (bounds answers and map writes). */
export const MAX_ANSWER_ADDRESSES = 32;
/** At most this many CNAMEs are followed from the queried name. */
export const MAX_CNAME_CHAIN = 8;

/** What an upstream said about a name's A records. */
export interface UpstreamAnswer {
  readonly rcode: "NOERROR" | "NXDOMAIN";
  /** Unique addresses of the queried name, in the upstream's order; empty for NXDOMAIN or no data. */
  readonly addresses: readonly string[];
  /** The smallest TTL of the records used (A and CNAME), seconds; 0 when there are none. */
  readonly ttl: number;
  /** `address:port` of the upstream that answered. */
  readonly upstream: string;
}

/** Options of an UpstreamResolver. */
export interface UpstreamResolverOptions {
  readonly log?: Logger;
}

/** Sends A queries to upstream resolvers and interprets their answers. */
export class UpstreamResolver {
  private readonly log: Logger | undefined;
  /** Queries sent upstream (UDP and TCP attempts), for the gate's stats. */
  queries = 0;

  constructor(options: UpstreamResolverOptions = {}) {
    this.log = options.log;
  }

  /**
   * Asks each upstream in order (each attempt bounded by `timeoutMs`) until one answers NOERROR or
   * NXDOMAIN. Rejects with `upstream_timeout` when every attempt timed out, `upstream_failed`
   * when an upstream answered otherwise (SERVFAIL, REFUSED, a malformed answer), `closed` on abort.
   */
  async resolveA(
    name: string,
    upstreams: readonly DnsUpstream[],
    timeoutMs: number,
    signal: AbortSignal,
  ): Promise<UpstreamAnswer> {
    let sawFailure = false;
    for (const upstream of upstreams) {
      if (signal.aborted) throw new DnsGateError("closed", "the DNS gate is closing");
      const where = `${upstream.address}:${upstream.port}`;
      try {
        const id = randomBytes(2).readUInt16BE(0);
        const query = encodeQuery(id, name);
        this.queries++;
        let reply = await udpExchange(query, id, upstream, timeoutMs, signal);
        if ((reply.readUInt16BE(2) & 0x0200) !== 0) {
          // Truncated: the full answer only fits over TCP (RFC 7766 §5).
          this.queries++;
          reply = await tcpExchange(query, id, upstream, timeoutMs, signal);
        }
        const answer = interpret(reply, id, name, where);
        if (answer !== undefined) return answer;
        sawFailure = true;
        this.log?.debug({ upstream: where, name, event: "upstream_refused" }, "upstream did not answer");
      } catch (err) {
        if (signal.aborted) throw new DnsGateError("closed", "the DNS gate is closing", { cause: err });
        if (!(err instanceof DnsGateError && err.reason === "upstream_timeout")) sawFailure = true;
        this.log?.debug(
          { err, upstream: where, name, event: "upstream_attempt_failed" },
          "upstream attempt failed",
        );
      }
    }
    throw sawFailure
      ? new DnsGateError("upstream_failed", `no upstream answered ${name}`)
      : new DnsGateError("upstream_timeout", `no upstream answered ${name} in time`);
  }
}

function encodeQuery(id: number, name: string): Buffer {
  return encode({
    type: "query",
    id,
    flags: RECURSION_DESIRED,
    questions: [{ type: "A", class: "IN", name }],
    additionals: [
      {
        type: "OPT",
        name: ".",
        udpPayloadSize: GATE_UDP_PAYLOAD,
        extendedRcode: 0,
        ednsVersion: 0,
        flags: 0,
        flag_do: false,
        options: [],
      },
    ],
  });
}

/**
 * The answer for `name`, or undefined when the upstream failed (SERVFAIL, REFUSED, a malformed or
 * mismatched answer): then the next upstream is asked.
 */
function interpret(reply: Buffer, id: number, name: string, upstream: string): UpstreamAnswer | undefined {
  let decoded;
  try {
    decoded = decode(reply);
  } catch {
    return undefined;
  }
  const question = decoded.questions?.[0];
  if (
    decoded.id !== id ||
    decoded.type !== "response" ||
    decoded.questions?.length !== 1 ||
    question === undefined ||
    question.type !== "A" ||
    question.name.toLowerCase() !== name
  ) {
    return undefined;
  }
  const rcode = reply.readUInt16BE(2) & 0xf;
  if (rcode === RCODE.NXDOMAIN) return { rcode: "NXDOMAIN", addresses: [], ttl: 0, upstream };
  if (rcode !== RCODE.NOERROR) return undefined;
  const { addresses, ttl } = followChain(name, decoded.answers ?? []);
  return { rcode: "NOERROR", addresses, ttl, upstream };
}

/**
 * The A addresses of `name`, following CNAMEs from it (at most MAX_CNAME_CHAIN): records not on
 * that path are ignored, and so are addresses the eBPF manager refuses to record (0.0.0.0 and
 * 127/8), because the gate never answers an address the map does not hold.
 */
export function followChain(name: string, answers: readonly Answer[]): { addresses: string[]; ttl: number } {
  let owner = name;
  let ttl = Number.POSITIVE_INFINITY;
  for (let step = 0; step <= MAX_CNAME_CHAIN; step++) {
    const found: string[] = [];
    let cname: StringAnswer | undefined;
    for (const r of answers) {
      if (r.type !== "A" && r.type !== "CNAME") continue;
      if (r.name.toLowerCase() !== owner || (r.class !== undefined && r.class !== "IN")) continue;
      if (r.type === "A") {
        ttl = Math.min(ttl, r.ttl ?? 0);
        if (!found.includes(r.data) && isRecordable(r.data)) found.push(r.data);
      } else {
        cname ??= r;
      }
    }
    if (found.length > 0) return { addresses: found.slice(0, MAX_ANSWER_ADDRESSES), ttl };
    if (cname === undefined) break;
    ttl = Math.min(ttl, cname.ttl ?? 0);
    owner = cname.data.toLowerCase();
  }
  return { addresses: [], ttl: 0 };
}

function isRecordable(address: string): boolean {
  return address !== "0.0.0.0" && !address.startsWith("127.");
}

function timeoutError(upstream: DnsUpstream, how: string): DnsGateError {
  return new DnsGateError(
    "upstream_timeout",
    `${upstream.address}:${upstream.port} (${how}) did not answer in time`,
  );
}

function udpExchange(
  query: Buffer,
  id: number,
  upstream: DnsUpstream,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = createSocket("udp4");
    let settled = false;
    const finish = (err: Error | undefined, reply?: Buffer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
      sock.close();
      if (err !== undefined) reject(err);
      else resolve(reply!);
    };
    const onAbort = (): void => finish(new DnsGateError("closed", "the DNS gate is closing"));
    const timer = setTimeout(() => finish(timeoutError(upstream, "udp")), timeoutMs);
    signal.addEventListener("abort", onAbort, { once: true });
    sock.on("error", (err) => finish(err));
    // A connected socket only receives datagrams from the upstream's address and port.
    sock.on("message", (msg) => {
      // Not ours (a late answer to nothing we asked): keep waiting for the real one.
      if (msg.length >= 12 && msg.readUInt16BE(0) === id) finish(undefined, msg);
    });
    sock.connect(upstream.port, upstream.address, () => {
      sock.send(query, (err) => {
        if (err) finish(err);
      });
    });
  });
}

function tcpExchange(
  query: Buffer,
  id: number,
  upstream: DnsUpstream,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: upstream.address, port: upstream.port });
    let settled = false;
    let buffered = Buffer.alloc(0);
    const finish = (err: Error | undefined, reply?: Buffer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
      sock.destroy();
      if (err !== undefined) reject(err);
      else resolve(reply!);
    };
    const onAbort = (): void => finish(new DnsGateError("closed", "the DNS gate is closing"));
    const timer = setTimeout(() => finish(timeoutError(upstream, "tcp")), timeoutMs);
    signal.addEventListener("abort", onAbort, { once: true });
    sock.on("error", (err) => finish(err));
    sock.on("close", () => finish(new DnsGateError("upstream_failed", "upstream closed the TCP connection")));
    sock.on("data", (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2) {
        const len = buffered.readUInt16BE(0);
        if (buffered.length < 2 + len) return;
        const msg = buffered.subarray(2, 2 + len);
        buffered = buffered.subarray(2 + len);
        if (msg.length >= 12 && msg.readUInt16BE(0) === id) return finish(undefined, msg);
      }
    });
    const framed = Buffer.allocUnsafe(2 + query.length);
    framed.writeUInt16BE(query.length, 0);
    query.copy(framed, 2);
    sock.write(framed);
  });
}
