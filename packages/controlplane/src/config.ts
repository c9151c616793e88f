// The daemon's configuration: one zod schema, read from a file plus environment overrides, parsed
// once and frozen. Every problem is listed in one error before anything binds.
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { extname, join } from "node:path";
import { parse as parseYaml } from "yaml";
import * as z from "zod";
import { isCidr4, isIpv4, isIpv4OrCidr } from "./firewall/proxy/policy.js";

const port = z.number().int().min(0).max(65535);
const host = z.string().min(1);

/** A setting that no longer exists: present in a config file, it is an error that says why. */
const removed = (why: string) => z.never({ error: why }).optional();
// The auth helpers' admin APIs (client registration, introspection) have no authentication, and
// loopback TCP is reachable by every local user: they listen only on Unix sockets in the data dir.
const adminOnSocket = removed(
  "the auth admin API listens only on a Unix socket in the data dir now (loopback TCP is open to every local user); remove this setting",
);

/** A listener address. Port 0 picks a free port (tests). */
const endpoint = (defaultPort: number) =>
  z.strictObject({ host: host.default("127.0.0.1"), port: port.default(defaultPort) }).prefault({});

/** Most bytes of a Unix socket path (sun_path is 108 bytes with its terminating NUL). */
export const MAX_SOCKET_PATH_BYTES = 107;

/** The group whose members may connect to the admin socket unless configured otherwise. */
export const DEFAULT_ADMIN_GROUP = "clawker-admins";

/**
 * AdminService on a Unix socket (group-socket.ts). The kernel's permission check is its boundary:
 * the directory is ours and the group's (0750), the socket 0660; tokens still decide every call.
 */
const adminSocket = z.strictObject({
  enabled: z.boolean().default(true),
  /** Default `<dataDir>/run/admin.sock` (adminSocketPath); a system daemon sets `/run/clawker/admin.sock`. */
  path: z
    .string()
    .min(1)
    .refine((p) => Buffer.byteLength(p) <= MAX_SOCKET_PATH_BYTES, {
      message: `a Unix socket path holds at most ${MAX_SOCKET_PATH_BYTES} bytes`,
    })
    .optional(),
  /**
   * Who may connect besides our uid: a group name, or a gid (a container that has no such name
   * but got the gid through --group-add). A name that does not exist fails closed (socket 0600).
   */
  group: z.union([z.string().min(1), z.number().int().min(0)]).default(DEFAULT_ADMIN_GROUP),
});

/** Timeouts and per-connection limits of the listeners; the connection caps come from RLIMIT_NOFILE. */
const listenerLimits = z.strictObject({
  /** gRPC listeners: a connection whose TLS handshake is not done after this is closed; /healthz: its idle bound. */
  handshakeTimeoutMs: z.number().int().positive().default(5_000),
  /** gRPC: a call's request must arrive within this; /healthz: a whole request. */
  requestTimeoutMs: z.number().int().positive().default(10_000),
  /** gRPC: a connection with no call open (or that never sends the HTTP/2 preface) is closed after this. */
  idleTimeoutMs: z.number().int().positive().default(30_000),
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS on every gRPC connection. */
  maxStreamsPerConnection: z.number().int().min(1).max(10_000).default(100),
  /** Connections one agent certificate may hold on the agent listener. */
  maxConnectionsPerAgent: z.number().int().min(1).default(8),
  /** Token introspections (tokens not in the cache) one connection may cause per second... */
  introspectionsPerSecond: z.number().positive().default(10),
  /** ...and saved up; beyond them a call is refused UNAUTHENTICATED without introspection. */
  introspectionBurst: z.number().int().min(1).default(20),
  /** Refusals one connection gets at full speed per second (twice as many saved up)... */
  refusalsPerSecond: z.number().positive().default(20),
  /** ...beyond which each of its refusals is answered only after this. */
  tarpitMs: z.number().int().min(0).max(60_000).default(1_000),
});

