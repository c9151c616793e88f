// Where the gate records answer addresses before replying: the eBPF manager's dns_cache (address
// -> route identity with an expiry). Writes of one event-loop turn go out as one `dns-update`.
import { LIMITS, type DnsEntry, type EbpfClient } from "../../ebpf/index.js";

/** Records answer addresses; the gate awaits it before every reply that carries addresses. */
export interface DnsCacheWriter {
  /** Records each address -> identity for `ttl` seconds; resolves once all of them are recorded. */
  write(entries: readonly DnsEntry[]): Promise<void>;
}

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

/**
 * The production writer: the eBPF manager's `dns-update`. Entries written in the same event-loop
 * turn (a burst of queries) share one request, deduplicated by (address, identity) with the
 * longest TTL; requests are pipelined on the client's connection, not waited for one by one.
 */
export class EbpfDnsCacheWriter implements DnsCacheWriter {
  private readonly client: Pick<EbpfClient, "dnsUpdate">;
  private pending = new Map<string, DnsEntry>();
  private waiters: Waiter[] = [];
  private scheduled = false;

  constructor(client: Pick<EbpfClient, "dnsUpdate">) {
    this.client = client;
  }

  write(entries: readonly DnsEntry[]): Promise<void> {
    if (entries.length === 0) return Promise.resolve();
    for (const e of entries) {
      const key = `${e.address}/${e.identity}`;
      const seen = this.pending.get(key);
      if (seen === undefined || seen.ttl < e.ttl) this.pending.set(key, e);
    }
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    if (!this.scheduled) {
      this.scheduled = true;
      // setImmediate runs after the poll phase, so every datagram read in this turn is batched.
      setImmediate(() => this.flush());
    }
    return done;
  }

  private flush(): void {
    this.scheduled = false;
    const entries = [...this.pending.values()];
    const waiters = this.waiters;
    this.pending = new Map();
    this.waiters = [];
    const batches: Promise<unknown>[] = [];
    for (let i = 0; i < entries.length; i += LIMITS.maxDnsBatch) {
      batches.push(this.client.dnsUpdate(entries.slice(i, i + LIMITS.maxDnsBatch)));
    }
    Promise.all(batches).then(
      () => waiters.forEach((w) => w.resolve()),
      (err: unknown) => waiters.forEach((w) => w.reject(err)),
    );
  }
}

/**
 * The writer when no eBPF manager is configured: records nothing, so answers are sent without a
 * `dns_cache` entry (nothing in the kernel steers by them then either). The process logs that once.
 */
export class UnrecordedDnsCacheWriter implements DnsCacheWriter {
  write(): Promise<void> {
    return Promise.resolve();
  }
}
