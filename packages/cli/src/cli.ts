// The `clawker` command line: finds the command from the leading words, parses its flags, runs
// it, and turns every failure into one stderr line and a documented exit code.
import { EXIT_CODES_HELP, helpText, parseFlags, type CommandSpec, type FlagValues } from "./command-spec.js";
import { AUTH_INIT, authInit } from "./commands/auth-init.js";
import { CONTROLPLANE_AGENTS, controlplaneAgents } from "./commands/controlplane-agents.js";
import { CONTROLPLANE_DOWN, controlplaneDown } from "./commands/controlplane-down.js";
import { CONTROLPLANE_STATUS, controlplaneStatus } from "./commands/controlplane-status.js";
import { CONTROLPLANE_UP, controlplaneUp } from "./commands/controlplane-up.js";
import { EXEC, exec } from "./commands/exec.js";
import {
  FIREWALL_BYPASS,
  FIREWALL_DISABLE,
  FIREWALL_ENABLE,
  firewallBypass,
  firewallDisable,
  firewallEnable,
} from "./commands/firewall-agents.js";
import { FIREWALL_EVENTS, firewallEvents } from "./commands/firewall-events.js";
import {
  FIREWALL_ADD,
  FIREWALL_LIST,
  FIREWALL_PRUNE,
  FIREWALL_REMOVE,
  firewallAdd,
  firewallList,
  firewallPrune,
  firewallRemove,
} from "./commands/firewall-rules.js";
import {
  FIREWALL_DOWN,
  FIREWALL_RELOAD,
  FIREWALL_ROTATE_CA,
  FIREWALL_STATUS,
  FIREWALL_UP,
  firewallDown,
  firewallReload,
  firewallRotateCa,
  firewallStatus,
  firewallUp,
} from "./commands/firewall-stack.js";
import {
  FIREWALL_APPROVE,
  FIREWALL_DENIALS,
  FIREWALL_DISMISS,
  firewallApprove,
  firewallDenials,
  firewallDismiss,
} from "./commands/firewall-triage.js";
import { FIREWALL_WATCH, firewallWatch } from "./commands/firewall-watch.js";
import {
  JOB_LS,
  JOB_START,
  JOB_STATUS,
  JOB_STOP,
  JOB_WATCH,
  jobLs,
  jobStart,
  jobStatus,
  jobStop,
  jobWatch,
} from "./commands/job.js";
import { RM, rmAgent } from "./commands/rm.js";
import { RUN, parseRunArgs, runAgent } from "./commands/run.js";
import { COMPLETION, printCompletion } from "./completion.js";
import { reportError } from "./error-report.js";
import { CliError, ExitCode } from "./exit-codes.js";
import type { Io } from "./io.js";

/** A command and what runs it. */
export interface Command {
  readonly spec: CommandSpec;
  run(values: FlagValues, io: Io): Promise<number>;
  /** Parses the command's arguments when plain flags are not enough (positionals); default parseFlags. */
  parse?(spec: CommandSpec, args: readonly string[]): FlagValues;
}

/** Every command, in help order. */
export const COMMANDS: readonly Command[] = [
  { spec: AUTH_INIT, run: authInit },
  { spec: CONTROLPLANE_UP, run: controlplaneUp },
  { spec: CONTROLPLANE_DOWN, run: controlplaneDown },
  { spec: CONTROLPLANE_STATUS, run: controlplaneStatus },
  { spec: CONTROLPLANE_AGENTS, run: controlplaneAgents },
  { spec: RUN, run: runAgent, parse: parseRunArgs },
  { spec: RM, run: rmAgent },
  { spec: EXEC, run: exec },
  { spec: JOB_START, run: jobStart },
  { spec: JOB_STATUS, run: jobStatus },
  { spec: JOB_WATCH, run: jobWatch },
  { spec: JOB_STOP, run: jobStop },
  { spec: JOB_LS, run: jobLs },
  { spec: FIREWALL_UP, run: firewallUp },
  { spec: FIREWALL_DOWN, run: firewallDown },
  { spec: FIREWALL_STATUS, run: firewallStatus },
  { spec: FIREWALL_LIST, run: firewallList },
  { spec: FIREWALL_ADD, run: firewallAdd },
  { spec: FIREWALL_REMOVE, run: firewallRemove },
  { spec: FIREWALL_PRUNE, run: firewallPrune },
  { spec: FIREWALL_RELOAD, run: firewallReload },
  { spec: FIREWALL_ROTATE_CA, run: firewallRotateCa },
  { spec: FIREWALL_ENABLE, run: firewallEnable },
  { spec: FIREWALL_DISABLE, run: firewallDisable },
  { spec: FIREWALL_BYPASS, run: firewallBypass },
  { spec: FIREWALL_EVENTS, run: firewallEvents },
  { spec: FIREWALL_DENIALS, run: firewallDenials },
  { spec: FIREWALL_APPROVE, run: firewallApprove },
  { spec: FIREWALL_DISMISS, run: firewallDismiss },
  { spec: FIREWALL_WATCH, run: firewallWatch },
  // Reads COMMANDS when it runs, so the script covers every command, itself included.
  {
    spec: COMPLETION,
    run: (values, io) =>
      Promise.resolve(
        printCompletion(
          values,
          io,
          COMMANDS.map((c) => c.spec),
        ),
      ),
  },
];

