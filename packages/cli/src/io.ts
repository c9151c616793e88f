// What a command may touch of its process: output streams and the environment. Tests pass
// buffers; main passes the real process.

/** A place to write text; `isTTY` decides spinners and colours. */
export interface Output {
  write(text: string): void;
  readonly isTTY?: boolean;
}

/** The process surface a command uses. */
export interface Io {
  readonly stdout: Output;
  readonly stderr: Output;
  readonly env: NodeJS.ProcessEnv;
}
