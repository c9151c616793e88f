// Progress while waiting: a spinner on a terminal, plain lines (only on change) otherwise.
import type { Output } from "./io.js";

const FRAMES = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

/** A progress reporter; `stop()` clears the spinner line. */
export interface Progress {
  update(text: string): void;
  stop(): void;
}

/** Starts a progress reporter on `out`. */
export function startProgress(out: Output, initial: string): Progress {
  const started = Date.now();
  let text = initial;
  if (out.isTTY !== true) {
    out.write(`${initial}\n`);
    let last = initial;
    return {
      update(next) {
        if (next === last) return;
        last = next;
        out.write(`${next}\n`);
      },
      stop() {},
    };
  }
  let frame = 0;
  const draw = (): void => {
    const secs = ((Date.now() - started) / 1000).toFixed(1);
    out.write(`\r\x1b[K${FRAMES[frame++ % FRAMES.length]} ${text} (${secs}s)`);
  };
  draw();
  const timer = setInterval(draw, 100);
  return {
    update(next) {
      text = next;
    },
    stop() {
      clearInterval(timer);
      out.write("\r\x1b[K");
    },
  };
}
