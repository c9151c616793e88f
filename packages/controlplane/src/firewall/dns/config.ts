// The DNS gate process's configuration: one zod schema, read from the JSON file the daemon writes,
// parsed once and frozen. Every problem is listed in one error before anything binds.
import { readFileSync } from "node:fs";
import * as z from "zod";
import { ipv4 } from "../../ebpf/protocol.js";
import { InvalidConfigError } from "./errors.js";

/** The schema of the gate process's config file. */
export const DnsGateConfigSchema = z.strictObject({
  listen: z.strictObject({
    // The agents' network only: 0.0.0.0 would answer on every interface of the host.
    address: ipv4.refine((a) => a !== "0.0.0.0", "must be one address (on the agents' network), not 0.0.0.0"),
    /** UDP and TCP; 0 picks a free port (tests), reported in the ready event. */
    port: z.number().int().min(0).max(65_535).default(53),
  }),
  /**
   * The eBPF manager's control socket: every answer's addresses are recorded there first. Absent:
   * nothing is recorded (no manager runs), which the process logs once at start.
   */
  ebpfSocket: z.string().min(1).optional(),
  /** Per-request timeout of the manager connection. */
  ebpfTimeoutMs: z.number().int().min(100).max(60_000).default(2_000),
  /** Budget for recording one answer's addresses; past it the query gets SERVFAIL. */
  writeTimeoutMs: z.number().int().min(50).max(30_000).default(1_000),
  cacheMaxEntries: z.number().int().min(1).max(1_000_000).default(10_000),
  maxTcpConnections: z.number().int().min(1).max(65_536).default(256),
  tcpIdleMs: z.number().int().min(100).max(600_000).default(10_000),
  udpReceiveBufferBytes: z.number().int().min(65_536).max(268_435_456).optional(),
  /** Decisions waiting on the control channel past this many bytes are dropped (and counted). */
  decisionBufferBytes: z
    .number()
    .int()
    .min(65_536)
    .max(1 << 30)
    .default(8 << 20),
  logLevel: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
});

/** The gate process's parsed, frozen configuration. */
export type DnsGateConfig = Readonly<z.infer<typeof DnsGateConfigSchema>>;

/** Parses a config object; throws InvalidConfigError listing every problem. */
export function parseDnsGateConfig(input: unknown): DnsGateConfig {
  const parsed = DnsGateConfigSchema.safeParse(input);
  if (!parsed.success) {
    throw new InvalidConfigError(
      parsed.error.issues.map((i) => ({ path: i.path.map(String).join("."), message: i.message })),
    );
  }
  return Object.freeze(parsed.data);
}

/** Reads and parses the JSON config file; throws InvalidConfigError. */
export function loadDnsGateConfig(path: string): DnsGateConfig {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new InvalidConfigError([{ path: "", message: `cannot read ${path}: ${(err as Error).message}` }]);
  }
  let input: unknown;
  try {
    input = JSON.parse(text);
  } catch (err) {
    throw new InvalidConfigError([{ path: "", message: `${path} is not JSON: ${(err as Error).message}` }]);
  }
  return parseDnsGateConfig(input);
}
