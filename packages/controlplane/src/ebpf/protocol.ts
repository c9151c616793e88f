// The manager's line-delimited JSON protocol: request and result types, and the same validation
// the manager applies (packages/ebpf-manager/src/server.c), so malformed input is rejected here
// before it is sent.
import { z } from "zod";

const octet = "(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)";
const ipv4Pattern = new RegExp(`^${octet}\\.${octet}\\.${octet}\\.${octet}$`);

/** Limits the manager enforces. */
export const LIMITS = { maxRoutes: 65_536, maxDnsBatch: 65_536, maxTtlSeconds: 604_800 } as const;

/** A dotted-quad IPv4 address as inet_pton(AF_INET) accepts it (no leading zeros). */
export const ipv4 = z.string().regex(ipv4Pattern, "must be a dotted IPv4 address");

const port = z.number().int().min(1).max(65_535);
const u32 = z.number().int().min(0).max(0xffff_ffff);

function ipToInt(ip: string): number {
  return ip.split(".").reduce((acc, o) => acc * 256 + Number(o), 0);
}

/** An IPv4 CIDR with a prefix of 1 to 32 and no host bits set. */
export const cidr4 = z.string().refine((s) => {
  const [addr, bits, ...rest] = s.split("/");
  if (rest.length > 0 || addr === undefined || bits === undefined || !ipv4Pattern.test(addr)) return false;
  if (!/^\d{1,2}$/.test(bits)) return false;
  const n = Number(bits);
  if (n < 1 || n > 32) return false;
  const hostBits = 32 - n;
  return ipToInt(addr) % 2 ** hostBits === 0;
}, "must be an IPv4 CIDR with a prefix of 1 to 32 and no host bits");

/** Per-container (or per-parent) enforcement config. */
export const containerConfigSchema = z.strictObject({
  /** Address of the proxy's listeners. */
  proxy: ipv4,
  /** Address of the DNS gate. */
  dns: ipv4,
  dnsPort: port.optional(),
  /** The agents' gateway: connections to it go to the catch-all listener (denied there). */
  gateway: ipv4.optional(),
  /** The agents' own subnet (passes unchanged). */
  subnet: cidr4.optional(),
  /** SO_MARK of the proxy's and DNS gate's own sockets (they pass). */
  mark: u32.optional(),
  /** The TCP catch-all listener. */
  catchallPort: port,
  /** The proxy's UDP port; without it routed UDP is denied. */
  udpPort: z.number().int().min(0).max(65_535).optional(),
});
/** Enforcement config for an enrolled cgroup. */
export type ContainerConfig = z.infer<typeof containerConfigSchema>;

/** A cgroup by path (absolute under the cgroup2 mount, or relative to it) or by id. */
export type CgroupTarget = { readonly cgroup: string } | { readonly cgroupId: string | number };

export const cgroupTargetSchema = z.union([
  z.strictObject({
    cgroup: z
      .string()
      .min(1)
      .refine((p) => !p.includes("..") && !p.includes("\n"), "bad path"),
  }),
  z.strictObject({
    cgroupId: z.union([
      z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
      z
        .string()
        .regex(/^\d{1,20}$/)
        .refine((s) => /^\d{1,20}$/.test(s) && BigInt(s) > 0n && BigInt(s) < 2n ** 64n, "out of range"),
    ]),
  }),
]);

/** One route: connections of `identity` to `port` go to the proxy's `listener`. */
export const routeSchema = z.strictObject({
  identity: z.number().int().min(1).max(0xffff_ffff),
  port,
  protocol: z.enum(["tcp", "udp"]),
  listener: port,
});
/** One route of the atomically replaced route table. */
export type Route = z.infer<typeof routeSchema>;

export const routesSchema = z
  .array(routeSchema)
  .max(LIMITS.maxRoutes)
  .refine((routes) => {
    const seen = new Set<string>();
    for (const r of routes) {
      const key = `${r.identity}/${r.port}/${r.protocol}`;
      if (seen.has(key)) return false;
      seen.add(key);
    }
    return true;
  }, "duplicate route (identity, port, protocol)");

/** One DNS answer address for a route identity; ttl 0 removes it. */
export const dnsEntrySchema = z.strictObject({
  address: ipv4.refine(
    (a) => a !== "0.0.0.0" && !a.startsWith("127."),
    "must not be unspecified or loopback",
  ),
  identity: z.number().int().min(1).max(0xffff_ffff),
  ttl: z.number().int().min(0).max(LIMITS.maxTtlSeconds),
});
/** One dns-update entry. */
export type DnsEntry = z.infer<typeof dnsEntrySchema>;

export const dnsEntriesSchema = z.array(dnsEntrySchema).max(LIMITS.maxDnsBatch);

/** status result. */
export interface Status {
  readonly version: string;
  readonly pinDir: string;
  readonly parentCgroupId: string;
  readonly parent: string;
  readonly proxyCgroupId: string;
}

/** enroll result: `attached` is true when the cgroup is outside the parent and got its own links. */
export interface EnrollResult {
  readonly cgroupId: string;
  readonly path: string;
  readonly attached: boolean;
}

/** gc result: how much was collected. */
export interface GcResult {
  readonly dnsExpired: number;
  readonly links: number;
  readonly containers: number;
  readonly bypass: number;
  readonly counters: number;
}

/** dump result. Paths are null for cgroups that no longer exist. */
export interface Dump {
  readonly containers: readonly { cgroupId: string; path: string | null; config: ContainerConfig }[];
  readonly routes: readonly Route[];
  readonly dns: readonly {
    address: string;
    identities: readonly { identity: number; expiresInMs: number }[];
  }[];
  readonly bypass: readonly { cgroupId: string; path: string | null }[];
  readonly counters: readonly {
    cgroupId: string;
    path: string | null;
    allowed: number;
    redirected: number;
    denied: number;
    dns: number;
    events: number;
    eventsDropped: number;
  }[];
  readonly links: readonly {
    cgroupId: string;
    program: string;
    linkId: number;
    programId: number;
    defunct: boolean;
  }[];
}

/** One decision from the events stream. */
export interface DecisionEvent {
  readonly tsNs: string;
  readonly cgroupId: string;
  readonly hook: "connect4" | "connect6" | "sendmsg4" | "sendmsg6" | "sock_create" | "unknown";
  readonly verdict: "allow" | "pass" | "bypass" | "dns" | "route" | "catchall" | "deny" | "unknown";
  readonly family: 4 | 6;
  readonly protocol: "tcp" | "udp" | "other";
  readonly address: string;
  readonly port: number;
  readonly newAddress: string;
  readonly newPort: number;
  readonly identity: number;
}
