// `clawker firewall watch` (issue 11 §4): a live terminal view of denials and agents' pending
// requests, newest first, with single keys to allow for this agent / this project / everyone, for
// an hour or for good, or to dismiss. It polls ListFirewallDenials, and after a key it says only
// "live" once ApproveEgress has answered, which the control plane does only once the DNS gate and
// the proxy run the new rule. Plain ANSI on the alternate screen: works over SSH and under tmux.
import { egress } from "@clawker/proto";
import { optStr, parseDuration, type CommandSpec, type FlagValues } from "../command-spec.js";
import { CliError, ExitCode } from "../exit-codes.js";
import type { Io, Terminal } from "../io.js";
import { TriageView, type TriageAction } from "../triage-view.js";
import { CONNECT_FLAGS, SCOPE_FLAGS, withFirewallClient } from "./firewall-shared.js";

const S = egress.EgressServiceService;

/** The EgressService calls the view needs (the admin client's, or a test's own server's). */
export interface TriageCalls {
  list(request: egress.ListFirewallDenialsRequest): Promise<egress.ListFirewallDenialsResponse>;
  approve(request: egress.ApproveEgressRequest): Promise<egress.ApproveEgressResponse>;
  dismiss(request: egress.DismissEgressRequest): Promise<unknown>;
}

/** The spec of `clawker firewall watch`. */
export const FIREWALL_WATCH: CommandSpec = {
  words: ["firewall", "watch"],
  summary: "Live view of denials and agents' requests; approve or dismiss with one key.",
  description:
    "Lists what agents were refused and what they asked for, newest first, and refreshes it.\n" +
    "Select a line with the arrow keys (or j/k) and press:\n" +
    "  a / A  allow it for this agent, for 1h / permanently\n" +
    "  p / P  allow it for this agent's project, for 1h / permanently\n" +
    "  g / G  allow it for every agent, for 1h / permanently\n" +
    "  d      dismiss it (grants nothing)\n" +
    "  q      quit (also Ctrl+C)\n" +
    "An approval is shown as live only once the control plane enforces it. Needs a terminal; in\n" +
    "scripts use `clawker firewall denials --format json` and `clawker firewall approve`.",
  flags: {
    ...SCOPE_FLAGS,
    interval: { type: "string", value: "DURATION", description: "refresh period (default 1s)" },
    ...CONNECT_FLAGS,
  },
  examples: ["clawker firewall watch", "clawker firewall watch --project web --interval 2s"],
};

/** What `firewall watch` shows and how often it asks, from its flags (usage errors exit 2). */
export function watchOptions(values: FlagValues): {
  request: egress.ListFirewallDenialsRequest;
  intervalMs: number;
} {
  const interval = optStr(values, "interval");
  const intervalMs = interval === undefined ? 1000 : parseDuration("interval", interval);
  if (intervalMs < 100)
    throw new CliError(ExitCode.usage, `--interval must be at least 100ms, got ${interval}`);
  return {
    request: egress.ListFirewallDenialsRequest.fromPartial({
      agentName: optStr(values, "agent") ?? "",
      project: optStr(values, "project") ?? "",
    }),
    intervalMs,
  };
}

/** The terminal `firewall watch` draws on, or a usage error when there is none. */
export function watchTerminal(io: Io, values: FlagValues): Terminal {
  if (io.terminal === undefined || io.stdout.isTTY !== true) {
    throw new CliError(
      ExitCode.usage,
      "firewall watch needs a terminal; in scripts use `clawker firewall denials --format json`",
    );
  }
  if (values["format"] === "json") {
    throw new CliError(
      ExitCode.usage,
      "firewall watch has no JSON form; use `clawker firewall denials --format json`",
    );
  }
  return io.terminal;
}

/** Runs `firewall watch`: the view against the control plane until the operator quits. */
export async function firewallWatch(values: FlagValues, io: Io): Promise<number> {
  const options = watchOptions(values);
  const terminal = watchTerminal(io, values);
  await withFirewallClient(values, io, (c) =>
    runWatch(
      {
        list: (request) => c.callMethod(S.listFirewallDenials, request),
        approve: (request) => c.callMethod(S.approveEgress, request),
        dismiss: (request) => c.callMethod(S.dismissEgress, request),
      },
      io,
      terminal,
      options,
    ),
  );
  return ExitCode.ok;
}

