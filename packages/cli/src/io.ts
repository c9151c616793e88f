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
  /** The controlling terminal, for full-screen commands (`firewall watch`); absent when stdin is not one. */
  readonly terminal?: Terminal;
}

/** A terminal in raw mode: its size, and its keys one at a time. */
export interface Terminal {
  /** Columns and rows now (they change when the window does). */
  size(): { cols: number; rows: number };
  /** Puts the terminal in raw mode and calls `onKey` per key (escape sequences whole) until the returned function is called. */
  keys(onKey: (key: string) => void): () => void;
}
