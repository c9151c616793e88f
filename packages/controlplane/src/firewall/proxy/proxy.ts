// EgressProxy: HAProxy as the egress proxy. start() renders the base config and spawns HAProxy
// (master-worker) through the caller's process host; apply() replaces the policy live through the
// runtime API (map versions and dynamic servers, never a reload); installCertificate() hot-loads
// an interception certificate; revoke() ends sessions; close() stops it all. See README.md.
import { execFile } from "node:child_process";
import { X509Certificate, createPrivateKey } from "node:crypto";
import { chmod, mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "pino";
import type { HelperCommand } from "../../supervisor/subprocess-manager.js";
import { DecisionLog, type ProxyDecision } from "./decision-log.js";
import { ProxyError } from "./errors.js";
import { mapPath, proxyLayout, renderConfig, type ProxyLayout } from "./haproxy-config.js";
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
  type TunnelBackend,
} from "./map-files.js";
import { checkPolicy, normalizeName, type ProxyPolicy } from "./policy.js";
import { parseProxyConfig, routePortsOf, type ProxyConfig, type ProxyConfigInput } from "./proxy-config.js";
import { RuntimeApi, type ServerRef } from "./runtime-api.js";

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
  /** Largest runtime API payload chunk; only tests change it (to prove the count check). */
  readonly maxChunkBytes?: number;
}

/** Which sessions revoke() ends: those opened under a rule, or those from one source address. */
export type RevokeSelector = { readonly ruleId: string } | { readonly source: string };

/** What health() reports. */
export interface ProxyHealth {
  readonly masterPid: number;
  readonly workerPid: number;
  readonly uptimeSeconds: number;
  readonly currentConnections: number;
  /** Rules with a live dynamic server. */
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
  readonly durationMs: number;
}

/** The helper name HAProxy runs under. */
export const PROXY_HELPER_NAME = "egress-proxy";

// The longest Unix socket path Linux accepts (sun_path is 108 bytes with the NUL).
const MAX_SOCKET_PATH = 107;
const SERVER_ARGS: Record<TunnelBackend, (layout: ProxyLayout) => string[]> = {
  be_pass: () => ["0.0.0.0:0", "weight", "0"],
  be_http: () => ["0.0.0.0:0", "weight", "0"],
  be_mitm: (l) => [`unix@${l.mitmSocket}`, "send-proxy-v2", "weight", "0"],
};
// Maps that path lookups and method names go through: pushed as old-plus-new before the verdict
// maps switch to new path keys, then trimmed, so no lookup ever follows a key to nothing.
const UNION_MAPS: ReadonlySet<MapName> = new Set(["methods", "paths-prefix", "paths-regex"]);
const OUR_FRONTENDS: ReadonlySet<string> = new Set(["tls_in", "mitm", "http_in", "tcp_routes"]);

interface RuleServer {
  readonly ruleId: string;
  readonly digest: string;
  /** The dynamic server's name in each of its backends. */
  readonly name: string;
  readonly backends: ReadonlySet<TunnelBackend>;
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
  #state: State = "new";
  #spawned = false;
  #masterPid = 0;
  #signal: AbortSignal | undefined;
  readonly #onAbort = (): void => void this.close();
  /** Serializes apply, installCertificate and revoke: each is a runtime API conversation. */
  #queue: Promise<unknown> = Promise.resolve();
  #serial = 0;
  #servers = new Map<string, RuleServer>();
  /** Servers retired whose deletion HAProxy refused (sessions still closing); retried on apply. */
  #undeleted: ServerRef[] = [];
  #maps = new Map<MapName, MapEntry[]>();
  readonly #certificates = new Set<string>();
  #closing: Promise<void> | undefined;

  constructor(options: EgressProxyOptions) {
    this.#config = parseProxyConfig(options.config);
    this.#layout = proxyLayout(this.#config.dir);
    for (const sock of [this.#layout.masterSocket, this.#layout.runtimeSocket, this.#layout.mitmSocket]) {
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
      onDecision: options.onDecision ?? (() => undefined),
      log: this.#log,
    });
    this.#maxChunkBytes = options.maxChunkBytes;
  }

  /** The file layout (config, sockets, maps, certificates). */
  get layout(): ProxyLayout {
    return this.#layout;
  }

