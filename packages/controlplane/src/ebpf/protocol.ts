// The manager's line-delimited JSON protocol: request and result types, and the same validation
// the manager applies (packages/ebpf-manager/src/server.c), so malformed input is rejected here
// before it is sent.
import * as z from "zod";

const octet = "(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)";
const ipv4Pattern = new RegExp(`^${octet}\\.${octet}\\.${octet}\\.${octet}$`);

/** Limits the manager enforces. */
export const LIMITS = {
  maxRoutes: 65_536,
  maxDnsBatch: 65_536,
  maxTtlSeconds: 604_800,
  maxBypassSeconds: 86_400,
  maxGatewayPorts: 64,
} as const;

/** How long a timed bypass lasts before the kernel ends it (the manager's `seconds`). */
export const bypassSecondsSchema = z.number().int().min(1).max(LIMITS.maxBypassSeconds);

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

/** One route of the atomically replaced route table: `identity`'s connections to `port` go to `listener`. */
export interface Route {
  readonly identity: number;
  readonly port: number;
  readonly protocol: "tcp" | "udp";
  readonly listener: number;
}

/** An invalid element of a batch: where and why. */
export interface BatchIssue {
  readonly path: string;
  readonly message: string;
}

function isInt(v: unknown, min: number, max: number): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= min && v <= max;
}

function hasOnly(o: object, keys: readonly string[]): string | undefined {
  for (const k of Object.keys(o)) if (!keys.includes(k)) return k;
  return undefined;
}

const routeKeys = ["identity", "port", "protocol", "listener"] as const;

/**
 * Checks a route table by hand (zod costs 10-100 ms for 10,000 routes on a loaded machine, more
 * than the whole sync): the same rules as routeSchema, no duplicate (identity, port, protocol).
 */
export function checkRoutes(routes: readonly unknown[]): BatchIssue | undefined {
  if (!Array.isArray(routes)) return { path: "routes", message: "must be an array" };
  if (routes.length > LIMITS.maxRoutes)
    return { path: "routes", message: `at most ${LIMITS.maxRoutes} routes` };
  const seen = new Set<number>();
  for (let i = 0; i < routes.length; i++) {
    const r = routes[i] as Record<string, unknown> | null;
    const at = `routes.${i}`;
    if (typeof r !== "object" || r === null) return { path: at, message: "must be an object" };
    const extra = hasOnly(r, routeKeys);
    if (extra !== undefined) return { path: at, message: `unknown field ${extra}` };
    if (!isInt(r["identity"], 1, 0xffff_ffff))
      return { path: `${at}.identity`, message: "must be 1..4294967295" };
    if (!isInt(r["port"], 1, 65_535)) return { path: `${at}.port`, message: "must be 1..65535" };
    if (!isInt(r["listener"], 1, 65_535)) return { path: `${at}.listener`, message: "must be 1..65535" };
    if (r["protocol"] !== "tcp" && r["protocol"] !== "udp")
      return { path: `${at}.protocol`, message: 'must be "tcp" or "udp"' };
    // identity < 2^32, port < 2^16, protocol 1 bit: exact in a double
    const key = (r["identity"] * 65_536 + r["port"]) * 2 + (r["protocol"] === "udp" ? 1 : 0);
    if (seen.has(key)) return { path: at, message: "duplicate route (identity, port, protocol)" };
    seen.add(key);
  }
  return undefined;
}

/** One dns-update entry: an answer address of a route identity for `ttl` seconds (0 removes it). */
export interface DnsEntry {
  readonly address: string;
  readonly identity: number;
  readonly ttl: number;
}

const dnsKeys = ["address", "identity", "ttl"] as const;

/** Checks a dns-update batch by hand, with dnsEntrySchema's rules (see checkRoutes for why). */
export function checkDnsEntries(entries: readonly unknown[]): BatchIssue | undefined {
  if (!Array.isArray(entries)) return { path: "entries", message: "must be an array" };
  if (entries.length > LIMITS.maxDnsBatch)
    return { path: "entries", message: `at most ${LIMITS.maxDnsBatch} entries` };
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i] as Record<string, unknown> | null;
    const at = `entries.${i}`;
    if (typeof e !== "object" || e === null) return { path: at, message: "must be an object" };
    const extra = hasOnly(e, dnsKeys);
    if (extra !== undefined) return { path: at, message: `unknown field ${extra}` };
    const address = e["address"];
    if (typeof address !== "string" || !ipv4Pattern.test(address))
      return { path: `${at}.address`, message: "must be a dotted IPv4 address" };
    if (address === "0.0.0.0" || address.startsWith("127."))
      return { path: `${at}.address`, message: "must not be unspecified or loopback" };
    if (!isInt(e["identity"], 1, 0xffff_ffff))
      return { path: `${at}.identity`, message: "must be 1..4294967295" };
    if (!isInt(e["ttl"], 0, LIMITS.maxTtlSeconds))
      return { path: `${at}.ttl`, message: `must be 0..${LIMITS.maxTtlSeconds}` };
  }
  return undefined;
}

/** A port of the agents' gateway that passes (the control plane's agent-facing listeners). */
export interface GatewayPort {
  readonly address: string;
  readonly port: number;
  readonly protocol: "tcp" | "udp";
}

/** The gateway-ports set: no loopback or unspecified address, no duplicate, at most LIMITS.maxGatewayPorts. */
export const gatewayPortsSchema = z
  .array(
    z.strictObject({
      address: ipv4.refine(
        (a) => a !== "0.0.0.0" && !a.startsWith("127."),
        "must not be unspecified or loopback",
      ),
      port,
      protocol: z.enum(["tcp", "udp"]),
    }),
  )
  .max(LIMITS.maxGatewayPorts)
  .refine(
    (ports) => new Set(ports.map((p) => `${p.address}:${p.port}/${p.protocol}`)).size === ports.length,
    "duplicate gateway port (address, port, protocol)",
  );

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
  /** `expiresInMs`: null for a bypass without end (a disable), 0 once the kernel ignores it. */
  readonly bypass: readonly { cgroupId: string; path: string | null; expiresInMs: number | null }[];
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
  /** The gateway's exempt ports (gateway-ports). */
  readonly gatewayPorts: readonly GatewayPort[];
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
