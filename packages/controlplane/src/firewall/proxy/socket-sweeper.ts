// Destroys the proxy's agent-facing TCP sockets by session mark (`ss -K`, the kernel's
// SOCK_DESTROY over inet_diag: the agent gets a reset at once, HAProxy sees the error and closes
// the upstream side). A few tags are destroyed by their marks in one run; many (a bulk removal)
// are first narrowed to the tags that have a socket at all (`ss -tnHe`). Node has no netlink
// socket without a native module, so iproute2's `ss` does the netlink part. Both need
// CAP_NET_ADMIN; a socket that survives fails the sweep.
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { ProxyError } from "./errors.js";
import { SESSION_MARK_MASK, SESSION_MARK_PREFIX, markOf, tagOf } from "./session-tags.js";

/** Options of a SocketSweeper. */
export interface SocketSweeperOptions {
  /** The `ss` binary (iproute2). */
  readonly ss: string;
  /** The proxy's listen address: only sockets bound to it are ever touched. */
  readonly localAddress: string;
  /** Per `ss` run. */
  readonly timeoutMs: number;
}

// Marks per `ss -K` filter: its bytecode grows with each condition; a few hundred is cheap.
const MARKS_PER_RUN = 256;
const hex = (n: number): string => `0x${n.toString(16)}`;

/** Finds and destroys tagged sessions of the proxy. Stateless between calls. */
export class SocketSweeper {
  readonly #ss: string;
  readonly #localAddress: string;
  readonly #timeoutMs: number;

  constructor(options: SocketSweeperOptions) {
    this.#ss = options.ss;
    this.#localAddress = options.localAddress;
    this.#timeoutMs = options.timeoutMs;
  }

  /**
   * Rejects with `start_failed` unless this process has CAP_NET_ADMIN (HAProxy inherits it: SO_MARK
   * needs it, and without it every mark is silently not set) and `ss` lists sockets by mark.
   */
  async check(): Promise<void> {
    try {
      if (!(await hasNetAdmin())) throw new Error("needs CAP_NET_ADMIN (SO_MARK and SOCK_DESTROY)");
      await this.#tagged();
    } catch (err) {
      throw new ProxyError("start_failed", `session revocation unavailable: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  /**
   * Destroys every agent-facing socket whose tag is in `tags`; resolves with how many. Rejects
   * with `revoke_failed` when `ss` fails or a targeted socket is still there afterwards (no
   * CAP_NET_ADMIN, a kernel without SOCK_DESTROY).
   */
  async sweep(tags: ReadonlySet<number>): Promise<number> {
    if (tags.size === 0) return 0;
    const present =
      tags.size <= MARKS_PER_RUN ? tags : new Set((await this.#tagged()).filter((t) => tags.has(t)));
    if (present.size === 0) return 0;
    const marks = [...present].map(markOf);
    let destroyed = 0;
    let complained = false;
    for (let i = 0; i < marks.length; i += MARKS_PER_RUN) {
      const some = marks.slice(i, i + MARKS_PER_RUN).map((m) => `fwmark = ${hex(m)}`);
      const { stdout, stderr } = await this.#run([
        "-K",
        "-tnH",
        `( ${some.join(" or ")} ) and src ${this.#localAddress}`,
      ]);
      destroyed += stdout.split("\n").filter((l) => l.trim() !== "").length;
      // A refused SOCK_DESTROY is only a line on stderr ("RTNETLINK answers: ..."), exit 0.
      complained ||= stderr.trim() !== "";
    }
    if (!complained) return destroyed;
    const left = (await this.#tagged()).filter((t) => present.has(t)).length;
    if (left > 0) {
      throw new ProxyError(
        "revoke_failed",
        `${left} revoked session(s) could not be destroyed (SOCK_DESTROY needs CAP_NET_ADMIN)`,
      );
    }
    return destroyed;
  }

  /** The tag of every tagged socket on the listen address, one per socket. */
  async #tagged(): Promise<number[]> {
    const prefix = `${hex(SESSION_MARK_PREFIX)}/${hex(SESSION_MARK_MASK)}`;
    const { stdout } = await this.#run(["-tnHe", `fwmark = ${prefix} and src ${this.#localAddress}`]);
    const tags: number[] = [];
    for (const line of stdout.split("\n")) {
      const m = /\bfwmark:(0x[0-9a-f]+)/.exec(line);
      const tag = m?.[1] === undefined ? undefined : tagOf(Number(m[1]));
      if (tag !== undefined) tags.push(tag);
    }
    return tags;
  }

  #run(args: readonly string[]): Promise<{ stdout: string; stderr: string }> {
    return new Promise((resolve, reject) => {
      execFile(
        this.#ss,
        args,
        { timeout: this.#timeoutMs, maxBuffer: 64 * 1024 * 1024 },
        (err, stdout, stderr) => {
          if (err === null) {
            resolve({ stdout, stderr });
            return;
          }
          const code = (err as NodeJS.ErrnoException).code;
          const detail = code === "ENOENT" ? `${this.#ss} not found` : `${stderr}`.trim().slice(-500);
          reject(new ProxyError("revoke_failed", `ss failed: ${detail || err.message}`, { cause: err }));
        },
      );
    });
  }
}

// CAP_NET_ADMIN is capability 12 (linux/capability.h).
const CAP_NET_ADMIN = 12n;

/** True when this process's effective capabilities include CAP_NET_ADMIN. */
async function hasNetAdmin(): Promise<boolean> {
  const status = await readFile("/proc/self/status", "utf8");
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  return m?.[1] !== undefined && ((BigInt(`0x${m[1]}`) >> CAP_NET_ADMIN) & 1n) === 1n;
}
