// What the supervising control plane hands this process through its environment: a lifeline (an
// fd whose EOF means the supervisor is gone, however it died) and an instance nonce that
// /health/ready echoes, so the supervisor can tell its own child from whatever else answers there.
import { Socket } from "node:net";
import { ConfigError } from "./errors.js";

/** The fd of the lifeline (set by the control plane's SubprocessManager). */
export const ENV_LIFELINE_FD = "CLAWKER_LIFELINE_FD";
/** The instance nonce /health/ready answers with (set by the control plane for each start). */
export const ENV_INSTANCE_NONCE = "CLAWKER_INSTANCE_NONCE";

const NONCE = /^[A-Za-z0-9_-]{16,128}$/;

/** The instance nonce from the environment, if any; a malformed one is a ConfigError. */
export function instanceNonceFromEnv(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const nonce = env[ENV_INSTANCE_NONCE];
  if (nonce === undefined || nonce === "") return undefined;
  if (!NONCE.test(nonce))
    throw new ConfigError([`${ENV_INSTANCE_NONCE}: must be 16-128 characters of [A-Za-z0-9_-]`]);
  return nonce;
}

/**
 * Watches the lifeline named in the environment, if any: `onGone` runs once when it reaches EOF
 * or fails (the supervisor's end was closed: it exited or was killed). The watch never keeps the
 * process alive on its own. A lifeline that is not an open socket or pipe is a ConfigError.
 */
export function watchLifeline(onGone: () => void, env: NodeJS.ProcessEnv = process.env): void {
  const text = env[ENV_LIFELINE_FD];
  if (text === undefined || text === "") return;
  const fd = Number(text);
  if (!Number.isInteger(fd) || fd < 3)
    throw new ConfigError([`${ENV_LIFELINE_FD}: must be a file descriptor >= 3`]);
  let socket: Socket;
  try {
    socket = new Socket({ fd, readable: true, writable: false });
  } catch (err) {
    throw new ConfigError([`${ENV_LIFELINE_FD}: fd ${fd} is not an open pipe or socket`], { cause: err });
  }
  let gone = false;
  const fire = (): void => {
    if (gone) return;
    gone = true;
    onGone();
  };
  socket.once("end", fire);
  socket.once("close", fire);
  socket.on("error", fire);
  // Nothing is ever sent; reading is what lets us see the EOF.
  socket.on("data", () => undefined);
  socket.unref();
}
