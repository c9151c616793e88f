// A private Docker engine for tests: its own network namespace, data-root, exec-root and socket,
// all under one short temp dir, torn down completely by close() (HOST-NOTES "Docker engine").
import { setTimeout as sleep } from "node:timers/promises";
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { openSync, closeSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { Agent } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Docker from "dockerode";
import { findLeftovers, killProcesses, unmountUnder, type Leftovers, type RunRef } from "./leftovers.js";
import { addNetns, deleteNetns, netnsInode, netnsPath } from "./netns.js";
import { waitFor } from "./wait-for.js";

/** Options for PrivateDocker. */
export interface PrivateDockerOptions {
  /** Budget for dockerd to answer a ping (default 10 s; it takes ~0.5 s here). */
  readonly readyTimeoutMs?: number;
  /** Time between SIGTERM and SIGKILL when stopping dockerd (default 10 s). */
  readonly stopGraceMs?: number;
  /** Extra dockerd flags, appended last. */
  readonly extraArgs?: readonly string[];
}

/** The default bridge's address inside the daemon's netns (never routed anywhere else). */
export const DEFAULT_BRIDGE_CIDR = "10.201.0.1/24";
/** Where networks without an explicit subnet get theirs. Pick explicit subnets outside both. */
export const DEFAULT_ADDRESS_POOL = "base=10.202.0.0/16,size=24";

// Docker's own networks, which cannot be removed.
const PREDEFINED_NETWORKS = new Set(["bridge", "host", "none"]);
// sockaddr_un.sun_path is 108 bytes including the NUL; containerd nests sockets a few levels deep.
const MAX_SOCKET_PATH = 100;

/**
 * A dockerd started in its own network namespace (`clawker-test-<random>`), with every byte of
 * state under a temp dir. `start(signal)` resolves once the API answers; `close()` removes all
 * containers and networks, stops dockerd, unmounts what it left, deletes the netns and the dir.
 */
export class PrivateDocker {
  /** The network namespace name; `/run/netns/<netnsName>`. */
  readonly netnsName = `clawker-test-${randomBytes(4).toString("hex")}`;
  #dir: string | undefined;
  #docker: Docker | undefined;
  #agent: Agent | undefined;
  #child: ChildProcess | undefined;
  #exited: Promise<void> | undefined;
  #nsInode: number | undefined;
  #readyMs: number | undefined;
  #closing: Promise<void> | undefined;
  readonly #options: PrivateDockerOptions;

  constructor(options: PrivateDockerOptions = {}) {
    this.#options = options;
  }

  /** The temp dir holding all of the daemon's state (and nothing else). */
  get dir(): string {
    return must(this.#dir, "dir");
  }

  /** `unix://<dir>/docker.sock`, the value for DOCKER_HOST. */
  get dockerHost(): string {
    return `unix://${this.socketPath}`;
  }

  /** The daemon's API socket path. */
  get socketPath(): string {
    return join(this.dir, "docker.sock");
  }

  /** A dockerode client for this daemon (closed by close()). */
  get docker(): Docker {
    return must(this.#docker, "docker");
  }

  /** `/run/netns/<netnsName>`, for nsenter --net=. */
  get netnsPath(): string {
    return netnsPath(this.netnsName);
  }

  /** Milliseconds from spawning dockerd to its first successful ping. */
  get readyMs(): number {
    return must(this.#readyMs, "readyMs");
  }

  /** The dockerd process id. */
  get pid(): number {
    return must(this.#child?.pid, "pid");
  }

  /** Creates the netns and the temp dir, spawns dockerd and waits until it answers a ping. */
  async start(signal?: AbortSignal): Promise<void> {
    if (this.#dir !== undefined) throw new Error("PrivateDocker.start called twice");
    signal?.throwIfAborted();
    this.#dir = await mkdtemp(join(tmpdir(), "ckd-"));
    const dir = this.#dir;
    if (join(dir, "e/containerd/containerd.sock.ttrpc").length > MAX_SOCKET_PATH) {
      throw new Error(`temp dir ${dir} is too long for unix socket paths; set TMPDIR to something short`);
    }
    // Recorded for `sweep` (cli.ts): who owns this dir, and which netns belongs to it.
    await writeFile(join(dir, "owner"), `${process.pid}\n${this.netnsName}\n`);
    // Keep dockerd away from /etc/docker: an empty config, and its identity key in our dir.
    await writeFile(
      join(dir, "daemon.json"),
      JSON.stringify({ "deprecated-key-path": join(dir, "key.json") }),
    );
    await addNetns(this.netnsName);
    this.#nsInode = await netnsInode(this.netnsName);

    const args = [
      `--net=${this.netnsPath}`,
      "dockerd",
      `--config-file=${join(dir, "daemon.json")}`,
      `--data-root=${join(dir, "d")}`,
      `--exec-root=${join(dir, "e")}`,
      `--pidfile=${join(dir, "dockerd.pid")}`,
      `-H=unix://${this.socketPath}`,
      // The netns is empty but for lo: pin the bridge and pools anyway, so they are known.
      `--bip=${DEFAULT_BRIDGE_CIDR}`,
      `--default-address-pool=${DEFAULT_ADDRESS_POOL}`,
      // iptables rules land in the private netns; --internal networks depend on them.
      "--iptables=true",
      "--ip6tables=false",
      "--shutdown-timeout=2",
      ...(this.#options.extraArgs ?? []),
    ];
    const logFd = openSync(join(dir, "dockerd.log"), "a", 0o600);
    const started = performance.now();
    try {
      // nsenter execs dockerd (no fork for --net), so the child pid is dockerd's.
      this.#child = spawn("nsenter", args, { stdio: ["ignore", logFd, logFd] });
    } finally {
      closeSync(logFd);
    }
    const child = this.#child;
    this.#exited = new Promise<void>((resolve) => {
      child.once("exit", () => resolve());
      // spawn failures (nsenter missing) arrive as "error" without "exit".
      child.once("error", () => resolve());
    });
    // Last resort if the test process dies without close(): dockerd must not outlive it.
    process.once("exit", this.#killOnExit);

    this.#agent = new Agent({ keepAlive: true });
    this.#docker = new Docker({ socketPath: this.socketPath, agent: this.#agent } as Docker.DockerOptions);
    const docker = this.#docker;
    let exitedEarly = false;
    void this.#exited.then(() => (exitedEarly = true));
    let outcome: "ready" | "exited" | "aborted";
    try {
      outcome = await waitFor(
        async () => {
          if (signal?.aborted === true) return "aborted";
          if (exitedEarly) return "exited";
          await docker.ping();
          return "ready";
        },
        { timeoutMs: this.#options.readyTimeoutMs ?? 10_000, intervalMs: 10, what: "dockerd to answer ping" },
      );
    } catch (err) {
      throw new Error(`dockerd did not become ready${await this.#logTail()}`, { cause: err });
    }
    if (outcome === "aborted") signal?.throwIfAborted();
    if (outcome === "exited")
      throw new Error(`dockerd exited before it became ready${await this.#logTail()}`);
    this.#readyMs = performance.now() - started;
  }

  /**
   * Tears everything down: containers and networks, dockerd (SIGTERM, then SIGKILL after the
   * grace), stray processes of this run, mounts under the dir, the netns, the dir. Idempotent;
   * safe after a failed or partial start. Throws an AggregateError listing what it could not do.
   */
  close(): Promise<void> {
    this.#closing ??= this.#teardown();
    return this.#closing;
  }

  /** Identifies this run for findLeftovers (dir, netns name and inode). */
  get runRef(): RunRef {
    return { dir: this.#dir, netnsName: this.netnsName, netnsInode: this.#nsInode };
  }

  /** What of this daemon is still on the machine (for tests that assert a clean teardown). */
  leftovers(): Promise<Leftovers> {
    return findLeftovers(this.runRef);
  }

  async #teardown(): Promise<void> {
    const errors: unknown[] = [];
    const step = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        errors.push(new Error(`PrivateDocker.close: ${what}`, { cause: err }));
      }
    };
    const child = this.#child;
    const running = child?.pid !== undefined && child.exitCode === null && child.signalCode === null;
    if (running && this.#docker !== undefined) {
      await step("remove containers and networks", () => withTimeout(this.#removeAll(), 20_000));
    }
    if (running) await step("stop dockerd", () => this.#stopDockerd());
    process.removeListener("exit", this.#killOnExit);
    this.#agent?.destroy();
    const dir = this.#dir;
    const ref = this.runRef;
    // containerd, shims, docker-proxy, --network host containers, netns processes of this run.
    // Until none is left: a multithreaded process whose main thread already exited reads as a
    // zombie (so "gone") while its other threads still run and its command line still shows.
    // Done only after two clean scans 200 ms apart: a process can be missed by one scan (twice a
    // CI run found this run's dockerd command line after a clean scan: a child dockerd forked and
    // had not yet exec'd, or one whose command line read empty for a moment).
    await step("kill stray processes", async () => {
      const deadline = Date.now() + 15_000;
      let clean = 0;
      for (;;) {
        const { processes } = await findLeftovers(ref);
        if (processes.length === 0) {
          if (++clean === 2) return;
          await sleep(200);
          continue;
        }
        clean = 0;
        if (Date.now() > deadline)
          throw new Error(`still running: ${processes.map((p) => `${p.pid} (${p.status})`).join(", ")}`);
        await killProcesses(processes);
        await sleep(50);
      }
    });
    if (dir !== undefined) await step("unmount", () => unmountUnder(dir));
    await step("delete netns", () => deleteNetns(this.netnsName));
    if (dir !== undefined) {
      await step("remove temp dir", async () => {
        // Never rm -r across a mount point: that would delete what is mounted there.
        const left = await findLeftovers(ref);
        if (left.mounts.length > 0) throw new Error(`still mounted: ${left.mounts.join(", ")}`);
        await rm(dir, { recursive: true, force: true });
      });
    }
    if (errors.length > 0) throw new AggregateError(errors, "PrivateDocker.close left things behind");
  }

  async #removeAll(): Promise<void> {
    const docker = this.docker;
    const containers = await docker.listContainers({ all: true });
    await Promise.all(containers.map((c) => docker.getContainer(c.Id).remove({ force: true, v: true })));
    const networks = await docker.listNetworks();
    await Promise.all(
      networks.filter((n) => !PREDEFINED_NETWORKS.has(n.Name)).map((n) => docker.getNetwork(n.Id).remove()),
    );
  }

  async #stopDockerd(): Promise<void> {
    const child = must(this.#child, "child");
    const exited = must(this.#exited, "exited");
    child.kill("SIGTERM");
    const grace = this.#options.stopGraceMs ?? 10_000;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      exited.then(() => false),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), grace))),
    ]);
    clearTimeout(timer);
    if (timedOut) {
      child.kill("SIGKILL");
      await exited;
    }
  }

  async #logTail(): Promise<string> {
    const log = await readFile(join(this.dir, "dockerd.log"), "utf8").catch(() => "");
    return `; last log lines:\n${log.trimEnd().split("\n").slice(-15).join("\n")}`;
  }

  readonly #killOnExit = (): void => {
    this.#child?.kill("SIGKILL");
  };
}

/** The subset of node:test's TestContext / SuiteContext that startPrivateDocker needs. */
export interface AfterHook {
  after(fn: () => Promise<void> | void): void;
}

/**
 * Starts a PrivateDocker and registers its close() with `t.after`, so teardown runs even when
 * the test fails. Close is registered before start, so a failed start is cleaned up as well.
 */
export async function startPrivateDocker(
  t: AfterHook,
  options: PrivateDockerOptions & { signal?: AbortSignal } = {},
): Promise<PrivateDocker> {
  const daemon = new PrivateDocker(options);
  t.after(() => daemon.close());
  await daemon.start(options.signal);
  return daemon;
}

function must<T>(value: T | undefined, what: string): T {
  if (value === undefined) throw new Error(`PrivateDocker: ${what} is not available (not started?)`);
  return value;
}

async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>(
        (_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms)),
      ),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
