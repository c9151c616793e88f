// EgressProxy: HAProxy as the egress proxy. start() renders the base config and spawns HAProxy
// (master-worker) through the caller's process host; apply() replaces the policy live through the
// runtime API (map versions, never a reload) and destroys the sessions of retired rule versions by
// their socket mark; installCertificate() hot-loads an interception certificate; revoke() ends
// sessions; close() stops it all. See README.md.
import { execFile } from "node:child_process";
import { X509Certificate, createPrivateKey } from "node:crypto";
import { chmod, mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import type { HelperCommand } from "../../supervisor/subprocess-manager.js";
import { DecisionLog, type ProxyDecision } from "./decision-log.js";
import { ProxyError } from "./errors.js";
import { mapPath, mitmSocketPath, proxyLayout, renderConfig, type ProxyLayout } from "./haproxy-config.js";
import {
  LEAF_MAPS,
  MAP_NAMES,
  ROOT_MAPS,
  compileMaps,
  renderMap,
  ruleVersions,
  writeFileAtomic,
  type MapEntry,
  type MapName,
} from "./map-files.js";
import { checkPolicy, normalizeName, type ProxyPolicy } from "./policy.js";
import { parseProxyConfig, routePortsOf, type ProxyConfig, type ProxyConfigInput } from "./proxy-config.js";
import { RuntimeApi } from "./runtime-api.js";
import { TagAllocator, renderMarkLua } from "./session-tags.js";
import { SocketSweeper } from "./socket-sweeper.js";

/**
 * What runs HAProxy: in the daemon the SubprocessManager (spawn = start, crash reporting
 * included), in tests plain child processes. `stop` must resolve once the process group is gone.
 */
export interface ProxyProcessHost {
  /** Spawns `command` as helper `name`; resolves with its pid once it runs. */
  spawn(name: string, command: HelperCommand): Promise<number>;
  /** Stops helper `name` (SIGTERM to its group, SIGKILL after a grace); resolves when it is gone. */
  stop(name: string): Promise<void>;
}

/** Construction options of an EgressProxy. */
export interface EgressProxyOptions {
  readonly config: ProxyConfigInput;
  readonly host: ProxyProcessHost;
  readonly log: Logger;
  /** Called with every connection's and request's decision (from HAProxy's log lines). */
  readonly onDecision?: (decision: ProxyDecision) => void;
  /** Told of decision lines the kernel dropped at the log socket (counted, never silent). */
  readonly onDecisionsDropped?: (count: number) => void;
  /** Largest runtime API payload chunk; only tests change it (to prove the count check). */
  readonly maxChunkBytes?: number;
  /** Delay of the second sweep after a revocation (default 1 s); only tests change it. */
  readonly lateSweepMs?: number;
}

/** Which sessions revoke() ends: those opened under a rule, or those from one source address. */
export type RevokeSelector = { readonly ruleId: string } | { readonly source: string };

/** What health() reports. */
export interface ProxyHealth {
  readonly masterPid: number;
  readonly workerPid: number;
  readonly uptimeSeconds: number;
  readonly currentConnections: number;
  /** Allowing rules live (each with a session tag). */
  readonly rules: number;
  readonly certificates: number;
}

/** What apply() did. */
export interface ApplyResult {
  /** Maps whose content changed and was committed. */
  readonly mapsPushed: readonly MapName[];
  /** Rule versions created and retired (a retired version's sessions were ended). */
  readonly rulesAdded: number;
  readonly rulesRetired: number;
  /** Sessions of retired rule versions destroyed by this apply's first sweep. */
  readonly sessionsEnded: number;
  readonly durationMs: number;
}

/** The helper name HAProxy runs under. */
export const PROXY_HELPER_NAME = "egress-proxy";

// The longest Unix socket path Linux accepts (sun_path is 108 bytes with the NUL).
const MAX_SOCKET_PATH = 107;
/** HAProxy's decision log ring: ~10,000 lines the daemon has not read yet before it drops (counted). */
const DECISION_RING_BYTES = 4 * 1024 * 1024;
/**
 * The second sweep after a revocation: a stream that read the old map version just before the
 * commit and was descheduled before setting its mark escapes the first sweep, never this one.
 */
const LATE_SWEEP_MS = 1_000;
/** Retired rule versions logged one line each; more are summarised in one line. */
const RETIRED_LOG_LINES = 20;
// Maps that path lookups and method names go through: pushed as old-plus-new before the verdict
// maps switch to new path keys, then trimmed, so no lookup ever follows a key to nothing.
const UNION_MAPS: ReadonlySet<MapName> = new Set(["methods", "paths-prefix", "paths-regex"]);
const OUR_FRONTENDS: ReadonlySet<string> = new Set(["tls_in", "mitm", "http_in", "tcp_routes"]);

/** A live rule version and the session tag its admitted streams are marked with. */
interface RuleTag {
  readonly ruleId: string;
  readonly digest: string;
  readonly tag: number;
}

type State = "new" | "starting" | "running" | "closed";

/** HAProxy as the egress proxy: lifecycle, live policy, certificates, revocation. */
export class EgressProxy {
  readonly #config: ProxyConfig;
  readonly #layout: ProxyLayout;
  readonly #host: ProxyProcessHost;
  readonly #log: Logger;
  readonly #api: RuntimeApi;
  readonly #decisions: DecisionLog;
  readonly #maxChunkBytes: number | undefined;
  readonly #lateSweepMs: number;
  readonly #sweeper: SocketSweeper;
  readonly #allocator = new TagAllocator();
  #state: State = "new";
  #spawned = false;
  #masterPid = 0;
  readonly #onAbort = (): void => void this.close();
  /** Serializes apply, installCertificate and revoke: each is a runtime API conversation. */
  #queue: Promise<unknown> = Promise.resolve();
  #tags = new Map<string, RuleTag>();
  /** Retired tags whose sessions are not swept yet (a sweep failed or a switch was partial). */
  #retiring = new Set<number>();
  /** Tags swept once -> when their second sweep is due; not handed out again before it. */
  #late = new Map<number, number>();
  #lateTimer: NodeJS.Timeout | undefined;
  #maps = new Map<MapName, MapEntry[]>();
  /** The text of each map as HAProxy holds it; absent when unknown (pushed again by the next apply). */
  #rendered = new Map<MapName, string>();
  readonly #certificates = new Set<string>();
  #closing: Promise<void> | undefined;

  constructor(options: EgressProxyOptions) {
    this.#config = parseProxyConfig(options.config);
    this.#layout = proxyLayout(this.#config.dir);
    for (const sock of [
      this.#layout.masterSocket,
      this.#layout.runtimeSocket,
      mitmSocketPath(this.#layout, this.#config.threads),
      this.#layout.decisionSocket,
    ]) {
      if (Buffer.byteLength(sock) > MAX_SOCKET_PATH) {
        throw new ProxyError("invalid_config", `proxy dir too long for a Unix socket path: ${sock}`);
      }
    }
    this.#host = options.host;
    this.#log = options.log.child({ component: "egress-proxy" });
    this.#api = new RuntimeApi({
      socketPath: this.#layout.runtimeSocket,
      timeoutMs: this.#config.runtimeTimeoutMs,
    });
    this.#decisions = new DecisionLog({
      socketPath: this.#layout.decisionSocket,
      onDecision: options.onDecision ?? (() => undefined),
      ...(options.onDecisionsDropped ? { onDropped: options.onDecisionsDropped } : {}),
      log: this.#log,
    });
    this.#maxChunkBytes = options.maxChunkBytes;
    this.#lateSweepMs = options.lateSweepMs ?? LATE_SWEEP_MS;
    this.#sweeper = new SocketSweeper({
      ss: this.#config.ss,
      localAddress: this.#config.listen.address,
      timeoutMs: this.#config.runtimeTimeoutMs,
    });
  }

  /** The file layout (config, sockets, maps, certificates). */
  get layout(): ProxyLayout {
    return this.#layout;
  }

  /**
   * Creates the directories (0700), writes empty maps and the base config (0600), checks the
   * config with `haproxy -c`, spawns HAProxy and waits until its runtime API answers. Everything
   * is denied until apply(). Aborting `signal` before the start finished closes the proxy; once
   * it runs, only close() stops it (the firewall's queue aborts its signal at the drain's first
   * step, and the proxy must serve, denying, until the drain's firewall step).
   */
  async start(signal: AbortSignal): Promise<void> {
    if (this.#state !== "new") throw new ProxyError("closed", `start() called in state ${this.#state}`);
    this.#state = "starting";
    signal.addEventListener("abort", this.#onAbort, { once: true });
    try {
      await this.#prepareFiles();
      await this.#decisions.start();
      const config = renderConfig({
        layout: this.#layout,
        listen: {
          address: this.#config.listen.address,
          tlsPort: this.#config.listen.tlsPort,
          httpPort: this.#config.listen.httpPort,
          routePorts: routePortsOf(this.#config),
        },
        clients: this.#config.clients,
        resolvers: this.#config.resolvers,
        upstreamCaFile: this.#config.upstreamCaFile,
        log: { token: this.#decisions.token, ringBytes: DECISION_RING_BYTES },
        threads: this.#config.threads,
        maxConnections: this.#config.maxConnections,
        timeouts: this.#config.timeouts,
      });
      await writeFileAtomic(this.#layout.configFile, config);
      await this.#checkConfig();
      // Revocation depends on marks and SOCK_DESTROY: without them the proxy does not start.
      await this.#sweeper.check();
      signal.throwIfAborted();
      this.#spawned = true;
      this.#masterPid = await this.#host.spawn(PROXY_HELPER_NAME, {
        file: this.#config.haproxy,
        // -W master-worker, -S the master CLI (0600) beside the runtime socket.
        args: ["-W", "-S", `${this.#layout.masterSocket},mode,600`, "-f", this.#layout.configFile],
        // HAProxy watches no lifeline: without this a SIGKILLed daemon left it serving the last
        // rules, its decision-ring forwarder retrying the daemon's socket at ~40% of a core.
        dieWithParent: true,
      });
      await this.#waitReady(signal);
      this.#state = "running";
      this.#log.info(
        {
          event: "proxy_started",
          masterPid: this.#masterPid,
          tls: `${this.#config.listen.address}:${this.#config.listen.tlsPort}`,
          http: `${this.#config.listen.address}:${this.#config.listen.httpPort}`,
          routes: this.#config.listen.routePorts.count,
        },
        "egress proxy started",
      );
    } catch (err) {
      await this.close();
      if (err instanceof ProxyError) throw err;
      throw new ProxyError("start_failed", `egress proxy did not start: ${(err as Error).message}`, {
        cause: err,
      });
    } finally {
      signal.removeEventListener("abort", this.#onAbort);
    }
  }

  /**
   * Replaces the policy live. Validates first (`invalid_policy`, nothing changed); then writes the
   * map files, pushes every changed map as a new version over one runtime API connection
   * (chunked, count-checked, committed), and destroys the sessions of every removed or changed
   * rule's old version by its tag (`revoke_failed` when that fails; the maps are live then), with a
   * second sweep shortly after. Resolves once HAProxy confirmed every step. No reload:
   * connections not under a changed rule are untouched.
   */
  apply(policy: ProxyPolicy): Promise<ApplyResult> {
    return this.#serialize(() => this.#apply(policy));
  }

  /**
   * Hot-loads the interception certificate (PEM, with its key) for `name` (a DNS name or
   * `*.parent`; the certificate's own SANs decide which SNIs it serves). A second call for the
   * same name replaces it. The files are 0600 in the 0700 certs dir.
   */
  installCertificate(name: string, certPem: string, keyPem: string): Promise<void> {
    return this.#serialize(() => this.#installCertificate(name, certPem, keyPem));
  }

  /** Ends the sessions opened under a rule, or all sessions from one source address; resolves with how many. */
  revoke(selector: RevokeSelector): Promise<number> {
    return this.#serialize(() => this.#revoke(selector));
  }

  /** Asks HAProxy for its state; rejects with `unavailable`/`timeout` when it does not answer. */
  async health(): Promise<ProxyHealth> {
    this.#requireRunning();
    const info = await this.#api.showInfo();
    return {
      masterPid: this.#masterPid,
      workerPid: Number(info["Pid"]),
      uptimeSeconds: Number(info["Uptime_sec"] ?? 0),
      currentConnections: Number(info["CurrConns"] ?? 0),
      rules: this.#tags.size,
      certificates: this.#certificates.size,
    };
  }

  /** Stops HAProxy (through the host) and the log receiver and removes the sockets. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#state = "closed";
    clearTimeout(this.#lateTimer);
    this.#lateTimer = undefined;
    // Let an operation in flight finish or fail on its own before the process goes away.
    await this.#queue.catch(() => undefined);
    if (this.#spawned) {
      // The worker outlives its master briefly (reparented, then reaped): close() promises that no
      // HAProxy process is left, so it waits for the worker too, and kills it past a bound.
      const workerPid = await this.#api.showInfo().then(
        (info) => Number(info["Pid"]),
        () => undefined,
      );
      try {
        await this.#host.stop(PROXY_HELPER_NAME);
      } catch (err) {
        this.#log.error({ err, event: "proxy_stop_failed" }, "egress proxy did not stop cleanly");
      }
      if (workerPid !== undefined && workerPid > 0) await waitGone(workerPid, WORKER_EXIT_MS);
    }
    await this.#decisions.close();
    await rm(this.#layout.runDir, { recursive: true, force: true }).catch(() => undefined);
    if (this.#spawned) this.#log.info({ event: "proxy_stopped" }, "egress proxy stopped");
  }

  #serialize<T>(op: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(
      () => op(),
      () => op(),
    );
    this.#queue = run.catch(() => undefined);
    return run;
  }

  #requireRunning(): void {
    if (this.#state === "closed") throw new ProxyError("closed", "egress proxy is closed");
    if (this.#state !== "running") throw new ProxyError("not_started", "egress proxy is not running");
  }

  async #prepareFiles(): Promise<void> {
    const L = this.#layout;
    for (const dir of [L.dir, L.runDir, L.mapsDir, L.certsDir]) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      // mkdir's mode does not apply to a directory that already exists.
      await chmod(dir, 0o700);
    }
    // Sockets of an earlier run, and certificates issued for it: a new run starts clean.
    for (const name of await readdir(L.runDir)) await rm(join(L.runDir, name), { force: true });
    for (const name of await readdir(L.certsDir)) await rm(join(L.certsDir, name), { force: true });
    await writeFileAtomic(L.luaFile, renderMarkLua());
    await writeFileAtomic(L.crtList, "");
    await writeFileAtomic(L.denyCrtList, "");
    for (const name of MAP_NAMES) {
      await writeFileAtomic(mapPath(L, name), "");
      this.#maps.set(name, []);
      this.#rendered.set(name, "");
    }
  }

  #checkConfig(): Promise<void> {
    return new Promise((resolve, reject) => {
      execFile(
        this.#config.haproxy,
        ["-c", "-f", this.#layout.configFile],
        { timeout: 30_000 },
        (err, stdout, stderr) => {
          if (err === null) {
            resolve();
            return;
          }
          const code = (err as NodeJS.ErrnoException).code;
          const detail =
            code === "ENOENT"
              ? `${this.#config.haproxy} not found`
              : `${stdout}${stderr}`.trim().slice(-2000);
          reject(
            new ProxyError("invalid_config", `haproxy rejected the rendered config: ${detail}`, {
              cause: err,
            }),
          );
        },
      );
    });
  }

  async #waitReady(signal: AbortSignal): Promise<void> {
    const deadline = Date.now() + this.#config.startTimeoutMs;
    let last: unknown;
    for (;;) {
      signal.throwIfAborted();
      try {
        await this.#api.showInfo();
        return;
      } catch (err) {
        last = err;
      }
      if (!isRunning(this.#masterPid)) {
        throw new ProxyError(
          "start_failed",
          "HAProxy exited during start (its output is in the helper log)",
          { cause: last },
        );
      }
      if (Date.now() > deadline) {
        throw new ProxyError(
          "start_failed",
          `HAProxy's runtime API did not answer within ${this.#config.startTimeoutMs} ms`,
          { cause: last },
        );
      }
      await sleep(25, undefined, { signal });
    }
  }

  async #apply(policy: ProxyPolicy): Promise<ApplyResult> {
    this.#requireRunning();
    const started = performance.now();
    const checked = checkPolicy(policy, { routePorts: new Set(routePortsOf(this.#config)) });
    const versions = ruleVersions(checked);
    if (versions.size > this.#config.maxRules) {
      throw new ProxyError(
        "invalid_policy",
        `invalid proxy policy: ${versions.size} allowing rules, at most ${this.#config.maxRules}`,
      );
    }

    // Which rule versions are new and which retire: a changed rule gets a new tag, so the
    // sessions opened under its old form can be ended without touching new ones.
    const next = new Map<string, RuleTag>();
    const created: RuleTag[] = [];
    const retired: RuleTag[] = [];
    const takenNow = new Set([...this.#tags.values()].map((t) => t.tag));
    const isTaken = (tag: number): boolean =>
      this.#retiring.has(tag) || this.#late.has(tag) || takenNow.has(tag);
    for (const [ruleId, v] of versions) {
      const current = this.#tags.get(ruleId);
      if (current !== undefined && current.digest === v.digest) {
        next.set(ruleId, current);
        continue;
      }
      const tag: RuleTag = { ruleId, digest: v.digest, tag: this.#allocator.next(isTaken) };
      takenNow.add(tag.tag);
      next.set(ruleId, tag);
      created.push(tag);
      if (current !== undefined) retired.push(current);
    }
    for (const [ruleId, current] of this.#tags) if (!versions.has(ruleId)) retired.push(current);

    const maps = compileMaps(checked, (ruleId) => {
      const tag = next.get(ruleId);
      if (tag === undefined) throw new ProxyError("apply_failed", `no session tag for rule ${ruleId}`);
      return tag.tag;
    });
    const texts = new Map(MAP_NAMES.map((n) => [n, renderMap(maps[n])]));
    const changed = MAP_NAMES.filter((n) => texts.get(n) !== this.#rendered.get(n));
    const rootsChange = changed.some((n) => ROOT_MAPS.includes(n));

    // 1. Map files first, so a reload would load what is about to be live.
    const previous = new Map(this.#maps);
    const previousTexts = new Map(MAP_NAMES.map((n) => [n, renderMap(previous.get(n) ?? [])]));
    await this.#writeMaps(changed, texts);
    // 2. Maps over one connection: leaves (path maps as old+new), verdict maps, then the path
    // maps trimmed to new.
    const pushed: MapName[] = [];
    const leaves = changed.filter((n) => LEAF_MAPS.includes(n));
    const roots = changed.filter((n) => ROOT_MAPS.includes(n));
    let rootSwitched = false;
    try {
      if (changed.length > 0) {
        await this.#api.interactive(async (api) => {
          for (const name of leaves) {
            const union = rootsChange && UNION_MAPS.has(name);
            await this.#push(api, name, union ? unionOf(maps[name], previous.get(name) ?? []) : maps[name]);
            pushed.push(name);
          }
          for (const name of roots) {
            await this.#push(api, name, maps[name]);
            rootSwitched = true;
            pushed.push(name);
          }
          for (const name of leaves) {
            if (rootsChange && UNION_MAPS.has(name)) await this.#push(api, name, maps[name]);
          }
        });
      }
    } catch (err) {
      if (!rootSwitched) {
        // No verdict map switched: put the leaves back (each on a connection of its own: the
        // shared one may be what failed), and the previous policy stays whole.
        for (const name of pushed) {
          await this.#push(this.#api, name, previous.get(name) ?? []).catch((e: unknown) =>
            this.#log.error({ err: e, map: name, event: "proxy_rollback_failed" }, "could not restore a map"),
          );
        }
        try {
          await this.#writeMaps(changed, previousTexts);
        } catch (e) {
          this.#log.error(
            { err: e, event: "proxy_rollback_failed" },
            "could not restore the previous map files",
          );
        }
        throw applyFailed("pushing maps; the previous policy stays", err);
      }
      // Some verdict maps switched: the new tags are live, the old ones wait for the sweep after
      // the next apply, and the maps not recorded as current are pushed again by it.
      this.#tags = next;
      for (const t of retired) this.#retiring.add(t.tag);
      for (const name of pushed) {
        this.#maps.set(name, maps[name]);
        this.#rendered.set(name, texts.get(name) ?? "");
      }
      for (const name of changed.filter((n) => !pushed.includes(n))) {
        this.#maps.delete(name);
        this.#rendered.delete(name);
      }
      throw applyFailed("switching maps (partly applied; apply again)", err);
    }
    this.#maps = new Map(MAP_NAMES.map((n) => [n, maps[n]]));
    this.#rendered = texts;
    this.#tags = next;
    // 3. Retire old rule versions: no lookup returns their tags any more; end their sessions.
    for (const t of retired) this.#retiring.add(t.tag);
    this.#logRetired(retired);
    const sessionsEnded = await this.#sweepRetiring();
    const result: ApplyResult = {
      mapsPushed: pushed,
      rulesAdded: created.length,
      rulesRetired: retired.length,
      sessionsEnded,
      durationMs: performance.now() - started,
    };
    this.#log.info(
      {
        event: "proxy_policy_applied",
        entries: checked.entries.length,
        rules: next.size,
        rulesAdded: result.rulesAdded,
        rulesRetired: result.rulesRetired,
        sessionsEnded,
        maps: pushed,
        durationMs: Math.round(result.durationMs),
      },
      "policy applied",
    );
    return result;
  }

  /**
   * One line per retired rule version for a handful; past that one line with the count and the
   * first ids (the store's change log has every rule: 10,000 lines here cost a second).
   */
  #logRetired(retired: readonly RuleTag[]): void {
    if (retired.length <= RETIRED_LOG_LINES) {
      for (const t of retired) {
        this.#log.info({ event: "proxy_rule_revoked", ruleId: t.ruleId, tag: t.tag }, "rule version retired");
      }
      return;
    }
    this.#log.info(
      {
        event: "proxy_rules_revoked",
        count: retired.length,
        first: retired.slice(0, RETIRED_LOG_LINES).map((t) => t.ruleId),
      },
      "rule versions retired",
    );
  }

  /**
   * Destroys the sessions of every retiring tag, then hands the tags to the second sweep. With no
   * connection open at all (after the commit) nothing can carry a retired tag, and no second sweep
   * is needed. Rejects with `revoke_failed`; the tags then stay for the next apply to sweep.
   */
  async #sweepRetiring(): Promise<number> {
    if (this.#retiring.size === 0) return 0;
    const tags = new Set(this.#retiring);
    const info = await this.#api.showInfo();
    if (Number(info["CurrConns"] ?? 1) === 0) {
      this.#retiring.clear();
      return 0;
    }
    let ended: number;
    try {
      ended = await this.#sweeper.sweep(tags);
    } catch (err) {
      this.#log.error({ err, tags: tags.size, event: "proxy_revoke_failed" }, "revoked sessions not ended");
      throw err;
    }
    const due = performance.now() + this.#lateSweepMs;
    for (const tag of tags) {
      this.#retiring.delete(tag);
      this.#late.set(tag, due);
    }
    this.#scheduleLateSweep();
    return ended;
  }

  #scheduleLateSweep(): void {
    if (this.#lateTimer !== undefined || this.#late.size === 0 || this.#state !== "running") return;
    const first = Math.min(...this.#late.values());
    this.#lateTimer = setTimeout(
      () => {
        this.#lateTimer = undefined;
        void this.#serialize(() => this.#lateSweep());
      },
      Math.max(0, first - performance.now()),
    );
  }

  /** The second sweep of every tag whose first sweep is `lateSweepMs` old; their tags free again after it. */
  async #lateSweep(): Promise<void> {
    if (this.#state !== "running") return;
    const now = performance.now();
    const tags = new Set([...this.#late].filter(([, due]) => due <= now).map(([tag]) => tag));
    try {
      const ended = await this.#sweeper.sweep(tags);
      for (const tag of tags) this.#late.delete(tag);
      if (ended > 0) {
        this.#log.warn({ ended, event: "proxy_late_sessions_ended" }, "late sessions of revoked rules ended");
      }
    } catch (err) {
      // The tags go back for the next apply's sweep.
      for (const tag of tags) {
        this.#late.delete(tag);
        this.#retiring.add(tag);
      }
      this.#log.error({ err, event: "proxy_revoke_failed" }, "second sweep failed");
    }
    this.#scheduleLateSweep();
  }

  async #push(api: RuntimeApi, name: MapName, entries: readonly MapEntry[]): Promise<void> {
    const options = this.#maxChunkBytes === undefined ? {} : { maxChunkBytes: this.#maxChunkBytes };
    await api.pushMap(mapPath(this.#layout, name), entries, options);
  }

  async #writeMaps(names: readonly MapName[], texts: ReadonlyMap<MapName, string>): Promise<void> {
    for (const name of names) await writeFileAtomic(mapPath(this.#layout, name), texts.get(name) ?? "");
  }

  async #installCertificate(name: string, certPem: string, keyPem: string): Promise<void> {
    this.#requireRunning();
    const normalized = name.startsWith("*.") ? normalizeName(name.slice(2)) : normalizeName(name);
    if (normalized === undefined)
      throw new ProxyError("invalid_argument", `not a DNS name: ${JSON.stringify(name)}`);
    const fileName = `${name.startsWith("*.") ? "_wildcard." : ""}${normalized}.pem`;
    try {
      const cert = new X509Certificate(certPem);
      if (!cert.checkPrivateKey(createPrivateKey(keyPem)))
        throw new Error("the key does not belong to the certificate");
    } catch (err) {
      throw new ProxyError("invalid_argument", `certificate for ${name} rejected: ${(err as Error).message}`);
    }
    const file = join(this.#layout.certsDir, fileName);
    const pem = `${certPem.trim()}\n${keyPem.trim()}\n`;
    const isNew = !this.#certificates.has(file);
    await writeFileAtomic(file, pem);
    try {
      await this.#api.loadCertificate(file, pem, isNew);
      if (isNew) {
        await this.#api.addToCrtList(this.#layout.crtList, file);
        this.#certificates.add(file);
        // The crt-list on disk lists what a reload would load.
        await writeFileAtomic(this.#layout.crtList, [...this.#certificates].map((f) => `${f}\n`).join(""));
      }
    } catch (err) {
      if (isNew) await rm(file, { force: true });
      throw err;
    }
    this.#log.info(
      { event: "proxy_certificate_installed", name, replaced: !isNew },
      "interception certificate loaded",
    );
  }

  async #revoke(selector: RevokeSelector): Promise<number> {
    this.#requireRunning();
    if ("ruleId" in selector) {
      const current = this.#tags.get(selector.ruleId);
      if (current === undefined) return 0;
      const count = await this.#sweeper.sweep(new Set([current.tag]));
      this.#log.info(
        { event: "proxy_sessions_revoked", ruleId: selector.ruleId, count },
        "rule's sessions ended",
      );
      return count;
    }
    const sessions = await this.#api.showSessions();
    const mine = sessions.filter(
      (s) => OUR_FRONTENDS.has(s.frontend) && s.src.slice(0, s.src.lastIndexOf(":")) === selector.source,
    );
    for (const s of mine) await this.#api.shutdownSession(s.id);
    this.#log.info(
      { event: "proxy_sessions_revoked", source: selector.source, count: mine.length },
      "source's sessions ended",
    );
    return mine.length;
  }
}

/** How long close() waits for the worker after its master stopped, before SIGKILL. */
const WORKER_EXIT_MS = 2_000;

/** Waits until `pid` is gone, SIGKILLing it once `ms` have passed, then waiting as long again. */
async function waitGone(pid: number, ms: number): Promise<void> {
  for (const last of [false, true]) {
    const until = Date.now() + ms;
    while (isRunning(pid) && Date.now() < until) await sleep(10);
    if (!isRunning(pid) || last) return;
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      return;
    }
  }
}

/** True while `pid` exists (a child reaped by its host is gone). */
function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** New entries first (a duplicate key finds the new value), then old ones the new set lacks. */
function unionOf(next: readonly MapEntry[], previous: readonly MapEntry[]): MapEntry[] {
  const seen = new Set(next.map((e) => `${e.key} ${e.value}`));
  return [...next, ...previous.filter((e) => !seen.has(`${e.key} ${e.value}`))];
}

function applyFailed(step: string, err: unknown): ProxyError {
  const reason =
    err instanceof ProxyError && err.reason === "count_mismatch" ? "count_mismatch" : "apply_failed";
  return new ProxyError(reason, `apply failed while ${step}: ${(err as Error).message}`, { cause: err });
}
