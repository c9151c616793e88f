// The egress enforcement of agent containers: runs the eBPF manager as a supervised helper,
// attaches its programs on the agents' cgroup parent before any agent starts, enrols each agent
// container (Docker events, and the feeder's reconcile after a restart), and puts bypasses, routes
// and DNS answers into the kernel. See README.md ("Enforcement").
import { readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { join } from "node:path";
import { isAgentLabels, type ContainerEvent, type Topic } from "@clawker/overseer";
import type { Logger } from "pino";
import {
  cgroupDriverOf,
  cgroupLayout,
  CgroupLayoutError,
  type CgroupDriver,
  type CgroupLayout,
} from "./cgroup-layout.js";
import { EbpfClient } from "./client.js";
import { EbpfError, EnforcementError } from "./errors.js";
import { findBpfMounts, type BpfMounts } from "./mounts.js";
import type { ContainerConfig, DnsEntry, Dump, GatewayPort, Route } from "./protocol.js";

/** The helper's name in the supervisor (logs, crash reports, the helper record). */
export const MANAGER_HELPER = "ebpf-manager";

/** Starts a helper process (the daemon's SubprocessManager). */
export interface HelperHost {
  start(name: string, command: { readonly file: string; readonly args: readonly string[] }): Promise<unknown>;
}

/**
 * Where steered sockets go: the proxy and DNS gate addresses and ports, the agents' subnet, and
 * the gateway (refused) with the TCP ports of it that pass (`gatewayPorts`).
 */
export type EnforcementTargets = Omit<ContainerConfig, "mark"> & {
  readonly gatewayPorts?: readonly number[];
};

/**
 * Targets while no firewall stack is up: every steered connection goes to port 1 on the agent's
 * own loopback, where nothing listens, so it is refused; nothing leaves (fail closed).
 */
export const CLOSED_TARGETS: EnforcementTargets = Object.freeze({
  proxy: "127.0.0.1",
  dns: "127.0.0.1",
  dnsPort: 1,
  catchallPort: 1,
});

/** The container modes the enforcement puts into effect (the firewall's ContainerMode). */
export type EnforcedMode = "enforced" | "disabled" | "bypass";

/** Options of an Enforcement. */
export interface EnforcementOptions {
  /** The manager binary: a path, or a name looked up on PATH (`ebpf-manager`). */
  readonly manager: string;
  /** Its control socket (in the daemon's 0700 data dir). */
  readonly socketPath: string;
  /** Pin directory; default `<bpffs mount>/clawker`. */
  readonly pinDir?: string | undefined;
  /** The agents' cgroup parent name (`clawker`: `/clawker` for cgroupfs, `clawker.slice` for systemd). */
  readonly cgroupParent: string;
  /** Docker's cgroup driver, or `auto` to ask Docker (`GET /info`). */
  readonly cgroupDriver: "auto" | CgroupDriver;
  /**
   * The egress proxy's cgroup, where the manager answers `getsockopt(SO_ORIGINAL_DST)` (absolute,
   * or relative to the cgroup2 mount); default the daemon's own, which HAProxy, our child, shares.
   */
  readonly proxyCgroup?: string | undefined;
  /** SO_MARK of the firewall's own sockets (they pass); 0: none is exempt. */
  readonly mark: number;
  /** Where steered sockets go until setTargets() (default CLOSED_TARGETS). */
  readonly targets?: EnforcementTargets;
  readonly host: HelperHost;
  readonly docker: { info(signal?: AbortSignal): Promise<{ readonly CgroupDriver?: unknown }> };
  /** The overseer's containers topic (the events feeder publishes on it). */
  readonly containers: Pick<Topic<ContainerEvent>, "subscribe">;
  /** Raises the start-up SOS while bpffs or cgroup2 is missing (WatchSOS). */
  readonly sos?: {
    raise(sos: { readonly message: string; readonly kind: "bpffs_delegation" }): void;
    clear(): void;
  };
  /** How long start() waits for bpffs and cgroup2 to appear (SOS raised meanwhile); default 30 s. */
  readonly mountTimeoutMs?: number;
  /** How long start() waits for the manager's socket; default 10 s. */
  readonly readyTimeoutMs?: number;
  /** Mount lookup (tests); default /proc/mounts. */
  readonly mounts?: () => BpfMounts;
  readonly log: Logger;
}

/** What the enforcement knows about one enrolled agent container. */
export interface EnrolledContainer {
  readonly containerId: string;
  readonly cgroupId: string;
  readonly path: string;
  /** True when the cgroup is outside the parent (own links: enforced only from its enrolment on). */
  readonly outsideParent: boolean;
}

const MOUNT_POLL_MS = 500;
const READY_POLL_MS = 50;
const DOCKER_INFO_TIMEOUT_MS = 10_000;

/** The eBPF enforcement of agent egress (see the file comment). */
export class Enforcement {
  readonly #o: EnforcementOptions;
  readonly #log: Logger;
  readonly #enrolled = new Map<string, EnrolledContainer>();
  #targets: EnforcementTargets;
  #client: EbpfClient | undefined;
  #layout: CgroupLayout | undefined;
  #cgroup2: string | undefined;
  #pinDir: string | undefined;
  #stop: AbortController | undefined;
  readonly #clientLife = new AbortController();
  /** Manager operations in order: an enrol, its unenrol and a bypass never overtake each other. */
  #chain: Promise<unknown> = Promise.resolve();
  #closed: Promise<void> | undefined;

  constructor(options: EnforcementOptions) {
    this.#o = options;
    this.#log = options.log.child({ component: "enforcement" });
    this.#targets = options.targets ?? CLOSED_TARGETS;
  }

  /** The layout in use (after start): the `--cgroup-parent` agents must be started with. */
  get layout(): CgroupLayout | undefined {
    return this.#layout;
  }

  /** The pin directory in use (after start). */
  get pinDir(): string | undefined {
    return this.#pinDir;
  }

  /** The manager's control socket (the DNS gate process connects to it to record its answers). */
  get socketPath(): string {
    return this.#o.socketPath;
  }

  /** The manager's client (after start), e.g. for the DNS gate's cache writer. */
  get client(): EbpfClient {
    if (this.#client === undefined) throw new EnforcementError("not_running", "enforcement not started");
    return this.#client;
  }

  /** Enrolled agent containers, by container id. */
  enrolled(): EnrolledContainer[] {
    return [...this.#enrolled.values()];
  }

  /**
   * Start-up step 5: bpffs and cgroup2 present (else the SOS, then a failure), the parent's
   * layout, the manager started and answering, the parent enrolled, stale bypasses cleared, then
   * agent containers followed. Rejects with EnforcementError (start-up fails, nothing is let out).
   */
  async start(signal: AbortSignal): Promise<void> {
    const o = this.#o;
    this.#stop = new AbortController();
    const stop = AbortSignal.any([signal, this.#stop.signal]);
    const mounts = await this.#waitForMounts(stop);
    this.#cgroup2 = mounts.cgroup2;
    this.#pinDir = o.pinDir ?? join(mounts.bpffs, "clawker");
    const driver = o.cgroupDriver === "auto" ? await this.#dockerDriver(stop) : o.cgroupDriver;
    try {
      this.#layout = cgroupLayout(driver, o.cgroupParent);
    } catch (err) {
      if (err instanceof CgroupLayoutError)
        throw new EnforcementError("invalid_cgroup_parent", err.message, { cause: err });
      throw err;
    }
    const parent = join(mounts.cgroup2, this.#layout.parentPath);
    const proxyCgroup = o.proxyCgroup ?? ownCgroup(mounts.cgroup2);
    await o.host.start(MANAGER_HELPER, {
      file: o.manager,
      args: [
        "serve",
        "--socket",
        o.socketPath,
        "--pin-dir",
        this.#pinDir,
        "--cgroup-parent",
        parent,
        ...(proxyCgroup === undefined ? [] : ["--proxy-cgroup", proxyCgroup]),
      ],
    });
    this.#client = await this.#connect(stop);
    const status = await this.#client.status();
    // Exemptions of a previous run go first: the firewall sets its own once it knows the gateway.
    await this.#client.gatewayPorts(this.#gatewayPorts());
    await this.#client.enroll({ cgroup: parent }, this.#config());
    const stale = (await this.#client.dump()).bypass;
    // A restart clears every bypass (API.md): the timers that would end them died with the old process.
    for (const b of stale) await this.#client.unbypass({ cgroupId: b.cgroupId });
    await this.#client.gc();
    this.#log.info(
      {
        event: "enforcement_up",
        parent,
        dockerParent: this.#layout.dockerParent,
        driver,
        pinDir: this.#pinDir,
        parentCgroupId: status.parentCgroupId,
        proxyCgroup: proxyCgroup ?? null,
        staleBypasses: stale.length,
        targets: this.#targets,
      },
      "agent egress enforced on the cgroup parent",
    );
    o.containers.subscribe((event) => this.#onContainerEvent(event), { signal: stop, name: "enforcement" });
  }

  /**
   * Points the parent and every enrolled container at new targets (the firewall's stack came up,
   * or went down: CLOSED_TARGETS). Resolves once the kernel has them.
   */
  setTargets(targets: EnforcementTargets): Promise<void> {
    return this.#serial(async () => {
      this.#targets = targets;
      const client = this.#running();
      // Before the configs: a gateway port leaving the set is refused before anything else moves.
      await client.gatewayPorts(this.#gatewayPorts());
      await client.enroll({ cgroup: this.#parentPath() }, this.#config());
      for (const c of this.#enrolled.values()) {
        await client.enroll({ cgroupId: c.cgroupId }, this.#config()).catch((err: unknown) => {
          if (!(err instanceof EbpfError && err.reason === "not_found")) throw err;
        });
      }
      this.#log.info(
        { event: "enforcement_targets", targets, containers: this.#enrolled.size },
        "enforcement targets set",
      );
    });
  }

  /** Enrols one agent container (by full id) with the current targets; what the events do. */
  enroll(containerId: string): Promise<EnrolledContainer | undefined> {
    return this.#serial(() => this.#enroll(containerId));
  }

  /** Removes one container's enrolment (config, bypass, own links). */
  unenroll(containerId: string): Promise<void> {
    return this.#serial(() => this.#unenroll(containerId, "removed"));
  }

  /**
   * Puts a firewall mode into effect for a container (the firewall's ModeEnforcer): `bypass` and
   * `disabled` set the cgroup's bypass flag, `enforced` clears it. A bypass with `seconds` ends in
   * the kernel by itself after that long, also when no control plane is left to end it. Resolves
   * true once the kernel has it; rejects `unknown_container` when the container has no cgroup.
   */
  apply(containerId: string, mode: EnforcedMode, seconds?: number): Promise<boolean> {
    return this.#serial(async () => {
      const client = this.#running();
      const known = this.#enrolled.get(containerId) ?? (await this.#enroll(containerId));
      if (known === undefined) {
        if (mode === "enforced") return true; // nothing runs, nothing to let through
        throw new EnforcementError(
          "unknown_container",
          `container ${containerId} has no cgroup (is it running?)`,
        );
      }
      if (mode === "enforced") await client.unbypass({ cgroupId: known.cgroupId });
      else await client.bypass({ cgroupId: known.cgroupId }, mode === "bypass" ? seconds : undefined);
      return true;
    });
  }

  /** Replaces the route table (compiled routes of the firewall); how many the kernel holds. */
  syncRoutes(routes: readonly Route[]): Promise<number> {
    return this.#serial(async () => (await this.#running().syncRoutes(routes)).routes);
  }

  /** Writes DNS answers (address -> route identity) into the kernel's cache. */
  async dnsUpdate(entries: readonly DnsEntry[]): Promise<number> {
    // Not serialised: the DNS gate writes before it replies, and enrolments must not delay that.
    return (await this.#running().dnsUpdate(entries)).entries;
  }

  /** Everything the manager holds (tests, status). */
  dump(): Promise<Dump> {
    return this.#running().dump();
  }

  /**
   * The drain step: stops following containers, clears every bypass (a stopped control plane
   * leaves nobody to end one) and closes the client. The manager is stopped with the other
   * helpers; SIGTERM leaves the programs pinned, still steering to targets that are now gone, so
   * agents are refused rather than let out. Idempotent.
   */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#stop?.abort();
      const client = this.#client;
      if (client === undefined) return;
      try {
        await this.#chain.catch(() => undefined);
        const open = (await client.dump()).bypass;
        for (const b of open) await client.unbypass({ cgroupId: b.cgroupId });
        if (open.length > 0)
          this.#log.info({ event: "bypasses_cleared", count: open.length }, "bypasses cleared");
      } finally {
        this.#clientLife.abort();
        await client.close();
      }
    })();
    return this.#closed;
  }

  #onContainerEvent(event: ContainerEvent): Promise<unknown> | undefined {
    switch (event.type) {
      case "container.started":
        if (!isAgentLabels(event.labels)) return undefined;
        return this.enroll(event.id).catch((err: unknown) => this.#failed(err, event.id, "enroll"));
      case "container.died":
      case "container.destroyed":
        if (!this.#enrolled.has(event.id)) return undefined;
        return this.#serial(() => this.#unenroll(event.id, event.type)).catch((err: unknown) =>
          this.#failed(err, event.id, "unenroll"),
        );
      case "docker.reconciled": {
        const present = new Set(event.containerIds);
        const gone = [...this.#enrolled.keys()].filter((id) => !present.has(id));
        return Promise.all(
          gone.map((id) =>
            this.#serial(() => this.#unenroll(id, "gone")).catch((err: unknown) =>
              this.#failed(err, id, "unenroll"),
            ),
          ),
        );
      }
      default:
        return undefined;
    }
  }

  #failed(err: unknown, containerId: string, op: string): void {
    // The parent's enrolment still enforces the container: a failed row costs visibility, not safety.
    this.#log.error({ err, containerId, op, event: "enrolment_failed" }, "agent enrolment failed");
  }

  async #enroll(containerId: string): Promise<EnrolledContainer | undefined> {
    const client = this.#running();
    const layout = this.#layout!;
    const candidates: [string, boolean][] = [
      [layout.containerPath(containerId), false],
      [layout.defaultContainerPath(containerId), true],
    ];
    for (const [path, outsideParent] of candidates) {
      try {
        const r = await client.enroll({ cgroup: path }, this.#config());
        const record = { containerId, cgroupId: r.cgroupId, path: r.path, outsideParent };
        this.#enrolled.set(containerId, record);
        if (outsideParent) {
          this.#log.warn(
            { event: "agent_outside_cgroup_parent", containerId, path, dockerParent: layout.dockerParent },
            "agent container started without the control plane's cgroup parent; enforced only from now on",
          );
        } else {
          this.#log.info({ event: "agent_enrolled", containerId, cgroupId: r.cgroupId }, "agent enrolled");
        }
        return record;
      } catch (err) {
        if (!(err instanceof EbpfError && err.reason === "not_found")) throw err;
      }
    }
    this.#log.debug(
      { event: "agent_cgroup_gone", containerId },
      "agent container has no cgroup (gone already)",
    );
    return undefined;
  }

  async #unenroll(containerId: string, why: string): Promise<void> {
    const known = this.#enrolled.get(containerId);
    if (known === undefined) return;
    await this.#running().unenroll({ cgroupId: known.cgroupId });
    this.#enrolled.delete(containerId);
    this.#log.info(
      { event: "agent_unenrolled", containerId, cgroupId: known.cgroupId, why },
      "agent unenrolled",
    );
  }

  #config(): ContainerConfig {
    const { gatewayPorts: _ports, ...config } = this.#targets;
    return this.#o.mark === 0 ? config : { ...config, mark: this.#o.mark };
  }

  #gatewayPorts(): GatewayPort[] {
    const { gateway, gatewayPorts = [] } = this.#targets;
    if (gateway === undefined) return [];
    return gatewayPorts.map((port) => ({ address: gateway, port, protocol: "tcp" }));
  }

  #parentPath(): string {
    return join(this.#cgroup2!, this.#layout!.parentPath);
  }

  #running(): EbpfClient {
    if (this.#client === undefined || this.#closed !== undefined) {
      throw new EnforcementError("not_running", "the eBPF enforcement is not running");
    }
    return this.#client;
  }

  #serial<T>(op: () => Promise<T>): Promise<T> {
    const next = this.#chain.then(op, op);
    this.#chain = next.catch(() => undefined);
    return next;
  }

  async #waitForMounts(signal: AbortSignal): Promise<{ cgroup2: string; bpffs: string }> {
    const lookup = this.#o.mounts ?? (() => findBpfMounts());
    const deadline = Date.now() + (this.#o.mountTimeoutMs ?? 30_000);
    let raised = false;
    for (;;) {
      const m = lookup();
      if (m.cgroup2 !== undefined && m.bpffs !== undefined) {
        if (raised) this.#o.sos?.clear();
        return { cgroup2: m.cgroup2, bpffs: m.bpffs };
      }
      const missing = m.bpffs === undefined ? "bpffs_missing" : "cgroup2_missing";
      const message =
        m.bpffs === undefined
          ? "bpffs is not mounted or not delegated to the control plane: mount -t bpf bpf /sys/fs/bpf (in a container: bind /sys/fs/bpf rw)"
          : "no cgroup2 hierarchy is mounted (in a container: bind the cgroup2 mount read-only)";
      if (!raised) {
        this.#o.sos?.raise({ message, kind: "bpffs_delegation" });
        this.#log.error({ event: missing }, message);
        raised = true;
      }
      if (Date.now() >= deadline) throw new EnforcementError(missing, message);
      await sleep(MOUNT_POLL_MS, undefined, { signal });
    }
  }

  async #dockerDriver(signal: AbortSignal): Promise<CgroupDriver> {
    try {
      const info = await this.#o.docker.info(
        AbortSignal.any([signal, AbortSignal.timeout(DOCKER_INFO_TIMEOUT_MS)]),
      );
      return cgroupDriverOf(info);
    } catch (err) {
      signal.throwIfAborted();
      throw new EnforcementError(
        "docker_unavailable",
        "Docker did not say its cgroup driver (set ebpf.cgroupDriver to cgroupfs or systemd to start without asking)",
        { cause: err },
      );
    }
  }

  async #connect(signal: AbortSignal): Promise<EbpfClient> {
    const deadline = Date.now() + (this.#o.readyTimeoutMs ?? 10_000);
    for (;;) {
      const client = new EbpfClient({ socketPath: this.#o.socketPath, log: this.#log });
      try {
        // Not the start signal: the drain still needs the client to clear bypasses; close() ends it.
        await client.start(this.#clientLife.signal);
        return client;
      } catch (err) {
        await client.close();
        if (Date.now() >= deadline) {
          throw new EnforcementError(
            "manager_unavailable",
            `the eBPF manager did not answer on ${this.#o.socketPath}`,
            {
              cause: err,
            },
          );
        }
      }
      await sleep(READY_POLL_MS, undefined, { signal });
    }
  }
}

/** This process's cgroup2 directory (`0::/path` in /proc/self/cgroup), or undefined when unknown. */
function ownCgroup(cgroup2: string): string | undefined {
  try {
    const line = readFileSync("/proc/self/cgroup", "utf8")
      .split("\n")
      .find((l) => l.startsWith("0::"));
    return line === undefined ? undefined : join(cgroup2, line.slice(3));
  } catch {
    return undefined;
  }
}
