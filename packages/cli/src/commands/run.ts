// `clawker run`: creates an agent container, copies its bootstrap identity in (a 24 h leaf for the
// container's id and a single-use client assertion), and starts it. Everything after IMAGE is
// the agent's main command, passed verbatim.
import { readFile } from "node:fs/promises";
import {
  AgentBootstrapError,
  agentCgroupParent,
  createAgentContainer,
  DEFAULT_AGENT_ENTRYPOINT,
  DEFAULT_AGENT_NETWORK,
  dockerClient,
  loadTrustSet,
  networkGateway,
  type AgentBootstrapReason,
  type AgentLimits,
  type DeviceRate,
} from "@clawker/adminclient";
import { adminSocketChoice, connectAdmin } from "../admin-connection.js";
import {
  FORMAT_FLAG,
  optStr,
  parseAddress,
  parseFlags,
  str,
  type CommandSpec,
  type FlagValues,
} from "../command-spec.js";
import { defaultAdminAddr, defaultDataDir, defaultTokenEndpoint, defaultTrustDir } from "../defaults.js";
import { CliError, ExitCode, type ExitCodeValue } from "../exit-codes.js";
import { cpAddressOn } from "../cp-container.js";
import type { Io } from "../io.js";
import { hostDisks, readAgentLimitDefaults, withDefaults } from "./agent-defaults.js";
import { ADMIN_SOCKET_FLAG, LOCATE_FLAGS } from "./controlplane-up.js";
import { parseCpu, parseSize, positiveCount } from "./job.js";

/** The control plane's agent listener port (the default of `--cp-addr` on the network's gateway). */
export const AGENT_LISTENER_PORT = 7444;
/** The token endpoint port agents reach (the default of `--token-endpoint` on the gateway). */
export const AGENT_TOKEN_PORT = 4444;

