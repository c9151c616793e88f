// `clawker firewall up|down|status|reload|rotate-ca`: the firewall stack (egress proxy, DNS gate)
// as a whole.
import type { admin as adminProto } from "@clawker/proto";
import type { CommandSpec, FlagValues } from "../command-spec.js";
import { ExitCode } from "../exit-codes.js";
import type { Io } from "../io.js";
import { CONNECT_FLAGS, formatSeconds, withFirewallClient } from "./firewall-shared.js";

/** The spec of `clawker firewall up`. */
export const FIREWALL_UP: CommandSpec = {
  words: ["firewall", "up"],
  summary: "Bring the firewall up (FirewallInit); it stays up across control plane restarts.",
  flags: { ...CONNECT_FLAGS },
  examples: ["clawker firewall up", "clawker firewall up --format json"],
};

/** Runs `firewall up`. */
export async function firewallUp(values: FlagValues, io: Io): Promise<number> {
  const r = await withFirewallClient(values, io, (c) => c.firewallInit());
  if (values["format"] === "json") {
    const body = { envoy_ip: r.envoyIp, coredns_ip: r.corednsIp, network_id: r.networkId };
    io.stdout.write(JSON.stringify(body, null, 2) + "\n");
  } else {
    io.stdout.write(
      `Firewall up: proxy ${r.envoyIp}, DNS gate ${r.corednsIp || "none"}, network ${r.networkId || "unknown"}\n`,
    );
  }
  return ExitCode.ok;
}

/** The spec of `clawker firewall down`. */
export const FIREWALL_DOWN: CommandSpec = {
  words: ["firewall", "down"],
  summary: "Take the firewall down (FirewallRemove): agents are refused, not let out. Rules stay.",
  flags: { ...CONNECT_FLAGS },
  examples: ["clawker firewall down"],
};

/** Runs `firewall down`. */
export async function firewallDown(values: FlagValues, io: Io): Promise<number> {
  await withFirewallClient(values, io, (c) => c.firewallRemove());
  if (values["format"] === "json") io.stdout.write(JSON.stringify({ running: false }, null, 2) + "\n");
  else io.stdout.write("Firewall down\n");
  return ExitCode.ok;
}

/** The status as `--format json` prints it (Go clawker's keys, plus cidr and containers). */
export function statusJson(s: adminProto.FirewallStatusResult): Record<string, unknown> {
  return {
    running: s.running,
    envoy_health: s.envoyHealth,
    coredns_health: s.corednsHealth,
    rule_count: s.ruleCount,
    envoy_ip: s.envoyIp,
    coredns_ip: s.corednsIp,
    network_id: s.networkId,
    cidr: s.cidr,
    containers: s.containers.map((c) => ({
      container_id: c.containerId,
      mode: c.mode,
      bypass_seconds_left: c.bypassSecondsLeft,
      enforced: c.enforced,
    })),
    event_sources: s.eventSources.map((e) => ({
      source: e.source,
      published: Number(e.published),
      delivered: Number(e.delivered),
      dropped_rate_limited: Number(e.droppedRateLimited),
      dropped_upstream: Number(e.droppedUpstream),
    })),
  };
}

/** The status as text lines (also `controlplane status`'s firewall section). */
export function statusLines(s: adminProto.FirewallStatusResult): string[] {
  const health = (ok: boolean, address: string): string =>
    `${ok ? "healthy" : s.running && address !== "" ? "unhealthy" : "not running"}${address === "" ? "" : ` (${address})`}`;
  const lines = [
    `Firewall:  ${s.running ? "running" : "stopped"}`,
    `Proxy:     ${health(s.envoyHealth, s.envoyIp)}`,
    `DNS gate:  ${health(s.corednsHealth, s.corednsIp)}`,
    `Rules:     ${s.ruleCount}`,
  ];
  if (s.networkId !== "" || s.cidr !== "") {
    lines.push(`Network:   ${s.networkId === "" ? "" : `${s.networkId.slice(0, 12)} `}${s.cidr}`.trimEnd());
  }
  for (const c of s.containers) {
    const mode = c.mode === "bypass" ? `bypass, ${formatSeconds(c.bypassSecondsLeft)} left` : c.mode;
    const enforced = c.enforced ? "" : " (recorded only: no enrolment enforces it yet)";
    lines.push(`Container: ${c.containerId.slice(0, 12)} ${mode}${enforced}`);
  }
  // Only sources that produced anything: drops are the point (a Go peer sends none).
  for (const e of s.eventSources) {
    if (e.published === 0n) continue;
    const dropped = e.droppedRateLimited + e.droppedUpstream;
    const why =
      dropped === 0n
        ? ""
        : ` (${e.droppedRateLimited} rate-limited, ${e.droppedUpstream} lost at the source)`;
    lines.push(`Events:    ${e.source} ${e.published} published, ${dropped} dropped${why}`);
  }
  return lines;
}

/** The spec of `clawker firewall status`. */
export const FIREWALL_STATUS: CommandSpec = {
  words: ["firewall", "status"],
  summary: "Show whether the firewall runs, its health, rule count, addresses, bypasses.",
  flags: { ...CONNECT_FLAGS },
  examples: ["clawker firewall status", "clawker firewall status --format json | jq .running"],
};

/** Runs `firewall status`. */
export async function firewallStatus(values: FlagValues, io: Io): Promise<number> {
  const s = await withFirewallClient(values, io, (c) => c.firewallStatus());
  if (values["format"] === "json") io.stdout.write(JSON.stringify(statusJson(s), null, 2) + "\n");
  else io.stdout.write(statusLines(s).join("\n") + "\n");
  return ExitCode.ok;
}

/** The spec of `clawker firewall reload`. */
export const FIREWALL_RELOAD: CommandSpec = {
  words: ["firewall", "reload"],
  summary: "Apply the stored rules again (FirewallReload); nothing restarts.",
  flags: { ...CONNECT_FLAGS },
  examples: ["clawker firewall reload"],
};

/** Runs `firewall reload`. */
export async function firewallReload(values: FlagValues, io: Io): Promise<number> {
  const r = await withFirewallClient(values, io, (c) => c.firewallReload());
  if (values["format"] === "json") {
    io.stdout.write(JSON.stringify({ stack_restarted: r.stackRestarted }, null, 2) + "\n");
  } else {
    io.stdout.write("Firewall rules reloaded\n");
  }
  return ExitCode.ok;
}

/** The spec of `clawker firewall rotate-ca`. */
export const FIREWALL_ROTATE_CA: CommandSpec = {
  words: ["firewall", "rotate-ca"],
  summary: "Replace the interception CA; intercepted names get new certificates at once.",
  description:
    "Agents must trust the new CA (<data dir>/firewall/ca/ca.crt) for intercepted names (rules\n" +
    "with --path); passthrough connections are not affected.",
  flags: { ...CONNECT_FLAGS },
  examples: ["clawker firewall rotate-ca"],
};

/** Runs `firewall rotate-ca`. */
export async function firewallRotateCa(values: FlagValues, io: Io): Promise<number> {
  const r = await withFirewallClient(values, io, (c) => c.firewallRotateCa());
  if (values["format"] === "json") {
    io.stdout.write(JSON.stringify({ stack_restarted: r.stackRestarted }, null, 2) + "\n");
  } else {
    io.stdout.write("Interception CA rotated; agents must trust the new CA for intercepted names\n");
  }
  return ExitCode.ok;
}
