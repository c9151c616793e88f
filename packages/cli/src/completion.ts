// `clawker completion bash|zsh`: shell completion scripts generated from the command specs, so a
// new command or flag completes without anyone editing a script.
import {
  COMMON_FLAGS,
  positionals,
  type CommandSpec,
  type FlagSpec,
  type FlagValues,
} from "./command-spec.js";
import { CliError, ExitCode } from "./exit-codes.js";
import type { Io } from "./io.js";

/** The spec of `clawker completion`. */
export const COMPLETION: CommandSpec = {
  words: ["completion"],
  summary: "Print a shell completion script for bash or zsh.",
  description:
    "The script completes commands, flags and flag values (text|json choices, directories for DIR,\n" +
    "files for FILE and PATH). Install it where the shell looks (examples), or load it into the\n" +
    "current shell: source <(clawker completion bash).",
  flags: {},
  positionals: "bash|zsh",
  examples: [
    "clawker completion bash > ~/.local/share/bash-completion/completions/clawker",
    'clawker completion zsh > "${fpath[1]}/_clawker"',
  ],
};

/** The shells a completion script can be generated for. */
export const SHELLS = ["bash", "zsh"] as const;
/** One of SHELLS. */
export type Shell = (typeof SHELLS)[number];

/** Runs `completion`: writes the script for the shell named by the one positional word. */
export function printCompletion(values: FlagValues, io: Io, specs: readonly CommandSpec[]): number {
  const words = positionals(values);
  const shell = words[0];
  if (words.length !== 1 || !SHELLS.includes(shell as Shell)) {
    throw new CliError(ExitCode.usage, `completion needs one shell: ${SHELLS.join(" or ")}`);
  }
  io.stdout.write(completionScript(shell as Shell, specs));
  return ExitCode.ok;
}

/** The completion script for `shell` covering `specs` (plus the flags every command takes). */
export function completionScript(shell: Shell, specs: readonly CommandSpec[]): string {
  return shell === "bash" ? bashScript(specs) : zshScript(specs);
}

/** How a flag's value completes: fixed choices, directories, files, or nothing. */
type ValueKind =
  { kind: "choices"; choices: string[] } | { kind: "dirs" } | { kind: "files" } | { kind: "none" };

function valueKind(flag: FlagSpec): ValueKind {
  const placeholder = flag.value ?? "";
  if (placeholder.includes("|")) return { kind: "choices", choices: placeholder.split("|") };
  if (placeholder === "DIR") return { kind: "dirs" };
  if (placeholder === "FILE" || placeholder === "PATH") return { kind: "files" };
  return { kind: "none" };
}

/** Every flag of a command as `--name` (and `-x`), the command's own first. */
function flagsOf(spec: CommandSpec): Array<[string, FlagSpec]> {
  return Object.entries({ ...spec.flags, ...COMMON_FLAGS });
}

/** The words that may follow `prefix` (a command path) on the way to a full command. */
function nextWords(specs: readonly CommandSpec[], prefix: readonly string[]): string[] {
  const next = new Set<string>();
  for (const s of specs) {
    if (s.words.length > prefix.length && prefix.every((w, i) => s.words[i] === w)) {
      next.add(s.words[prefix.length]!);
    }
  }
  return [...next];
}

/** Every proper prefix of a command path (the groups), the empty one included. */
function groups(specs: readonly CommandSpec[]): string[][] {
  const seen = new Map<string, string[]>();
  for (const s of specs) {
    for (let n = 0; n < s.words.length; n++) seen.set(s.words.slice(0, n).join(" "), s.words.slice(0, n));
  }
  return [...seen.values()];
}

/** Commands with the longest word list first, so `a b` is tried before a command `a`. */
function longestFirst(specs: readonly CommandSpec[]): CommandSpec[] {
  return [...specs].sort((a, b) => b.words.length - a.words.length);
}

/** A command's positional choices (`bash|zsh`), or undefined when its positionals are free words. */
function positionalChoices(spec: CommandSpec): string[] | undefined {
  const p = spec.positionals;
  return p !== undefined && /^[a-z0-9-]+(\|[a-z0-9-]+)+$/.test(p) ? p.split("|") : undefined;
}

// Words from our own specs only, but quote anyway: the script is shell code.
function shQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** A case pattern matching the command's words alone or followed by more words. */
function pathPattern(spec: CommandSpec): string {
  const words = spec.words.join(" ");
  return `${shQuote(words)}|${shQuote(words + " ")}*`;
}

function bashCompgen(kind: ValueKind): string {
  switch (kind.kind) {
    case "choices":
      return `COMPREPLY=($(compgen -W ${shQuote(kind.choices.join(" "))} -- "$cur"))`;
    case "dirs":
      return 'COMPREPLY=($(compgen -d -- "$cur"))';
    case "files":
      return 'COMPREPLY=($(compgen -f -- "$cur"))';
    case "none":
      return "COMPREPLY=()";
  }
}

