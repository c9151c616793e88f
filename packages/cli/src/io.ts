// What a command may touch of its process: output streams and the environment. Tests pass
// buffers; main passes the real process.

/** A place to write text; `isTTY` decides spinners and colours. */
export interface Output {
  write(text: string): void;
  /** Writes raw bytes (a command's output); absent: callers decode UTF-8 and use `write`. */
  writeBytes?(data: Uint8Array): void;
  readonly isTTY?: boolean;
}

/** The process surface a command uses. */
export interface Io {
  readonly stdout: Output;
  readonly stderr: Output;
  readonly env: NodeJS.ProcessEnv;
  /**
   * Calls `handler` on Ctrl+C (SIGINT) instead of dying, until the returned function is called
   * (a command that must clean up first, e.g. `firewall bypass`). Absent: Ctrl+C kills as usual.
   */
  readonly onInterrupt?: (handler: () => void) => () => void;
}