/** The spec of `clawker run`. */
export const RUN: CommandSpec = {
  words: ["run"],
  summary: "Create and start an agent container with its bootstrap identity.",
  description:
    "usage: clawker run --agent NAME [flags] IMAGE [CMD...]\n" +
    "\n" +
    "Creates container clawker.<project>.<agent> (labels dev.clawker.*, --cap-drop NET_RAW, docker-init\n" +
    "as PID 1, on the agents network), issues the agent's 24 h leaf for the container id and a\n" +
    "single-use client assertion for clawker-agent (10 min), copies both with the CA and agent.json\n" +
    "into /run/clawker/bootstrap (0400, root), then starts it. The firewall's interception CA\n" +
    "(FirewallStatus, public part only) goes to /etc/clawker/firewall-ca.crt with NODE_EXTRA_CA_CERTS and\n" +
    "SSL_CERT_FILE set; clawkerd adds it to the image's trust store at every start. A control plane\n" +
    "that cannot be asked is a warning: the agent then fails TLS to intercepted names (never trusts\n" +
    "more). The entrypoint is clawkerd; CMD becomes\n" +
    "clawkerd's main command, started when the control plane says AgentReady. Nothing is left behind\n" +
    "when a step fails. Flags go before IMAGE; everything after IMAGE is CMD.\n" +
    "Docker is reached through DOCKER_HOST (unix:///path; default /var/run/docker.sock).",
  flags: {
    agent: {
      type: "string",
      value: "NAME",
      description: "agent name (required): a letter or digit, then letters, digits, '_' or '-' (max 64)",
    },
    project: { type: "string", value: "NAME", description: "project name, same rule (default none)" },
    network: {
      type: "string",
      value: "NET",
      description: `Docker network the agent joins (default ${DEFAULT_AGENT_NETWORK})`,
    },
    "cgroup-parent": {
      type: "string",
      value: "CGROUP",
      description:
        "cgroup parent owned by the control plane, whose eBPF programs enforce the agent's egress (default /clawker, or clawker.slice with Docker's systemd cgroup driver)",
    },
    cpus: {
      type: "string",
      value: "CPUS",
      description: "CPU limit of the agent, e.g. 0.5 (default: the control plane's)",
    },
    memory: {
      type: "string",
      value: "SIZE",
      description: "memory limit, e.g. 512M: no swap, soft limit at 75% (default: the control plane's)",
    },
    "pids-limit": {
      type: "string",
      value: "N",
      description: "most processes in the agent (default: the control plane's)",
    },
    "cp-data-dir": {
      type: "string",
      value: "DIR",
      description:
        "the control plane's data dir, where it publishes its default agent limits (default $CLAWKER_CP_DATA_DIR, else ~/.local/state/clawker/controlplane)",
    },
    "device-read-bps": {
      type: "string",
      multiple: true,
      value: "DEV:SIZE",
      description: "read bytes/s of a host device, e.g. /dev/sda:10M",
    },
    "device-write-bps": {
      type: "string",
      multiple: true,
      value: "DEV:SIZE",
      description: "write bytes/s of a host device",
    },
    "device-read-iops": {
      type: "string",
      multiple: true,
      value: "DEV:N",
      description: "read operations/s of a host device",
    },
    "device-write-iops": {
      type: "string",
      multiple: true,
      value: "DEV:N",
      description: "write operations/s of a host device",
    },
    "cp-addr": {
      type: "string",
      value: "HOST:PORT",
      description: `control plane agent listener as the agent reaches it (default: the control-plane container's address on the network when \`controlplane up --container\` made one, else the network's gateway; port ${AGENT_LISTENER_PORT})`,
    },
    "token-endpoint": {
      type: "string",
      value: "URL",
      description: `token endpoint as the agent reaches it (default https://<that same address>:${AGENT_TOKEN_PORT}/oauth2/token)`,
    },
    "server-name": {
      type: "string",
      value: "NAME",
      description: "name the control plane's certificate is checked against (default localhost)",
    },
    "trust-dir": {
      type: "string",
      value: "DIR",
      description: "trust dir (default $CLAWKER_CP_TRUST_DIR or ${XDG_CONFIG_HOME:-~/.config}/clawker/trust)",
    },
    entrypoint: {
      type: "string",
      value: "PROG|JSON",
      description: `entrypoint: a program, or a JSON array (default ${JSON.stringify(DEFAULT_AGENT_ENTRYPOINT)})`,
    },
    env: { type: "string", short: "e", multiple: true, value: "KEY=VALUE", description: "environment entry" },
    "no-start": { type: "boolean", description: "create and copy the identity in, but do not start" },
    "firewall-ca": {
      type: "string",
      value: "FILE|none",
      description:
        "the firewall's interception CA certificate (PEM) the agent trusts; none: no CA (default: asked of the control plane)",
    },
    admin: LOCATE_FLAGS.admin,
    "admin-socket": ADMIN_SOCKET_FLAG,
    format: FORMAT_FLAG,
  },
  examples: [
    "clawker run --agent dev my-agent-image",
    "clawker run --agent dev --project web my-agent-image sleep infinity",
    "clawker run --agent ci --network clawker-agents --cgroup-parent clawker-agents.slice img sh -c 'make test'",
    "clawker run --agent dev --format json img | jq -r .thumbprint",
  ],
};

/** Exit codes of agent container failures (the CLI's table: 2 usage, 5 exists, 1 the rest). */
export const AGENT_EXIT = {
  invalid_argument: ExitCode.usage,
  invalid_trust: ExitCode.error,
  docker_unavailable: ExitCode.error,
  name_conflict: ExitCode.exists,
  image_not_found: ExitCode.error,
  create_failed: ExitCode.error,
  bootstrap_failed: ExitCode.error,
  start_failed: ExitCode.error,
  not_found: ExitCode.error,
  not_managed: ExitCode.error,
  remove_failed: ExitCode.error,
} as const satisfies Record<AgentBootstrapReason, ExitCodeValue>;

/** Turns an AgentBootstrapError into the CliError the CLI reports; other errors pass through. */
export function agentCliError(err: unknown): unknown {
  if (!(err instanceof AgentBootstrapError)) return err;
  const hint =
    err.reason === "docker_unavailable"
      ? " (is Docker running? DOCKER_HOST must name its unix socket)"
      : err.reason === "name_conflict"
        ? " (remove it first: clawker rm --agent ...)"
        : "";
  return new CliError(AGENT_EXIT[err.reason], `${err.reason}: ${err.message}${hint}`, { cause: err });
}

/**
 * Splits `clawker run` arguments at IMAGE: flags before it are parsed against the spec, IMAGE
 * and everything after it are kept verbatim (`_image`, `_cmd`), so CMD may carry its own flags.
 */