function bashScript(specs: readonly CommandSpec[]): string {
  const commandCases = longestFirst(specs).map((s) => {
    const flags = flagsOf(s);
    const names = flags.flatMap(([name, f]) => [
      `--${name}`,
      ...(f.short === undefined ? [] : [`-${f.short}`]),
    ]);
    const valueCases = flags
      .filter(([, f]) => f.type === "string")
      .map(([name, f]) => {
        const pattern = [`--${name}`, ...(f.short === undefined ? [] : [`-${f.short}`])].join("|");
        return `        ${pattern}) ${bashCompgen(valueKind(f))}; return ;;`;
      });
    const choices = positionalChoices(s);
    return [
      `    ${pathPattern(s)})`,
      '      case "$prev" in',
      ...valueCases,
      "      esac",
      ...(choices === undefined
        ? []
        : [`      [[ "$cur" != -* ]] && { ${bashCompgen({ kind: "choices", choices })}; return; }`]),
      `      COMPREPLY=($(compgen -W ${shQuote(names.join(" "))} -- "$cur")); return ;;`,
    ].join("\n");
  });
  const groupCases = groups(specs).map((g) => {
    const words = [...nextWords(specs, g), ...(g.length === 0 ? ["--help"] : [])];
    return `    ${shQuote(g.join(" "))}) ${bashCompgen({ kind: "choices", choices: words })} ;;`;
  });
  return `# bash completion for clawker (generated by \`clawker completion bash\`; do not edit)
_clawker() {
  local cur prev path i
  cur="\${COMP_WORDS[COMP_CWORD]}"
  prev="\${COMP_WORDS[COMP_CWORD-1]}"
  # The command is the leading words before the first flag, as clawker itself resolves it.
  path=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    case "\${COMP_WORDS[i]}" in -*) break ;; esac
    path="\${path:+$path }\${COMP_WORDS[i]}"
  done
  COMPREPLY=()
  case "$path" in
${commandCases.join("\n")}
${groupCases.join("\n")}
  esac
}
complete -F _clawker clawker
`;
}

// A zsh _arguments spec: --name[description]:placeholder:action. Brackets, colons and
// backslashes in the description would end its fields early.
function zshFlag(name: string, f: FlagSpec): string[] {
  const description = f.description.split(" (default")[0]!.replaceAll(/[[\]:\\]/g, (c) => `\\${c}`);
  const k = valueKind(f);
  const action =
    k.kind === "choices"
      ? `(${k.choices.join(" ")})`
      : k.kind === "dirs"
        ? "_files -/"
        : k.kind === "files"
          ? "_files"
          : " ";
  const arg = f.type === "boolean" ? "" : `:${(f.value ?? "value").replaceAll(":", "")}:${action}`;
  const repeat = f.multiple === true ? "*" : "";
  const forms = [`--${name}`, ...(f.short === undefined ? [] : [`-${f.short}`])];
  return forms.map((form) => shQuote(`${repeat}${form}[${description}]${arg}`));
}

function zshScript(specs: readonly CommandSpec[]): string {
  const commandCases = longestFirst(specs).map((s) => {
    const choices = positionalChoices(s);
    const rest =
      s.positionals === undefined
        ? []
        : [shQuote(choices === undefined ? "*:argument:_files" : `1:argument:(${choices.join(" ")})`)];
    const args = [...flagsOf(s).flatMap(([name, f]) => zshFlag(name, f)), ...rest];
    return [
      `    ${pathPattern(s)})`,
      // _arguments reads words from the second one: drop the command's own words first.
      `      words=(clawker "\${(@)words[${s.words.length + 2},-1]}"); (( CURRENT -= ${s.words.length} ))`,
      `      _arguments -s \\\n        ${args.join(" \\\n        ")}`,
      "      return ;;",
    ].join("\n");
  });
  const groupCases = groups(specs).map(
    (g) => `    ${shQuote(g.join(" "))}) compadd -- ${nextWords(specs, g).map(shQuote).join(" ")} ;;`,
  );
  return `#compdef clawker
# zsh completion for clawker (generated by \`clawker completion zsh\`; do not edit)
_clawker() {
  local path_words i
  # The command is the leading words before the first flag, as clawker itself resolves it.
  path_words=""
  for (( i = 2; i < CURRENT; i++ )); do
    [[ \${words[i]} == -* ]] && break
    path_words="\${path_words:+$path_words }\${words[i]}"
  done
  case "$path_words" in
${commandCases.join("\n")}
${groupCases.join("\n")}
  esac
}
# Autoloaded from $fpath the file is the function's body; sourced, it registers the function.
if [[ "\${funcstack[1]}" == _clawker ]]; then _clawker "$@"; else compdef _clawker clawker; fi
`;
}
