// The bearer token /metrics asks for: a file in the data dir, 0600, that only the daemon's user
// (and whoever it gives the file to, e.g. the Prometheus scraper) can read. /metrics shows agent
// counts, RPC rates and firewall activity; a second local user reaches the loopback health
// listener but not this file, so the token is what keeps them out.
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { closeSync, constants, fstatSync, openSync, readFileSync, writeSync } from "node:fs";

/** The token file's name in the data dir. */
export const METRICS_TOKEN_FILE = "metrics.token";

/** Shortest token accepted from a file someone wrote by hand (base64url of 24 random bytes). */
const MIN_TOKEN_CHARS = 32;

/** Why the metrics token could not be used. */
export type MetricsTokenReason = "token_file_insecure" | "token_file_invalid";

/** A metrics-token failure with a stable `reason`. */
export class MetricsTokenError extends Error {
  override readonly name = "MetricsTokenError";
  /** The stable machine-readable cause. */
  readonly reason: MetricsTokenReason;

  constructor(reason: MetricsTokenReason, message: string, options?: ErrorOptions) {
    super(message, options);
    this.reason = reason;
  }
}

/** Checks `Authorization: Bearer <token>` against the token, in constant time. */
export class MetricsToken {
  readonly #digest: Buffer;

  constructor(token: string) {
    this.#digest = digest(token);
  }

  /**
   * Reads the token from `file`, creating it (32 random bytes, base64url, mode 0600) when there is
   * none. A file that is not a regular file of ours, or is readable by group or others, or is too
   * short, refuses the start and is left as it is.
   */
  static loadOrCreate(file: string): MetricsToken {
    try {
      // O_EXCL: never through someone's symlink or over a file that appeared meanwhile.
      const fd = openSync(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
      const token = randomBytes(32).toString("base64url");
      try {
        writeSync(fd, `${token}\n`);
      } finally {
        closeSync(fd);
      }
      return new MetricsToken(token);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    // O_NOFOLLOW: a symlink planted at the path is refused (ELOOP), not followed.
    const fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      const st = fstatSync(fd);
      if (!st.isFile() || st.uid !== process.getuid?.() || (st.mode & 0o077) !== 0) {
        throw new MetricsTokenError(
          "token_file_insecure",
          `${file} must be a regular file owned by uid ${process.getuid?.()} with mode 0600 (it is mode ${(st.mode & 0o777).toString(8)}, uid ${st.uid})`,
        );
      }
      const token = readFileSync(fd, "utf8").trim();
      if (token.length < MIN_TOKEN_CHARS || /\s/.test(token)) {
        throw new MetricsTokenError(
          "token_file_invalid",
          `${file} must hold one token of at least ${MIN_TOKEN_CHARS} characters and no whitespace`,
        );
      }
      return new MetricsToken(token);
    } finally {
      closeSync(fd);
    }
  }

  /** True when `authorization` is `Bearer <the token>`. */
  accepts(authorization: string | undefined): boolean {
    if (authorization === undefined) return false;
    const match = /^Bearer ([^\s]+)$/i.exec(authorization);
    if (match === null) return false;
    // Digests are equal length, so timingSafeEqual never reveals the token's length either.
    return timingSafeEqual(digest(match[1]!), this.#digest);
  }
}

function digest(token: string): Buffer {
  return createHash("sha256").update(token).digest();
}