/**
 * Runs the view until `q`, Ctrl+C or `signal`: refreshes every `intervalMs` (and at once after an
 * action), draws after every change, and turns keys into ApproveEgress / DismissEgress calls.
 */
export async function runWatch(
  calls: TriageCalls,
  io: Io,
  terminal: Terminal,
  options: { request: egress.ListFirewallDenialsRequest; intervalMs: number; signal?: AbortSignal },
): Promise<void> {
  const view = new TriageView();
  const draw = (): void => {
    const { cols, rows } = terminal.size();
    io.stdout.write("\x1b[H\x1b[2J" + view.render(cols, rows).join("\r\n"));
  };
  let refreshing: Promise<void> | undefined;
  const refresh = (): Promise<void> =>
    (refreshing ??= calls
      .list(options.request)
      .then(
        (answer) => view.update(answer),
        (err: unknown) => view.setStatus(`cannot list denials: ${messageOf(err)}`),
      )
      .finally(() => {
        refreshing = undefined;
        draw();
      }));

  io.stdout.write("\x1b[?1049h\x1b[?25l");
  try {
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => void refresh(), options.intervalMs);
      const finish = (): void => {
        clearInterval(timer);
        stopKeys();
        options.signal?.removeEventListener("abort", finish);
        resolve();
      };
      const act = async (action: Exclude<TriageAction, { kind: "quit" }>): Promise<void> => {
        view.setStatus(`${action.kind === "approve" ? "approving" : "dismissing"} ${label(action)} ...`);
        draw();
        try {
          view.setStatus(await perform(calls, action));
        } catch (err) {
          view.setStatus(`${action.kind} failed: ${messageOf(err)}`);
        }
        await refresh();
      };
      const stopKeys = terminal.keys((key) => {
        const action = view.key(key);
        if (action === undefined) return draw();
        if (action.kind === "quit") return finish();
        void act(action);
      });
      options.signal?.addEventListener("abort", finish, { once: true });
      void refresh();
    });
  } finally {
    io.stdout.write("\x1b[?25h\x1b[?1049l");
  }
}

/** Sends one action; answers the status line to show. */
async function perform(calls: TriageCalls, action: Exclude<TriageAction, { kind: "quit" }>): Promise<string> {
  const { item } = action;
  // ApproveEgress and DismissEgress take exactly one id: the denial group's, or a lone request's.
  const target = item.kind === "request" ? { requestId: item.id } : { denialId: item.id };
  if (action.kind === "dismiss") {
    await calls.dismiss(egress.DismissEgressRequest.fromPartial(target));
    return `dismissed ${label(action)}`;
  }
  await calls.approve(
    egress.ApproveEgressRequest.fromPartial({
      ...target,
      scope: SCOPES[action.target],
      expiresAfterSeconds: action.expiresAfterSeconds,
    }),
  );
  const how = action.expiresAfterSeconds === 0 ? "permanently" : `for ${action.expiresAfterSeconds / 3600}h`;
  return `approved ${label(action)} for ${whom(action)} ${how}: live`;
}

const SCOPES = {
  agent: egress.ApprovalScope.APPROVAL_SCOPE_AGENT,
  project: egress.ApprovalScope.APPROVAL_SCOPE_PROJECT,
  global: egress.ApprovalScope.APPROVAL_SCOPE_GLOBAL,
} as const;

function label(action: Exclude<TriageAction, { kind: "quit" }>): string {
  return `${action.item.dst}:${action.item.port}`;
}

function whom(action: Extract<TriageAction, { kind: "approve" }>): string {
  const { agent, project } = action.item;
  if (action.target === "global") return "every agent";
  if (action.target === "project") return `project ${project === "" ? "(none)" : project}`;
  return `agent ${project === "" ? agent : `${project}.${agent}`}`;
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