export function parseRunArgs(spec: CommandSpec, args: readonly string[]): FlagValues {
  const takesValue = (arg: string): boolean => {
    if (arg.startsWith("--")) {
      if (arg.includes("=")) return false;
      return spec.flags[arg.slice(2)]?.type === "string";
    }
    // `-e VALUE` (a short string flag alone); `-eK=V` carries its value.
    const short = Object.values(spec.flags).find((f) => f.short === arg.slice(1, 2));
    return arg.length === 2 && short?.type === "string";
  };
  let at = args.length;
  let rest: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") {
      at = i;
      rest = args.slice(i + 1);
      break;
    }
    if (arg.startsWith("-") && arg !== "-") {
      if (takesValue(arg)) i++;
      continue;
    }
    at = i;
    rest = args.slice(i);
    break;
  }
  const values = parseFlags(spec, args.slice(0, at));
  const [image, ...cmd] = rest;
  if (image !== undefined) values["_image"] = image;
  values["_cmd"] = cmd;
  return values;
}

/** Parses `--entrypoint`: a JSON array of strings, or one program. */
export function parseEntrypoint(text: string): string[] {
  if (!text.trimStart().startsWith("[")) {
    if (text === "") throw new CliError(ExitCode.usage, "--entrypoint is empty");
    return [text];
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new CliError(ExitCode.usage, `--entrypoint is not a JSON array: ${JSON.stringify(text)}`, {
      cause: err,
    });
  }
  if (!Array.isArray(value) || value.length === 0 || !value.every((v) => typeof v === "string")) {
    throw new CliError(ExitCode.usage, "--entrypoint must be a non-empty JSON array of strings");
  }
  return value;
}

/** Runs `clawker run`. */
export async function runAgent(values: FlagValues, io: Io): Promise<number> {
  const agent = optStr(values, "agent");
  if (agent === undefined) throw new CliError(ExitCode.usage, "--agent NAME is required");
  const image = optStr(values, "_image");
  if (image === undefined) throw new CliError(ExitCode.usage, "IMAGE is required");
  const cmd = (values["_cmd"] as string[] | undefined) ?? [];
  const project = str(values, "project", "");
  const network = str(values, "network", DEFAULT_AGENT_NETWORK);
  const entrypointFlag = optStr(values, "entrypoint");
  const entrypoint = entrypointFlag === undefined ? undefined : parseEntrypoint(entrypointFlag);
  const cgroupParentFlag = optStr(values, "cgroup-parent");
  // The control plane's default limits (its config, published in its data dir) under the flags.
  const published = readAgentLimitDefaults(str(values, "cp-data-dir", defaultDataDir(io.env)));
  const limits =
    published.defaults === undefined
      ? agentLimits(values)
      : withDefaults(agentLimits(values), published.defaults, hostDisks());
  if (published.defaults === undefined)
    io.stderr.write(`clawker: note: ${published.why}; the agent gets only the limits its flags give\n`);
  const trustDir = str(values, "trust-dir", defaultTrustDir(io.env));
  const trust = await loadTrustSet(trustDir);
  const firewallCaPem = await firewallCa(values, io, trustDir);

  try {
    const docker = dockerClient(io.env["DOCKER_HOST"]);
    // Under the control plane's parent the agent is enforced from its first syscall.
    const cgroupParent = cgroupParentFlag ?? (await agentCgroupParent(docker));
    let cpAddr = optStr(values, "cp-addr");
    let tokenEndpoint = optStr(values, "token-endpoint");
    if (cpAddr === undefined || tokenEndpoint === undefined) {
      // The container form (`controlplane up --container`) listens on its own address on the
      // agents' network; a control plane on the host binds the network's gateway.
      const host = (await cpAddressOn(docker, network)) ?? (await networkGateway(docker, network));
      cpAddr ??= `${host}:${AGENT_LISTENER_PORT}`;
      tokenEndpoint ??= `https://${host}:${AGENT_TOKEN_PORT}/oauth2/token`;
    }
    const created = await createAgentContainer(docker, {
      agent,
      project,
      image,
      cmd,
      network,
      trust,
      controlPlaneAddr: cpAddr,
      tokenEndpoint,
      serverName: str(values, "server-name", "localhost"),
      start: values["no-start"] !== true,
      env: (values["env"] as string[] | undefined) ?? [],
      ...(entrypoint === undefined ? {} : { entrypoint }),
      cgroupParent,
      limits,
      ...(firewallCaPem === undefined ? {} : { firewallCaPem }),
    });
    const result = {
      containerId: created.containerId,
      name: created.name,
      agent,
      project,
      fullName: created.fullName,
      image,
      network,
      cgroupParent,
      started: created.started,
      thumbprint: created.thumbprint,
      firewallCaFingerprint: created.firewallCaFingerprint ?? null,
      certNotAfter: created.certNotAfter,
      controlPlaneAddr: cpAddr,
      tokenEndpoint,
    };
    if (values["format"] === "json") {
      io.stdout.write(JSON.stringify(result, null, 2) + "\n");
    } else {
      io.stdout.write(
        `${created.started ? "started" : "created"} agent ${created.fullName} in container ${created.name} (${created.containerId.slice(0, 12)})\n` +
          `  leaf thumbprint: ${created.thumbprint} (valid until ${created.certNotAfter})\n` +
          `  network ${network}, control plane ${cpAddr}, token endpoint ${tokenEndpoint}\n` +
          `  firewall CA: ${created.firewallCaFingerprint ?? "none"}\n` +
          "next: clawker controlplane agents\n",
      );
    }
    return ExitCode.ok;
  } catch (err) {
    throw agentCliError(err);
  }
}

