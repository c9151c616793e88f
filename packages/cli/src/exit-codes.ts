// The exit codes scripts can rely on, and the error type that carries one up to main.

/** Process exit codes of `clawker` (documented in --help and the README). */
export const ExitCode = {
  ok: 0,
  /** Anything else went wrong. */
  error: 1,
  /** Bad command line: unknown command or flag, missing or malformed value. */
  usage: 2,
  /** The control plane is not running, not reachable or not ready. */
  notRunning: 3,
  /** Authentication or authorization failed (token refused, UNAUTHENTICATED, PERMISSION_DENIED). */
  auth: 4,
  /** Something already exists: a trust set without --force, a running control plane on `up`. */
  exists: 5,
  /** The reader of clawker's output went away (`| head`): 128 + SIGPIPE, as for a C program. */
  brokenPipe: 141,
} as const;

/** One of the ExitCode values. */
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** An error the CLI reports as one line on stderr and exits with `exitCode`. */
export class CliError extends Error {
  override readonly name = "CliError";
  readonly exitCode: ExitCodeValue;
  /** Extra lines printed after the message (e.g. the tail of a log). */
  readonly details: readonly string[];

  constructor(
    exitCode: ExitCodeValue,
    message: string,
    options: { cause?: unknown; details?: readonly string[] } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.exitCode = exitCode;
    this.details = options.details ?? [];
  }
}