  /**
   * Creates the directories (0700), writes empty maps and the base config (0600), checks the
   * config with `haproxy -c`, spawns HAProxy and waits until its runtime API answers. Everything
   * is denied until apply(). Aborting `signal` closes the proxy.
   */
  async start(signal: AbortSignal): Promise<void> {
    if (this.#state !== "new") throw new ProxyError("closed", `start() called in state ${this.#state}`);
    this.#state = "starting";
    this.#signal = signal;
    signal.addEventListener("abort", this.#onAbort, { once: true });
    try {
      await this.#prepareFiles();
      const logPort = await this.#decisions.start();
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
        log: { port: logPort, token: this.#decisions.token },
        threads: this.#config.threads,
        maxConnections: this.#config.maxConnections,
        timeouts: this.#config.timeouts,
      });
      await writeFileAtomic(this.#layout.configFile, config);
      await this.#checkConfig();
      signal.throwIfAborted();
      this.#spawned = true;
      this.#masterPid = await this.#host.spawn(PROXY_HELPER_NAME, {
        file: this.#config.haproxy,
        // -W master-worker, -S the master CLI (0600) beside the runtime socket.
        args: ["-W", "-S", `${this.#layout.masterSocket},mode,600`, "-f", this.#layout.configFile],
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
    }
  }

  /**
   * Replaces the policy live. Validates first (`invalid_policy`, nothing changed); then writes the
   * map files, adds a dynamic server per new rule version, pushes every changed map as a new
   * version (chunked, count-checked, committed), and for each removed or changed rule puts its
   * old server into maintenance, ends its sessions and deletes it. Resolves once HAProxy confirmed
   * every step. No reload: connections not under a changed rule are untouched.
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
      rules: this.#servers.size,
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
    this.#signal?.removeEventListener("abort", this.#onAbort);
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
    await writeFileAtomic(L.crtList, "");
    await writeFileAtomic(L.denyCrtList, "");
    for (const name of MAP_NAMES) {
      await writeFileAtomic(mapPath(L, name), "");
      this.#maps.set(name, []);
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

    // Which rule versions are new and which retire: a changed rule gets a new server, so the
    // sessions opened under its old form can be ended without touching new ones.
    const next = new Map<string, RuleServer>();
    const created: RuleServer[] = [];
    const retired: RuleServer[] = [];
    for (const [ruleId, v] of versions) {
      const current = this.#servers.get(ruleId);
      if (current !== undefined && current.digest === v.digest) {
        next.set(ruleId, current);
        continue;
      }
      const server: RuleServer = {
        ruleId,
        digest: v.digest,
        name: `s${++this.#serial}`,
        backends: v.backends,
      };
      next.set(ruleId, server);
      created.push(server);
      if (current !== undefined) retired.push(current);
    }
    for (const [ruleId, current] of this.#servers) if (!versions.has(ruleId)) retired.push(current);

    const maps = compileMaps(checked, (ruleId) => {
      const server = next.get(ruleId);
      if (server === undefined) throw new ProxyError("apply_failed", `no server for rule ${ruleId}`);
      return server.name;
    });
    const changed = MAP_NAMES.filter((n) => renderMap(maps[n]) !== renderMap(this.#maps.get(n) ?? []));
    const rootsChange = changed.some((n) => ROOT_MAPS.includes(n));

    // 1. Map files first, so a reload would load what is about to be live.
    const previous = new Map(this.#maps);
    await this.#writeMaps(changed, maps);
    // 2. Servers for new rule versions, before any map names them.
    const added: ServerRef[] = created.flatMap((server) =>
      [...server.backends].map((backend) => ({ backend, name: server.name })),
    );
    try {
      await this.#api.addServers(added, (s) => SERVER_ARGS[s.backend as TunnelBackend](this.#layout));
    } catch (err) {
      await this.#rollback(added, changed, previous);
      throw applyFailed("adding rule servers", err);
    }
    // 3. Maps: leaves (path maps as old+new), verdict maps, then the path maps trimmed to new.
    const pushed: MapName[] = [];
    const leaves = changed.filter((n) => LEAF_MAPS.includes(n));
    const roots = changed.filter((n) => ROOT_MAPS.includes(n));
    let rootSwitched = false;
    try {
      for (const name of leaves) {
        const union = rootsChange && UNION_MAPS.has(name);
        await this.#push(name, union ? unionOf(maps[name], previous.get(name) ?? []) : maps[name]);
        pushed.push(name);
      }
      for (const name of roots) {
        await this.#push(name, maps[name]);
        rootSwitched = true;
        pushed.push(name);
      }
      for (const name of leaves) {
        if (rootsChange && UNION_MAPS.has(name)) await this.#push(name, maps[name]);
      }
    } catch (err) {
      if (!rootSwitched) {
        // No verdict map switched: put the leaves back, and the previous policy stays whole.
        for (const name of pushed) {
          await this.#push(name, previous.get(name) ?? []).catch((e: unknown) =>
            this.#log.error({ err: e, map: name, event: "proxy_rollback_failed" }, "could not restore a map"),
          );
        }
        await this.#rollback(added, changed, previous);
        throw applyFailed("pushing maps; the previous policy stays", err);
      }
      // Some verdict maps switched: the new rule servers stay (maps name them), and the maps not
      // recorded as current are pushed again by the next apply().
      this.#servers = new Map([...this.#servers, ...next]);
      for (const name of pushed) this.#maps.set(name, maps[name]);
      for (const name of changed.filter((n) => !pushed.includes(n))) this.#maps.delete(name);
      throw applyFailed("switching maps (partly applied; apply again)", err);
    }
    this.#maps = new Map(MAP_NAMES.map((n) => [n, maps[n]]));
    this.#servers = next;
    // 4. Retire old rule versions: no new stream can pick them, then end theirs.
    await this.#retire(
      retired.flatMap((server) => [...server.backends].map((backend) => ({ backend, name: server.name }))),
    );
    for (const server of retired) {
      this.#log.info(
        { event: "proxy_rule_revoked", ruleId: server.ruleId, server: server.name },
        "rule version retired",
      );
    }
    const result: ApplyResult = {
      mapsPushed: pushed,
      rulesAdded: created.length,
      rulesRetired: retired.length,
      durationMs: performance.now() - started,
    };
    this.#log.info(
      {
        event: "proxy_policy_applied",
        entries: checked.entries.length,
        rules: next.size,
        rulesAdded: result.rulesAdded,
        rulesRetired: result.rulesRetired,
        maps: pushed,
        durationMs: Math.round(result.durationMs),
      },
      "policy applied",
    );
    return result;
  }

  async #push(name: MapName, entries: readonly MapEntry[]): Promise<void> {
    const options = this.#maxChunkBytes === undefined ? {} : { maxChunkBytes: this.#maxChunkBytes };
    await this.#api.pushMap(mapPath(this.#layout, name), entries, options);
  }

  async #writeMaps(
    names: readonly MapName[],
    maps: Record<MapName, MapEntry[]> | Map<MapName, MapEntry[]>,
  ): Promise<void> {
    for (const name of names) {
      const entries = maps instanceof Map ? (maps.get(name) ?? []) : maps[name];
      await writeFileAtomic(mapPath(this.#layout, name), renderMap(entries));
    }
  }

  /** Undoes an apply that failed before any verdict map switched: servers out, files back. */
  async #rollback(
    added: readonly ServerRef[],
    changed: readonly MapName[],
    previous: Map<MapName, MapEntry[]>,
  ): Promise<void> {
    // Servers HAProxy may not have registered are simply not there to retire.
    await this.#retire(added);
    try {
      await this.#writeMaps(changed, previous);
    } catch (err) {
      this.#log.error({ err, event: "proxy_rollback_failed" }, "could not restore the previous map files");
    }
  }

  /**
   * Retires servers (maintenance, end their sessions, delete). Deletion HAProxy refuses because a
   * session is still being torn down is retried shortly, then at the next apply.
   */
  async #retire(servers: readonly ServerRef[]): Promise<void> {
    let left = [...this.#undeleted, ...servers];
    this.#undeleted = [];
    if (left.length === 0) return;
    try {
      left = await this.#api.retireServers(left);
      for (let attempt = 0; attempt < 20 && left.length > 0; attempt++) {
        await sleep(10);
        left = await this.#api.retireServers(left);
      }
    } catch (err) {
      this.#log.error(
        { err, count: left.length, event: "proxy_revoke_failed" },
        "could not retire rule servers",
      );
    }
    this.#undeleted = left;
    if (left.length > 0)
      this.#log.warn(
        { count: left.length, event: "proxy_servers_lingering" },
        "rule servers not deleted yet",
      );
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
    const sessions = await this.#api.showSessions();
    if ("ruleId" in selector) {
      const server = this.#servers.get(selector.ruleId);
      if (server === undefined) return 0;
      const count = sessions.filter((s) => s.server === server.name).length;
      for (const backend of server.backends) await this.#api.shutdownSessionsOfServer(backend, server.name);
      this.#log.info(
        { event: "proxy_sessions_revoked", ruleId: selector.ruleId, count },
        "rule's sessions ended",
      );
      return count;
    }
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