/** How long `run` waits for the control plane's answer about the firewall CA. */
const FIREWALL_CA_DEADLINE_MS = 5_000;

/**
 * The firewall CA for a new agent: `--firewall-ca FILE` (read, checked by createAgentContainer),
 * `none`, or by default FirewallStatus's `interception_ca_pem` (our extension) from the control
 * plane on `--admin-socket`/`--admin` and `$CLAWKER_TOKEN_ENDPOINT`. A control plane that cannot
 * be asked, or has no CA yet, gives none with a warning: without the CA an agent fails TLS to
 * intercepted names, it never trusts more.
 */
async function firewallCa(values: FlagValues, io: Io, trustDir: string): Promise<string | undefined> {
  const flag = optStr(values, "firewall-ca");
  if (flag === "none") return undefined;
  if (flag !== undefined) {
    try {
      return await readFile(flag, "utf8");
    } catch (err) {
      throw new CliError(ExitCode.usage, `cannot read --firewall-ca ${flag}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }
  const warn = (why: string): undefined => {
    io.stderr.write(
      `warning: no firewall CA copied into the agent (${why}); names the firewall intercepts will fail TLS verification there (--firewall-ca FILE|none to choose)\n`,
    );
    return undefined;
  };
  let pem: string;
  try {
    const { client } = await connectAdmin({
      trustDir,
      admin: parseAddress("admin", str(values, "admin", defaultAdminAddr(io.env))).text,
      tokenEndpoint: defaultTokenEndpoint(io.env),
      socket: adminSocketChoice(values, io.env),
      deadlineMs: FIREWALL_CA_DEADLINE_MS,
    });
    try {
      pem = (await client.firewallStatus()).interceptionCaPem;
    } finally {
      await client.close();
    }
  } catch (err) {
    return warn(`the control plane was not asked: ${(err as Error).message}`);
  }
  return pem === "" ? warn("the control plane has none yet: bring the firewall up first") : pem;
}

/** The agent's resource limits from `run`'s flags (Docker's spelling; usage errors exit 2). */
export function agentLimits(values: FlagValues): AgentLimits {
  const cpus = optStr(values, "cpus");
  const memory = optStr(values, "memory");
  const pids = optStr(values, "pids-limit");
  const devices = (flag: string, isSize: boolean): DeviceRate[] => {
    const list = values[flag];
    return (Array.isArray(list) ? list : []).map((spec) => {
      const at = spec.lastIndexOf(":");
      const path = spec.slice(0, at);
      if (at <= 0 || !path.startsWith("/dev/")) {
        throw new CliError(
          ExitCode.usage,
          `--${flag} must be /dev/DEVICE:${isSize ? "SIZE" : "N"}, got ${JSON.stringify(spec)}`,
        );
      }
      const raw = spec.slice(at + 1);
      return { path, rate: isSize ? parseSize(flag, raw) : positiveCount(flag, raw) };
    });
  };
  return {
    ...(cpus === undefined ? {} : { nanoCpus: parseCpu(cpus, "cpus") * 1_000_000 }),
    ...(memory === undefined ? {} : { memoryBytes: parseSize("memory", memory) }),
    ...(pids === undefined ? {} : { pidsLimit: positiveCount("pids-limit", pids) }),
    deviceReadBps: devices("device-read-bps", true),
    deviceWriteBps: devices("device-write-bps", true),
    deviceReadIops: devices("device-read-iops", false),
    deviceWriteIops: devices("device-write-iops", false),
  };
}