const OVERVIEW_EXAMPLES = [
  "clawker auth init",
  "clawker controlplane up",
  "clawker controlplane status --format json",
  "clawker run --agent dev my-agent-image",
  "clawker controlplane agents",
  "clawker exec --agent dev -- ls -la",
  "clawker job start --agent dev --cpu 0.5 --memory 512M -- make test",
  "clawker firewall up",
  "clawker firewall add registry.npmjs.org",
  "clawker rm --agent dev",
  "clawker controlplane down",
  "source <(clawker completion bash)",
];

/** The top-level help, or a group's (`clawker controlplane --help`). */
export function overviewHelp(group?: string): string {
  const cmds = COMMANDS.filter((c) => group === undefined || c.spec.words[0] === group);
  const width = Math.max(...cmds.map((c) => c.spec.words.join(" ").length)) + 2;
  return [
    `usage: clawker ${group ?? "<command>"} ${group === undefined ? "" : "<command> "}[flags]`,
    "",
    "The clawker control plane CLI: mints the trust material, runs and queries the daemon, runs agents,\nmanages their egress firewall.",
    "",
    "commands:",
    ...cmds.map((c) => `  ${c.spec.words.join(" ").padEnd(width)}${c.spec.summary}`),
    "",
    "Run `clawker <command> --help` for a command's flags and examples.",
    "",
    "examples:",
    ...(group === undefined ? OVERVIEW_EXAMPLES : cmds.map((c) => c.spec.examples[0]!)).map((e) => `  ${e}`),
    "",
    EXIT_CODES_HELP,
    "",
  ].join("\n");
}

/** What the argument vector asks for: a command with its remaining args, help, or a usage error. */
export type Resolution =
  { kind: "command"; command: Command; args: string[] } | { kind: "help"; text: string; exitCode: number };

/** Finds the command named by the leading words of `argv` (pure; no I/O). */
export function resolveCommand(argv: readonly string[]): Resolution {
  const wantsHelp = argv.includes("--help") || argv.includes("-h");
  const words = argv.filter((a) => !a.startsWith("-"));
  for (const command of COMMANDS) {
    const n = command.spec.words.length;
    const firstWords = argv.slice(0, n);
    if (firstWords.length === n && firstWords.every((w, i) => w === command.spec.words[i])) {
      return { kind: "command", command, args: argv.slice(n) };
    }
  }
  const group =
    argv[0] !== undefined && COMMANDS.some((c) => c.spec.words[0] === argv[0]) ? argv[0] : undefined;
  if (argv.length === 0 || (argv.length === 1 && wantsHelp)) {
    return { kind: "help", text: overviewHelp(), exitCode: wantsHelp ? ExitCode.ok : ExitCode.usage };
  }
  if (group !== undefined && (argv.length === 1 || (wantsHelp && words.length === 1))) {
    return { kind: "help", text: overviewHelp(group), exitCode: wantsHelp ? ExitCode.ok : ExitCode.usage };
  }
  const unknown = group === undefined ? argv[0]! : `${group} ${argv[1] ?? ""}`.trim();
  throw new CliError(ExitCode.usage, `unknown command ${JSON.stringify(unknown)} (see clawker --help)`);
}

/** Runs the CLI with `argv` (without node and script) and returns the exit code. */
export async function run(argv: readonly string[], io: Io): Promise<number> {
  const debug = argv.includes("--debug");
  try {
    const resolved = resolveCommand(argv);
    if (resolved.kind === "help") {
      (resolved.exitCode === ExitCode.ok ? io.stdout : io.stderr).write(resolved.text);
      return resolved.exitCode;
    }
    const { command, args } = resolved;
    const values = (command.parse ?? parseFlags)(command.spec, args);
    if (values["help"] === true) {
      io.stdout.write(helpText(command.spec));
      return ExitCode.ok;
    }
    return await command.run(values, io);
  } catch (err) {
    const code = reportError(err, io.stderr, debug);
    if (code === ExitCode.usage && !debug) io.stderr.write("run with --help for usage\n");
    return code;
  }
}
