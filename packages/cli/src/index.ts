// @clawker/cli: the `clawker` command as a library (tests and embedding); the bin is main.ts.
export { run, resolveCommand, overviewHelp, COMMANDS, type Command, type Resolution } from "./cli.js";
export { ExitCode, CliError, type ExitCodeValue } from "./exit-codes.js";
export {
  helpText,
  parseFlags,
  parseDuration,
  parseAddress,
  EXIT_CODES_HELP,
  type CommandSpec,
  type FlagSpec,
  type FlagValues,
} from "./command-spec.js";
export { exitCodeOf, messageOf } from "./error-report.js";
export { agentRows, agentTable, type AgentRow } from "./commands/controlplane-agents.js";
export type { Io, Output } from "./io.js";
export { DAEMON_GLIBC_TUNABLES, withDaemonTunables } from "./daemon-env.js";
