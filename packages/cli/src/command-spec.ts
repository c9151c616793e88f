// How a command describes itself: its words, flags, help text and examples. Parsing and --help
// both come from this one description, so they cannot drift apart.
import { parseArgs } from "node:util";
import { CliError, ExitCode } from "./exit-codes.js";

/** One flag of a command. */
export interface FlagSpec {
  readonly type: "string" | "boolean";
  readonly short?: string;
  readonly multiple?: boolean;
  /** Placeholder shown in help, e.g. `DIR`. */
  readonly value?: string;
  readonly description: string;
}

/** A command: `words` are what the user types after `clawker` (e.g. `["controlplane", "up"]`). */
export interface CommandSpec {
  readonly words: readonly string[];
  readonly summary: string;
  readonly description?: string;
  readonly flags: Readonly<Record<string, FlagSpec>>;
  /**
   * Words the command takes after its flags (shown in help, e.g. `-- CMD [ARGS...]`); they land in
   * `values[POSITIONALS]`. Absent: any positional word is a usage error.
   */
  readonly positionals?: string;
  readonly examples: readonly string[];
}

/** The FlagValues key of a command's positional words (not a valid flag name). */
export const POSITIONALS = "--";

/** Flags every command takes. */
export const COMMON_FLAGS: Readonly<Record<string, FlagSpec>> = {
  help: { type: "boolean", short: "h", description: "show this help" },
  debug: { type: "boolean", description: "print stack traces and causes on errors" },
};

/** The `--format` flag of commands that print results. */
export const FORMAT_FLAG: FlagSpec = {
  type: "string",
  value: "text|json",
  description: "output format (default text)",
};

/** Parsed flag values: strings, booleans, or string lists for `multiple` flags. */
export type FlagValues = Record<string, string | boolean | string[] | undefined>;

/** Parses `args` (the words after the command's own) against `spec`; usage errors exit 2. */
export function parseFlags(spec: CommandSpec, args: readonly string[]): FlagValues {
  const options = Object.fromEntries(
    Object.entries({ ...spec.flags, ...COMMON_FLAGS }).map(([name, f]) => [
      name,
      {
        type: f.type,
        ...(f.short === undefined ? {} : { short: f.short }),
        ...(f.multiple === true ? { multiple: true } : {}),
      },
    ]),
  );
  let parsed;
  try {
    parsed = parseArgs({ args: [...args], options, strict: true, allowPositionals: true });
  } catch (err) {
    // Node's messages go on with advice about `--`; the first sentence is the useful part.
    const text = err instanceof Error ? err.message : String(err);
    throw new CliError(ExitCode.usage, text.split(". To specify")[0]!, { cause: err });
  }
  if (parsed.positionals.length > 0 && parsed.values["help"] !== true && spec.positionals === undefined) {
    throw new CliError(ExitCode.usage, `unexpected argument ${JSON.stringify(parsed.positionals[0])}`);
  }
  // parseArgs returns a null-prototype object; copy it into a plain one.
  const values: FlagValues = { ...(parsed.values as FlagValues) };
  if (spec.positionals !== undefined) values[POSITIONALS] = parsed.positionals;
  const format = values["format"];
  if (format !== undefined && format !== "text" && format !== "json") {
    throw new CliError(ExitCode.usage, `--format must be text or json, got ${JSON.stringify(format)}`);
  }
  return values;
}

/** The help text of one command. */
export function helpText(spec: CommandSpec): string {
  const all = { ...spec.flags, ...COMMON_FLAGS };
  const rows = Object.entries(all).map(([name, f]) => {
    const left = `${f.short === undefined ? "    " : `-${f.short}, `}--${name}${f.value === undefined ? "" : ` ${f.value}`}`;
    return [left, `${f.description}${f.multiple === true ? " (repeatable)" : ""}`] as const;
  });
  const width = Math.max(...rows.map(([l]) => l.length)) + 2;
  const lines = [
    `usage: clawker ${spec.words.join(" ")} [flags]${spec.positionals === undefined ? "" : ` ${spec.positionals}`}`,
    "",
    spec.summary,
    ...(spec.description === undefined ? [] : ["", spec.description]),
    "",
    "flags:",
    ...rows.map(([l, r]) => `  ${l.padEnd(width)}${r}`),
    "",
    "examples:",
    ...spec.examples.map((e) => `  ${e}`),
    "",
    EXIT_CODES_HELP,
  ];
  return lines.join("\n") + "\n";
}

/** The exit-code table, shown in every help text. */
export const EXIT_CODES_HELP = `exit codes:
    0  ok
    1  error
    2  usage error (unknown command or flag, bad value)
    3  control plane not running, unreachable or not ready
    4  authentication or authorization failed
    5  already exists (trust set without --force, control plane already running)
  141  the reader of its output went away (e.g. clawker exec ... | head)`;

/** Parses a duration: `30s`, `500ms`, `2m`, or a bare number of seconds. */
export function parseDuration(flag: string, text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text.trim());
  if (m === null)
    throw new CliError(
      ExitCode.usage,
      `--${flag} must be a duration like 30s, 500ms or 2m, got ${JSON.stringify(text)}`,
    );
  const n = Number(m[1]);
  const ms = m[2] === "ms" ? n : m[2] === "m" ? n * 60_000 : n * 1000;
  if (ms <= 0) throw new CliError(ExitCode.usage, `--${flag} must be positive`);
  return Math.round(ms);
}

/** Checks a `host:port` (or `[v6]:port`) address. */
export function parseAddress(flag: string, text: string): { host: string; port: number; text: string } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  const port = m === null ? NaN : Number(m[3]);
  if (m === null || port > 65535) {
    throw new CliError(ExitCode.usage, `--${flag} must be host:port, got ${JSON.stringify(text)}`);
  }
  return { host: (m[1] ?? m[2])!, port, text };
}

/** A string flag's value or the default. */
export function str(values: FlagValues, name: string, fallback: string): string {
  const v = values[name];
  return typeof v === "string" ? v : fallback;
}

/** A command's positional words (empty when there are none). */
export function positionals(values: FlagValues): string[] {
  const v = values[POSITIONALS];
  return Array.isArray(v) ? v : [];
}

/** A string flag's value or undefined. */
export function optStr(values: FlagValues, name: string): string | undefined {
  const v = values[name];
  return typeof v === "string" ? v : undefined;
}
