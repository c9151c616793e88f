// The proxy's static configuration: what is rendered into the base config and cannot change
// without a restart (listeners, resolvers, CA bundle, limits). Rules are not here: see policy.ts.
import { isAbsolute } from "node:path";
import * as z from "zod";
import { ProxyError } from "./errors.js";
import { isCidr4, isIpv4 } from "./policy.js";

const port = z.number().int().min(1).max(65_535);
const ipv4 = z.string().refine(isIpv4, "must be a dotted IPv4 address");
const ms = (min: number, max: number, dflt: number) => z.number().int().min(min).max(max).default(dflt);
// Paths are rendered into haproxy.cfg unquoted: no whitespace, quotes, `#` or backslashes.
const cfgPath = z
  .string()
  .refine(isAbsolute, "must be an absolute path")
  .refine((p) => !/[\s"'#\\]/.test(p), "must not hold whitespace, quotes, # or backslashes");

/** Schema of ProxyConfig; defaults filled in by parseProxyConfig. */
export const proxyConfigSchema = z
  .strictObject({
    /** The proxy's own directory (created 0700); the daemon passes `<data dir>/proxy`. */
    dir: cfgPath,
    /** The HAProxy binary. */
    haproxy: z.string().min(1).default("haproxy"),
    /** iproute2's `ss`: destroys the sessions of revoked rules (socket-sweeper.ts). */
    ss: z.string().min(1).default("ss"),
    listen: z.strictObject({
      /** Every listener binds this address only (the agents' gateway), never 0.0.0.0. */
      address: ipv4.refine((a) => a !== "0.0.0.0", "must be a specific address"),
      /** The TLS catch-all (SNI) listener. */
      tlsPort: port,
      /** The plain HTTP (Host) listener. */
      httpPort: port,
      /** Route listeners for opaque TCP: `count` consecutive ports from `first`. */
      routePorts: z
        .strictObject({ first: port, count: z.number().int().min(0).max(1024) })
        .default({ first: 1, count: 0 }),
    }),
    /** Source networks allowed to connect (the agents' network). */
    clients: z.array(z.string().refine(isCidr4, "must be an IPv4 CIDR")).min(1).max(64),
    /** Upstream DNS servers names are resolved with. */
    resolvers: z
      .array(z.strictObject({ address: ipv4, port: port.default(53) }))
      .min(1)
      .max(4),
    /** CA bundle that intercepted connections verify upstreams against. */
    upstreamCaFile: cfgPath.default("/etc/ssl/certs/ca-certificates.crt"),
    /**
     * HAProxy worker threads. Two by default: one caps interception at one core (quiet, 2-core
     * bench: interception / direct 0.268-0.285 with one, 0.301-0.308 with two, proxy README),
     * for ~13% more proxy CPU per passthrough request. Each thread has its own interception hop
     * socket, so an intercepted request's connections stay on the thread that accepted the agent
     * (haproxy-config.ts, be_mitm). One suits a host whose agents only pass through.
     */
    threads: z.number().int().min(1).max(64).default(2),
    /** HAProxy needs about two file descriptors per connection: keep 2x this under RLIMIT_NOFILE. */
    maxConnections: z.number().int().min(16).max(1_000_000).default(4_096),
    timeouts: z
      .strictObject({
        connectMs: ms(100, 60_000, 5_000),
        /** How long a client may take to send its ClientHello. */
        clientHelloMs: ms(100, 60_000, 5_000),
        /** Idle timeout of connections and tunnels. */
        idleMs: ms(1_000, 86_400_000, 3_600_000),
        httpRequestMs: ms(100, 300_000, 10_000),
      })
      .default({ connectMs: 5_000, clientHelloMs: 5_000, idleMs: 3_600_000, httpRequestMs: 10_000 }),
    /** Allowing rules at most (each holds a session tag; its entries cost map memory only). */
    maxRules: z.number().int().min(1).max(100_000).default(10_000),
    /** Budget for HAProxy to answer on its runtime socket after spawn. */
    startTimeoutMs: ms(100, 120_000, 10_000),
    /** Per runtime API command. */
    runtimeTimeoutMs: ms(100, 120_000, 5_000),
  })
  .superRefine((c, ctx) => {
    const ports = [c.listen.tlsPort, c.listen.httpPort];
    for (let i = 0; i < c.listen.routePorts.count; i++) ports.push(c.listen.routePorts.first + i);
    if (c.listen.routePorts.first + c.listen.routePorts.count - 1 > 65_535) {
      ctx.addIssue({ code: "custom", path: ["listen", "routePorts"], message: "ports beyond 65535" });
    }
    if (new Set(ports).size !== ports.length) {
      ctx.addIssue({ code: "custom", path: ["listen"], message: "listener ports overlap" });
    }
  });

/** The proxy's static configuration (input form: defaults may be omitted). */
export type ProxyConfigInput = z.input<typeof proxyConfigSchema>;
/** The proxy's static configuration with every default filled in. */
export type ProxyConfig = z.output<typeof proxyConfigSchema>;

/** Validates a config, listing every problem in one ProxyError("invalid_config"). */
export function parseProxyConfig(input: ProxyConfigInput): ProxyConfig {
  const parsed = proxyConfigSchema.safeParse(input);
  if (parsed.success) return parsed.data;
  const problems = parsed.error.issues.map(
    (i) => `${i.path.map(String).join(".") || "config"}: ${i.message}`,
  );
  throw new ProxyError("invalid_config", `invalid proxy config: ${problems.join("; ")}`);
}

/** The route listener ports of a config. */
export function routePortsOf(config: ProxyConfig): number[] {
  return Array.from({ length: config.listen.routePorts.count }, (_, i) => config.listen.routePorts.first + i);
}
