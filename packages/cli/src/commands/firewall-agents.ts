// `clawker firewall enable|disable|bypass`: one agent container's firewall mode. A bypass always
// ends by itself on the control plane (a dead-man timer); this command only watches the clock.
import type { AdminClient } from "@clawker/adminclient";
import { positionals, parseDuration, type CommandSpec, type FlagValues } from "../command-spec.js";
import { CliError, ExitCode } from "../exit-codes.js";
import type { Io } from "../io.js";
import {
  CONNECT_FLAGS,
  TARGET_FLAGS,
  formatSeconds,
  resolveTarget,
  withFirewallClient,
  type ContainerTarget,
} from "./firewall-shared.js";

/** The longest bypass the control plane grants (API.md §1). */
export const MAX_BYPASS_SECONDS = 3600;

/** The spec of `clawker firewall enable`. */
export const FIREWALL_ENABLE: CommandSpec = {
  words: ["firewall", "enable"],
  summary: "Enforce the firewall for an agent again (also ends a bypass).",
  flags: { ...TARGET_FLAGS, ...CONNECT_FLAGS },
  examples: [
    "clawker firewall enable --agent dev --project web",
    "clawker firewall enable --container 3f2a9c",
  ],
};

/** The spec of `clawker firewall disable`. */
export const FIREWALL_DISABLE: CommandSpec = {
  words: ["firewall", "disable"],
  summary: "Stop enforcing the firewall for an agent (until enable or a control plane restart).",
  flags: { ...TARGET_FLAGS, ...CONNECT_FLAGS },
  examples: ["clawker firewall disable --agent dev"],
};

/** Runs `firewall enable`. */
export function firewallEnable(values: FlagValues, io: Io): Promise<number> {
  return setMode(values, io, "enforced", (c, id) => c.firewallEnable(id));
}

/** Runs `firewall disable`. */
export function firewallDisable(values: FlagValues, io: Io): Promise<number> {
  return setMode(values, io, "disabled", (c, id) => c.firewallDisable(id));
}

async function setMode(
  values: FlagValues,
  io: Io,
  mode: string,
  call: (client: AdminClient, containerId: string) => Promise<unknown>,
): Promise<number> {
  const target = await withFirewallClient(values, io, async (client) => {
    const t = await resolveTarget(client, values);
    await call(client, t.containerId);
    return t;
  });
  if (values["format"] === "json") {
    io.stdout.write(JSON.stringify({ container_id: target.containerId, mode }, null, 2) + "\n");
  } else {
    io.stdout.write(`Firewall ${mode === "enforced" ? "enabled" : "disabled"} for ${target.label}\n`);
  }
  return ExitCode.ok;
}

/** The spec of `clawker firewall bypass`. */
export const FIREWALL_BYPASS: CommandSpec = {
  words: ["firewall", "bypass"],
  summary: "Unrestricted egress for an agent for DURATION (at most 1h), then enforced again.",
  description:
    "The control plane ends the bypass by itself when DURATION runs out, whatever happens to this\n" +
    "command. By default it waits with a countdown; Ctrl+C ends the bypass early. With\n" +
    "--non-interactive it starts the bypass and returns. --stop ends a running bypass now.",
  flags: {
    ...TARGET_FLAGS,
    stop: { type: "boolean", description: "end the agent's bypass now (no DURATION)" },
    "non-interactive": { type: "boolean", description: "start the bypass and return at once" },
    ...CONNECT_FLAGS,
  },
  positionals: "DURATION",
  examples: [
    "clawker firewall bypass 5m --agent dev",
    "clawker firewall bypass 30s --agent dev --project web --non-interactive",
    "clawker firewall bypass --stop --agent dev",
  ],
};