const oryBinaries = z.strictObject({
  hydra: z.string().min(1).default("hydra"),
  kratos: z.string().min(1).default("kratos"),
  oathkeeper: z.string().min(1).default("oathkeeper"),
  /** `memory` or a `postgres://` DSN for Hydra and Kratos. */
  dsn: z
    .string()
    .refine((s) => s === "memory" || /^postgres(ql)?:\/\//.test(s), "must be 'memory' or a postgres:// DSN")
    .default("memory"),
  /** Folder with the upstream JSON Schemas used to validate generated configs. */
  schemaDir: z.string().min(1).optional(),
  kratosPublicPort: port.default(4433),
  kratosAdminPort: adminOnSocket,
  oathkeeperApiPort: port.default(4456),
  oathkeeperProxyPort: port.default(4457),
});

/**
 * The eBPF enforcement of agent egress (ebpf/README.md): the manager the daemon supervises, and
 * the cgroup parent agents are started under (`clawker run` passes it as `--cgroup-parent`).
 */
const ebpfConfig = z.strictObject({
  /**
   * Start the manager at start-up step 5; off, agents' egress is not enforced by the kernel (and
   * the firewall refuses to come up). `auto`: on when running as root with cgroup2 and bpffs
   * mounted and the manager present, else off with the reason logged (`ebpf_decision`). The
   * strings "true"/"false" (CLAWKER_CP_EBPF) read as the booleans.
   */
  enabled: z
    .union([z.boolean(), z.literal("auto"), z.enum(["true", "false"]).transform((v) => v === "true")])
    .default("auto"),
  /** The manager binary: a path or a name on PATH (the image ships /usr/local/bin/ebpf-manager). */
  manager: z.string().min(1).default("ebpf-manager"),
  /** Its control socket; default `ebpf.sock` in the data dir. */
  socket: z.string().min(1).optional(),
  /** Pin directory; default `<bpffs mount>/clawker`. */
  pinDir: z.string().min(1).optional(),
  /** The agents' cgroup parent: `/clawker` for Docker's cgroupfs driver, `clawker.slice` for systemd. */
  cgroupParent: z
    .string()
    .regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/, "a cgroup name: letters, digits, '_', '-', '.'")
    .default("clawker"),
  /** Docker's cgroup driver; `auto` asks Docker at start-up. */
  cgroupDriver: z.enum(["auto", "cgroupfs", "systemd"]).default("auto"),
  /** The egress proxy's cgroup (SO_ORIGINAL_DST is answered there); default the daemon's own. */
  proxyCgroup: z.string().min(1).optional(),
  /** SO_MARK of the firewall's own sockets when they run under the parent (they pass); 0: none. */
  mark: z.number().int().min(0).max(0xffff_ffff).default(0),
  /** How long start-up waits (SOS raised) for bpffs and cgroup2 before it fails. */
  mountTimeoutMs: z.number().int().min(0).default(30_000),
});

const ipv4 = z.string().refine(isIpv4, "must be a dotted IPv4 address");
const servicePort = z.number().int().min(1).max(65535);

/**
 * The egress firewall (firewall/README.md). Addresses the proxy and the DNS gate bind default to
 * the agents' Docker network's gateway, and `clients` to its subnet, when the firewall comes up.
 */