/** The bypass length in whole seconds from DURATION (30s, 5m, 1h is 60m); usage errors exit 2. */
export function bypassSeconds(values: FlagValues): number | undefined {
  const [text, ...extra] = positionals(values);
  if (extra.length > 0) throw new CliError(ExitCode.usage, `unexpected argument ${JSON.stringify(extra[0])}`);
  if (values["stop"] === true) {
    if (text !== undefined) throw new CliError(ExitCode.usage, "--stop takes no DURATION");
    return undefined;
  }
  if (text === undefined) throw new CliError(ExitCode.usage, "bypass needs a DURATION, e.g. 5m or 30s");
  const seconds = Math.ceil(parseDuration("bypass", text) / 1000);
  if (seconds > MAX_BYPASS_SECONDS) {
    throw new CliError(
      ExitCode.usage,
      `a bypass lasts at most ${MAX_BYPASS_SECONDS / 60}m, got ${JSON.stringify(text)}`,
    );
  }
  return seconds;
}

/** Runs `firewall bypass`. */
export async function firewallBypass(values: FlagValues, io: Io): Promise<number> {
  const seconds = bypassSeconds(values);
  const json = values["format"] === "json";
  return await withFirewallClient(values, io, async (client) => {
    const target = await resolveTarget(client, values);
    if (seconds === undefined) {
      await client.firewallEnable(target.containerId);
      if (json)
        io.stdout.write(
          JSON.stringify({ container_id: target.containerId, bypass: "stopped" }, null, 2) + "\n",
        );
      else io.stdout.write(`Bypass stopped for ${target.label}\n`);
      return ExitCode.ok;
    }
    await client.firewallBypass(target.containerId, seconds);
    if (values["non-interactive"] === true) {
      if (json) {
        const expiresAt = new Date(Date.now() + seconds * 1000).toISOString();
        io.stdout.write(
          JSON.stringify({ container_id: target.containerId, seconds, expires_at: expiresAt }, null, 2) +
            "\n",
        );
      } else {
        io.stdout.write(`Bypass active for ${target.label} (ends by itself in ${formatSeconds(seconds)})\n`);
        io.stderr.write(`Stop early: clawker firewall bypass --stop ${targetFlags(values)}\n`);
      }
      return ExitCode.ok;
    }
    const interrupted = await countdown(io, target, seconds);
    // After Ctrl+C, and also at expiry: enforcement back now, even if the control plane lost its
    // timer (a restart clears bypasses anyway; enable is idempotent).
    await client.firewallEnable(target.containerId);
    const outcome = interrupted ? "stopped" : "expired";
    if (json)
      io.stdout.write(JSON.stringify({ container_id: target.containerId, bypass: outcome }, null, 2) + "\n");
    else io.stdout.write(`Bypass ${outcome} for ${target.label}; firewall enforced again\n`);
    return ExitCode.ok;
  });
}

function targetFlags(values: FlagValues): string {
  const parts: string[] = [];
  for (const name of ["agent", "project", "container"]) {
    const v = values[name];
    if (typeof v === "string") parts.push(`--${name} ${v}`);
  }
  return parts.join(" ");
}

/**
 * Waits until the bypass has run out, or Ctrl+C; resolves true when interrupted. On a terminal
 * the time left is redrawn every second on stderr; otherwise one line at the start.
 */
function countdown(io: Io, target: ContainerTarget, seconds: number): Promise<boolean> {
  const deadline = Date.now() + seconds * 1000;
  const tty = io.stderr.isTTY === true;
  const draw = (): void => {
    const left = Math.max(0, Math.ceil((deadline - Date.now()) / 1000));
    io.stderr.write(
      `\r\x1b[KBypass active for ${target.label}: ${formatSeconds(left)} left (Ctrl+C ends it)`,
    );
  };
  if (tty) draw();
  else io.stderr.write(`Bypass active for ${target.label} for ${formatSeconds(seconds)} (Ctrl+C ends it)\n`);
  return new Promise((resolve) => {
    let stopInterrupt: () => void = () => undefined;
    const ticker = tty ? setInterval(draw, 1000) : undefined;
    const finish = (interrupted: boolean): void => {
      clearTimeout(timer);
      clearInterval(ticker);
      stopInterrupt();
      if (tty) io.stderr.write("\r\x1b[K");
      resolve(interrupted);
    };
    const timer = setTimeout(() => finish(false), seconds * 1000);
    stopInterrupt = io.onInterrupt?.(() => finish(true)) ?? stopInterrupt;
  });
}