const firewallConfig = z.strictObject({
  /** Bring the firewall up at every start; FirewallInit also does, and that choice persists. */
  enabled: z.boolean().default(false),
  /**
   * Let the stack come up without the eBPF enforcement (`ebpf.enabled: false`). Off by default:
   * a proxy nothing steers agents to enforces nothing, so bring-up fails (`not_enforced`)
   * instead. Only for tests of the proxy alone; logged as an error at every bring-up.
   */
  allowUnenforced: z.boolean().default(false),
  /** The firewall's own folder (proxy files, interception CA, state); relative to `dataDir`. */
  dir: z.string().min(1).default("firewall"),
  /** Rules always present for every agent (YAML/JSON, wire field names); see firewall/README.md. */
  floorFile: z.string().min(1).optional(),
  /** The Docker network agents run on: its id, subnet and gateway fill FirewallStatus and defaults. */
  network: z.string().min(1).default("clawker-agents"),
  /** Source networks of agents (IPv4 CIDRs); default: the network's subnet. */
  clients: z.array(z.string().refine(isCidr4, "must be an IPv4 CIDR")).min(1).max(64).optional(),
  proxy: z
    .strictObject({
      /** Where every proxy listener binds (never 0.0.0.0); default: the network's gateway. */
      address: ipv4.refine((a) => a !== "0.0.0.0", "must be a specific address").optional(),
      tlsPort: servicePort.default(15443),
      httpPort: servicePort.default(15080),
      /** Route listeners for opaque TCP: one per destination. */
      routePorts: z
        .strictObject({
          first: servicePort.default(16000),
          count: z.number().int().min(0).max(1024).default(64),
        })
        .prefault({}),
      haproxy: z.string().min(1).default("haproxy"),
      /** CA bundle intercepted connections verify upstreams against. */
      upstreamCaFile: z.string().min(1).optional(),
      /** Allowing rules at most (each holds one of the proxy's session tags). */
      maxRules: z.number().int().min(1).max(100_000).default(10_000),
    })
    .prefault({}),
  /** The DNS gate: where it listens (default address: the proxy's). */
  dns: z
    .strictObject({
      address: ipv4.optional(),
      port: servicePort.default(53),
      /**
       * The eBPF manager's control socket the gate records answers in; default the manager's
       * (`ebpf.socket`) when `ebpf.enabled`, else none: answers are not recorded.
       */
      ebpfSocket: z.string().min(1).optional(),
    })
    .prefault({}),
  /**
   * Upstream resolvers the DNS gate, the proxy and FirewallResolveHostname ask; default: the
   * host's /etc/resolv.conf nameservers that are not loopback (none: the firewall does not start).
   */
  resolvers: z
    .array(z.strictObject({ address: ipv4, port: servicePort.default(53) }))
    .min(1)
    .max(4)
    .optional(),
  /**
   * Addresses the proxy never connects to, after resolution. The firewall adds the proxy's and
   * DNS gate's addresses, the agents' networks and this host's own addresses to the list.
   */
  forbidden: z
    .array(z.string().refine(isIpv4OrCidr, "must be an IPv4 address or CIDR"))
    .max(4096)
    .default(["0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "240.0.0.0/4"]),
  /** The decision stream (firewall/events/README.md): ring, per-source rate limits, watchers. */
  events: z
    .strictObject({
      /** Events kept in memory for WatchFirewallEvents' backfill. */
      ringSize: z.number().int().min(1).max(1_000_000).default(10_000),
      /** Events per second each source (dns, bpf, proxy) may publish; beyond it they are counted and dropped. */
      perSourcePerSecond: z.number().int().min(1).max(10_000_000).default(20_000),
      /** Events queued per watcher beyond gRPC's buffer before it is sent a gap. */
      watchQueue: z.number().int().min(1).max(1_000_000).default(4096),
    })
    .prefault({}),
});

/**
 * The firewall's audit log (firewall/audit/README.md): JSON lines in `dir` (relative to
 * `dataDir`), rotated at `maxFileBytes`, at most `maxFiles` kept.
 */
const auditConfig = z.strictObject({
  dir: z.string().min(1).default("audit"),
  /** The current file is closed and the next started before it would pass this size. */
  maxFileBytes: z
    .number()
    .int()
    .min(64 * 1024, "must be at least 65536 (64 KiB): a record can be a few KiB")
    .max(2 ** 40, "must be at most 1099511627776 (1 TiB)")
    .default(64 * 1024 * 1024),
  /** Files kept, the current one included; the oldest beyond go. */
  maxFiles: z
    .number()
    .int()
    .min(2, "must be at least 2 (the current file and one before it)")
    .max(10_000)
    .default(8),
  /** Records waiting to be written at most; decisions beyond are dropped, counted and reported in a gap record. */
  maxBacklog: z.number().int().min(1_024).max(10_000_000).default(65_536),
  /** Longest time a written record waits for its fdatasync (actions are synced at once). */
  syncIntervalMs: z.number().int().min(0).max(60_000).default(1_000),
});

/** The schema of the control plane's configuration file (JSON or YAML). */
export const ConfigSchema = z.strictObject({
  /** Where the daemon keeps its state (registry, auth server store, generated configs, secrets). */
  dataDir: z
    .string()
    .min(1)
    .default(defaultDir("XDG_STATE_HOME", ".local/state", "controlplane")),
  /** The trust material minted by `clawker auth init` (CA, server leaf, CLI public JWK). */
  trustDir: z
    .string()
    .min(1)
    .default(defaultDir("XDG_CONFIG_HOME", ".config", "trust")),
  listen: z
    .strictObject({
      admin: endpoint(7443),
      agent: endpoint(7444),
      health: endpoint(7080),
      adminSocket: adminSocket.prefault({}),
      limits: listenerLimits.prefault({}),
    })
    .prefault({}),
  auth: z
    .strictObject({
      /** `embedded` runs our authserver; `ory` runs Hydra, Kratos and Oathkeeper. */
      mode: z.enum(["embedded", "ory"]).default("embedded"),
      /**
       * Interface of the auth helpers' TCP listeners other than the token endpoint (Kratos public,
       * Oathkeeper); their admin APIs are Unix sockets in the data dir, never TCP.
       */
      host: host.default("127.0.0.1"),
      /** Where the token endpoint listens; agents must reach it (default: `host`). */
      publicHost: host.optional(),
      publicPort: port.default(4444),
      /**
       * The issuer (an https origin) and so the token endpoint URL client assertions must name as
       * `aud`; default `https://<publicHost>:<publicPort>`. Set it when the listener's own address
       * is not the one clients dial: a wildcard bind, or a container port published elsewhere.
       */
      issuer: z
        .url({ protocol: /^https$/, message: "must be an https URL" })
        .refine((u) => {
          // zod runs refinements after a failed check too: an unparsable value is already reported.
          if (!URL.canParse(u)) return true;
          const url = new URL(u);
          return (url.pathname === "/" || url.pathname === "") && url.search === "" && url.hash === "";
        }, "must be an https origin without path, query or fragment")
        .optional(),
      /**
       * Other https origins the token endpoint is reached at (the container's address on the
       * agents' network): `<alias>/oauth2/token` is accepted as an assertion's `aud` too.
       */
      aliases: z
        .array(
          z.url({ protocol: /^https$/, message: "must be an https URL" }).refine((u) => {
            if (!URL.canParse(u)) return true;
            const url = new URL(u);
            return (url.pathname === "/" || url.pathname === "") && url.search === "" && url.hash === "";
          }, "must be an https origin without path, query or fragment"),
        )
        .max(8)
        .default([]),
      adminPort: adminOnSocket,
      /** Budget for each auth helper to become healthy. */
      healthTimeoutMs: z.number().int().positive().default(30_000),
      introspectionTimeoutMs: z.number().int().positive().default(2_000),
      /** Upper bound of a positive introspection cache entry; never past the token's `exp`. */
      cacheTtlMs: z.number().int().min(0).max(60_000).default(5_000),
      cacheSize: z.number().int().positive().default(10_000),
      ory: oryBinaries.prefault({}),
    })
    // Hydra derives its own issuer; a setting it would ignore must not look like it took effect.
    .refine((a) => a.mode === "embedded" || a.issuer === undefined, {
      path: ["issuer"],
      message: "applies to the embedded auth server only (mode: embedded)",
    })
    .refine((a) => a.mode === "embedded" || a.aliases.length === 0, {
      path: ["aliases"],
      message: "applies to the embedded auth server only (mode: embedded)",
    })
    .prefault({}),
  docker: z
    .strictObject({
      /** `unix:///path` or a socket path; default DOCKER_HOST, else /var/run/docker.sock. */
      host: z.string().min(1).optional(),
    })
    .prefault({}),
  ebpf: ebpfConfig.prefault({}),
  /**
   * The default limits of every agent `clawker run` starts (issue 13, the seed's defaults), each
   * overridden by its flag; 0 means none. Published to the CLI as `<dataDir>/agent-limits.json`.
   */
  agentLimits: z
    .strictObject({
      /** CPUs (0.1 = 10% of one). */
      cpus: z.number().min(0).max(1024).default(0.1),
      /** Memory max; no swap, soft limit at 75%. Docker takes at least 6 MiB. */
      memoryBytes: z
        .number()
        .int()
        .refine((v) => v === 0 || v >= 6 << 20, "memoryBytes must be 0 (none) or at least 6 MiB")
        .default(512 << 20),
      pidsLimit: z.number().int().min(0).default(0),
      /** Per block device of the host. */
      deviceReadBps: z
        .number()
        .int()
        .min(0)
        .default(10 << 20),
      deviceWriteBps: z
        .number()
        .int()
        .min(0)
        .default(5 << 20),
      deviceReadIops: z.number().int().min(0).default(1000),
      deviceWriteIops: z.number().int().min(0).default(1000),
    })
    .prefault({}),
  /** Drain-to-zero: stop the control plane once no agent container is left (the seed's watcher). */
  agents: z
    .strictObject({
      drainToZero: z.boolean().default(true),
      pollIntervalMs: z.number().int().min(0).default(30_000),
      missedThreshold: z.number().int().min(0).default(2),
      gracePeriodMs: z.number().int().min(0).default(60_000),
      listErrCeiling: z.number().int().min(0).default(20),
    })
    .prefault({}),
  /** Collect all garbage once the daemon is quiet after load, returning its heap (memory-relief.ts). */
  memoryRelief: z
    .strictObject({
      enabled: z.boolean().default(true),
      /** How long the event loop must stay quiet after load first. */
      idleMs: z.number().int().min(100).default(10_000),
      /** Resident memory this far above the idle floor is worth the pause. */
      marginMiB: z.number().int().min(0).default(24),
    })
    .prefault({}),
  /**
   * The whole drain's deadline, shared by every step: in-flight gRPC calls get half of what is left
   * when their step starts, helpers still running at the deadline are SIGKILLed. The default stays
   * under Docker's 10 s stop grace (the drain may overrun it by 1 s while the kernel reaps).
   */
  shutdownGraceMs: z.number().int().positive().default(8_000),
  firewall: firewallConfig.prefault({}),
  audit: auditConfig.prefault({}),
  log: z
    .strictObject({ level: z.enum(["trace", "debug", "info", "warn", "error", "fatal"]).default("info") })
    .prefault({}),
});

/** The parsed, frozen configuration. */
export type Config = Readonly<z.infer<typeof ConfigSchema>>;

/** Where the admin socket is: `listen.adminSocket.path`, default `<dataDir>/run/admin.sock`. */
export function adminSocketPath(config: Config): string {
  return config.listen.adminSocket.path ?? join(config.dataDir, "run", "admin.sock");
}

/** The configuration could not be read or is invalid; `problems` lists every issue found. */
export class ConfigError extends Error {
  readonly reason = "invalid_config";
  constructor(
    readonly problems: readonly string[],
    options?: ErrorOptions,
  ) {
    super(`invalid configuration:\n  - ${problems.join("\n  - ")}`, options);
    this.name = "ConfigError";
  }
}

/** Environment variables that override single settings, and where they go. */
const ENV_OVERRIDES = {
  CLAWKER_CP_DATA_DIR: ["dataDir"],
  CLAWKER_CP_TRUST_DIR: ["trustDir"],
  CLAWKER_CP_ADMIN_ADDR: ["listen", "admin"],
  CLAWKER_CP_AGENT_ADDR: ["listen", "agent"],
  CLAWKER_CP_HEALTH_ADDR: ["listen", "health"],
  CLAWKER_CP_ADMIN_SOCKET: ["listen", "adminSocket", "path"],
  CLAWKER_CP_AUTH_MODE: ["auth", "mode"],
  CLAWKER_CP_LOG_LEVEL: ["log", "level"],
  CLAWKER_CP_EBPF: ["ebpf", "enabled"],
} as const;

/**
 * Loads the configuration: the file named by `path` (or `CLAWKER_CP_CONFIG`), if any, then the
 * `CLAWKER_CP_*` overrides. Throws ConfigError listing every problem.
 */
export function loadConfig(path?: string, env: NodeJS.ProcessEnv = process.env): Config {
  const problems: string[] = [];
  const file = path ?? env["CLAWKER_CP_CONFIG"];
  let raw: Record<string, unknown> = {};
  if (file !== undefined && file !== "") {
    try {
      const text = readFileSync(file, "utf8");
      const parsed: unknown = extname(file) === ".json" ? JSON.parse(text) : parseYaml(text);
      if (parsed === null || parsed === undefined) raw = {};
      else if (typeof parsed === "object" && !Array.isArray(parsed)) raw = parsed as Record<string, unknown>;
      else problems.push(`${file}: the top level must be a mapping`);
    } catch (err) {
      problems.push(`${file}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  for (const [name, target] of Object.entries(ENV_OVERRIDES)) {
    const value = env[name];
    if (value === undefined || value === "") continue;
    const isAddress = target[0] === "listen" && target.length === 2;
    const parsedValue = isAddress ? parseAddress(value) : value;
    if (parsedValue === undefined) {
      problems.push(`${name}: expected host:port, got ${JSON.stringify(value)}`);
      continue;
    }
    setPath(raw, target, parsedValue);
  }
  // Parsed once per process: zod's eval-compiled fast path (one generated function per object
  // schema, dozens here) pays off only for repeated parses, and compiling it was start-up time.
  const result = ConfigSchema.safeParse(raw, { jitless: true });
  if (!result.success) {
    for (const issue of result.error.issues) {
      const where = issue.path.length > 0 ? issue.path.join(".") : "(root)";
      problems.push(`${where}: ${issue.message}`);
    }
  }
  if (result.success && result.data.listen.adminSocket.enabled) {
    const derived = adminSocketPath(result.data);
    if (Buffer.byteLength(derived) > MAX_SOCKET_PATH_BYTES) {
      problems.push(
        `listen.adminSocket.path: ${derived} (from dataDir) is longer than ${MAX_SOCKET_PATH_BYTES} bytes; set a shorter path or enabled: false`,
      );
    }
  }
  if (problems.length > 0 || !result.success) throw new ConfigError(problems);
  return deepFreeze(result.data);
}

function parseAddress(value: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
  if (m === null) return undefined;
  const portNumber = Number(m[3]);
  if (portNumber > 65535) return undefined;
  return { host: (m[1] ?? m[2])!, port: portNumber };
}

function setPath(obj: Record<string, unknown>, path: readonly string[], value: unknown): void {
  let node = obj;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (typeof next !== "object" || next === null) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1]!] = value;
}

function defaultDir(xdgVar: string, fallback: string, leaf: string): string {
  const base = process.env[xdgVar];
  return join(base !== undefined && base !== "" ? base : join(homedir(), fallback), "clawker", leaf);
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
