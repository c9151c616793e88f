// The daemon: everything is constructed first (no side effects), then started in the order of
// ARCHITECTURE.md, then drained in the one fixed order whatever ended it. Only main.ts exits.
import { isAbsolute, join } from "node:path";
import { CLI_CLIENT, AGENT_CLIENT, egress } from "@clawker/proto";
// Auth modules by path, not through auth/index.js: the Ory config code (yaml, ajv and the schemas)
// loads only in Ory mode, keeping it out of the embedded default's cold start and memory.
import { AuthInterceptor } from "./auth/auth-interceptor.js";
import { clawkerClients, registerClients } from "./auth/client-registration.js";
import { CachingIntrospector } from "./auth/introspection-cache.js";
import { HttpIntrospector } from "./auth/introspector.js";
import { ReadyGate } from "./auth/ready-gate.js";
import { withRecovery } from "./auth/recovery.js";
import { AuthBoot, DATABASE_FILE, type Booted } from "./auth-boot.js";
import { authUrls, type AuthPlan } from "./auth-processes.js";
import { Overseer } from "@clawker/overseer";
import type { Registry } from "./agents/registry.js";
import { ContainerAddressIndex, dockerInspector } from "./agents/address-index.js";
import { agentService } from "./agents/agent-service.js";
import { Dialer } from "./agents/dialer.js";
import { IdentityGate } from "./agents/identity-gate.js";
import { AgentWatcher } from "./agents/watcher.js";
import { countRunningAgentContainers, createDockerClient, EventsFeeder } from "./docker/index.js";
import { decideEbpf, hostFacts } from "./ebpf/availability.js";
import { CLOSED_TARGETS, Enforcement } from "./ebpf/enforcement.js";
import { agentNetworkLookup } from "./firewall/agent-network.js";
import { AuditLog } from "./firewall/audit/audit-log.js";
import { CaPush } from "./firewall/ca-push.js";
import { dnsGateProcess } from "./firewall/dns-gate-process.js";
import { egressService } from "./firewall/egress-service.js";
import { agentResolver } from "./firewall/events/agent-resolver.js";
import { BpfEventFeed } from "./firewall/events/bpf-feed.js";
import { EventHub } from "./firewall/events/event-hub.js";
import { dnsEvent, proxyEvent } from "./firewall/events/sources.js";
import { withEventSources } from "./firewall/events/status-sources.js";
import { Firewall, type FirewallOptions } from "./firewall/firewall.js";
import { firewallHandlers } from "./firewall/handlers.js";
import { agentEgressService } from "./firewall/triage/agent-egress-service.js";
import { EgressTriage } from "./firewall/triage/egress-triage.js";
import { triageHandlers } from "./firewall/triage/handlers.js";
import { adminSocketPath, type Config } from "./config.js";
import { runDrain, type DrainStep } from "./drain.js";
import type { Logger } from "./logging.js";
import { tuneHeap } from "./heap-tuning.js";
import { MemoryRelief } from "./memory-relief.js";
import { ScavengePacer } from "./scavenge-pacer.js";
import { holdTickShape } from "./tick-shape.js";
import { Metrics, type FirewallLayer, type FirewallVerdict } from "./metrics/metrics.js";
import { METRICS_TOKEN_FILE, MetricsToken } from "./metrics/metrics-token.js";
import { adminService } from "./server/admin-service.js";
import { execAgentHandler } from "./server/exec-agent.js";
import { firewallProbes } from "./server/firewall-probes.js";
import { publishAgentLimits } from "./jobs/agent-defaults.js";
import { agentUsageService } from "./jobs/agent-usage.js";
import { JobCgroupsV1 } from "./jobs/cgroups-v1.js";
import { jobService } from "./jobs/job-service.js";
import { ContainerUsageV2 } from "./jobs/cgroups-v2.js";
import { JobPlacement } from "./jobs/placement.js";
import {
  processListenerCaps,
  RECOMMENDED_OPEN_FILES,
  type ListenerCaps,
  type OpenFileLimit,
} from "./server/fd-budget.js";
import { routeGrpcJsLogs } from "./server/grpc-log.js";
import { GroupSocket } from "./server/group-socket.js";
import { GrpcListener, type ListenerLimits, type ServiceBinding } from "./server/grpc-listener.js";
import { HealthServer } from "./server/healthz.js";
import { ListenerCounters } from "./server/listener-counters.js";
import { RefusalLog } from "./server/refusal-log.js";
import { SosBoard } from "./server/sos-board.js";
import { ForcedStopError, HelperExitedError } from "./supervisor/errors.js";
import { httpProbe, tlsHandshakeProbe } from "./supervisor/probes.js";
import type { HelperCrash, SubprocessManager } from "./supervisor/subprocess-manager.js";
import { StartupTimeline } from "./startup-timeline.js";
import type { TrustMaterial } from "./trust-dir.js";

/** Why the daemon stopped; decides the exit code (0 only for a requested stop or a drain to zero). */
export type StopCause =
  | { readonly kind: "signal"; readonly signal: NodeJS.Signals }
  | { readonly kind: "drained_to_zero" }
  | { readonly kind: "helper_crash"; readonly crash: HelperCrash }
  | { readonly kind: "serve_failure"; readonly error: unknown }
  | { readonly kind: "startup_failed"; readonly error: unknown }
  | { readonly kind: "fatal"; readonly error: unknown };

/** The exit code for a stop cause. */
export function exitCodeFor(cause: StopCause): 0 | 1 {
  return cause.kind === "signal" || cause.kind === "drained_to_zero" ? 0 : 1;
}

export { DATABASE_FILE, HELPER_RECORD_FILE } from "./auth-boot.js";

/** Bound addresses, once started (the ready log line reports them). */
export interface DaemonAddresses {
  readonly admin: { host: string; port: number };
  readonly agent: { host: string; port: number };
  readonly health: { host: string; port: number };
  /** The admin Unix socket, when enabled. */
  readonly adminSocket?: string;
}

/** The control plane daemon. `run()` starts it and resolves with the exit code when it has drained. */
export class Daemon {
  readonly #config: Config;
  readonly #log: Logger;
  readonly #supervisor: SubprocessManager;
  /** The first start-up steps (through the auth helper's spawn), maybe already run by main.ts. */
  readonly #boot: AuthBoot;
  readonly #sos = new SosBoard();
  readonly #readyGate = new ReadyGate();
  readonly #health: HealthServer;
  readonly #overseer: Overseer;
  readonly #feeder: EventsFeeder;
  readonly #index: ContainerAddressIndex;
  readonly #watcher: AgentWatcher | undefined;
  readonly #enforcement: Enforcement | undefined;
  readonly #firewall: Firewall;
  /** The firewall's audit log (firewall/audit/README.md): decisions, rule changes, operator actions. */
  readonly #audit: AuditLog;
  /** Issue 11: the firewall's decision stream, its eBPF feed, and the end of its watches at the drain. */
  readonly #events: EventHub;
  readonly #bpfEvents: BpfEventFeed | undefined;
  readonly #eventsClosing = new AbortController();
  /** Issue 11 (wip/triage): denial triage, agents' requests, approvals. */
  readonly #triage: EgressTriage;
  /** Issue 16 (wip/fwrest): a rotated interception CA pushed into running agents. */
  readonly #caPush: CaPush;
  /** Refusal counts of every listener (one object, for metrics). */
  readonly #counters = new ListenerCounters();
  readonly #refusals: RefusalLog;
  readonly #openFiles: OpenFileLimit | undefined;
  readonly #caps: ListenerCaps;
  readonly #relief: MemoryRelief;
  readonly #metrics: Metrics;
  #metricsToken: MetricsToken | undefined;
  #introspectionCache: CachingIntrospector | undefined;
  readonly #timeline: StartupTimeline;
  readonly #startAbort = new AbortController();
  /** Aborted with the start-up's first failure (a branch's, or a helper's exit before ready). */
  readonly #startFailed = new AbortController();
  /** Set at the ready point: a helper's exit from then on is a helper_crash, before it a start-up failure. */
  #ready = false;
  #stopCause: StopCause | undefined;
  /** Causes that arrived after the first (during the drain): logged, and a failure among them exits 1. */
  readonly #laterCauses: StopCause[] = [];
  #onStop: ((cause: StopCause) => void) | undefined;
  readonly #stopped: Promise<StopCause>;

  #registry: Registry | undefined;
  #introspector: HttpIntrospector | undefined;
  #dialer: Dialer | undefined;
  /** Per-job v1 cgroups under agent containers; undefined on a host without v1 controllers. */
  readonly #jobPlacement: JobPlacement | undefined;
  /** Agents' usage: the v1 placement, or the v2 reader on a pure v2 host; undefined with neither. */
  readonly #agentUsage: Pick<JobPlacement, "usage"> | undefined;
  #admin: GrpcListener | undefined;
  #agent: GrpcListener | undefined;
  #adminSocket: GroupSocket | undefined;
  #addresses: DaemonAddresses | undefined;

  /**
   * `boot` is the start-up's first steps when the caller began them already (run.ts does, before it
   * loads this module, so the auth helper boots meanwhile); by default `run()` begins them.
   */
  constructor(config: Config, log: Logger, boot: AuthBoot = new AuthBoot(config, log)) {
    this.#config = config;
    this.#log = log;
    this.#boot = boot;
    this.#timeline = new StartupTimeline(log);
    // Metrics (issue 11 §5): counted as things happen, the rest read at each scrape of /metrics.
    this.#metrics = new Metrics({
      agents: () => this.#registry?.list().length ?? 0,
      introspectionCache: () => this.#introspectionCache?.stats ?? { hits: 0, misses: 0 },
      firewallRules: () => {
        try {
          return this.#firewall.listRules().length;
        } catch {
          return undefined; // the rule store is not open (before the firewall's start step)
        }
      },
      bypassesActive: async () =>
        (await this.#firewall.status()).containers.filter((c) => c.mode === "bypass").length,
      refusals: () => this.#counters.rows(),
    });
    this.#supervisor = boot.supervisor;
    boot.onHelperStarted((name) => this.#metrics.helperStarted(name));
    // Connection caps sized from RLIMIT_NOFILE, so strangers cannot take the descriptors peers need.
    const { limit, caps } = processListenerCaps();
    this.#openFiles = limit;
    this.#caps = caps;
    this.#refusals = new RefusalLog({ log: log.child({ component: "refusals" }), counters: this.#counters });
    const limits = config.listen.limits;
    this.#health = new HealthServer({
      logger: log,
      host: config.listen.health.host,
      port: config.listen.health.port,
      maxConnections: caps.healthz,
      // A /healthz request is one small GET: silence for a handshake's budget closes the socket.
      idleTimeoutMs: limits.handshakeTimeoutMs,
      headersTimeoutMs: limits.handshakeTimeoutMs,
      requestTimeoutMs: limits.requestTimeoutMs,
      refusals: this.#refusals,
      // Only with the token from the data dir (metrics/metrics-token.ts); none loaded yet: refused.
      metrics: {
        accepts: (authorization) => this.#metricsToken?.accepts(authorization) === true,
        render: () => this.#metrics.render(),
      },
    });
    this.#overseer = new Overseer({ logger: log.child({ component: "overseer" }) });
    const docker = createDockerClient(config.docker.host === undefined ? {} : { host: config.docker.host });
    this.#feeder = new EventsFeeder({
      docker,
      containers: this.#overseer.containers,
      log: log.child({ component: "docker-events" }),
    });
    this.#index = new ContainerAddressIndex({
      inspect: dockerInspector(docker),
      containers: this.#overseer.containers,
      log: log.child({ component: "address-index" }),
    });
    const v1 = new JobCgroupsV1();
    const initPid = async (id: string, signal?: AbortSignal): Promise<number> =>
      (await docker.inspectContainer(id, signal)).State?.Pid ?? 0;
    this.#jobPlacement = v1.available
      ? new JobPlacement({
          initPid,
          registry: { list: () => this.#registry?.list() ?? [] },
          dialer: { readyChannel: (id) => this.#dialer?.readyChannel(id) },
          cgroups: v1,
          log: log.child({ component: "job-placement" }),
        })
      : undefined;
    // A pure v2 host: agents' usage from their v2 groups (jobs' limits are clawkerd's there).
    const v2 = v1.available
      ? undefined
      : new ContainerUsageV2({ initPid, log: log.child({ component: "agent-usage" }) });
    this.#agentUsage = this.#jobPlacement ?? (v2?.available === true ? v2 : undefined);
    const e = config.ebpf;
    const ebpf = decideEbpf(e.enabled, () => hostFacts(e.manager, e.proxyCgroup));
    log[ebpf.enabled || e.enabled === false ? "info" : "warn"](
      { event: "ebpf_decision", enabled: ebpf.enabled, setting: ebpf.setting, reason: ebpf.reason },
      ebpf.enabled ? "eBPF enforcement on" : "eBPF enforcement off: the firewall will not come up",
    );
    this.#enforcement = ebpf.enabled
      ? new Enforcement({
          manager: e.manager,
          socketPath: e.socket ?? join(config.dataDir, "ebpf.sock"),
          pinDir: e.pinDir,
          proxyCgroup: e.proxyCgroup,
          cgroupParent: e.cgroupParent,
          cgroupDriver: e.cgroupDriver,
          mark: e.mark,
          mountTimeoutMs: e.mountTimeoutMs,
          host: this.#supervisor,
          docker,
          containers: this.#overseer.containers,
          sos: this.#sos,
          log,
        })
      : undefined;
    // ---- audit log (issue 11 §2): started before the firewall, closed after it in the drain ----
    this.#audit = new AuditLog({
      dir: isAbsolute(config.audit.dir) ? config.audit.dir : join(config.dataDir, config.audit.dir),
      maxFileBytes: config.audit.maxFileBytes,
      maxFiles: config.audit.maxFiles,
      maxBacklog: config.audit.maxBacklog,
      syncIntervalMs: config.audit.syncIntervalMs,
      log,
    });
    // ---- end audit log ----
    // Issue 11 (wip/events): one decision stream from the DNS gate, the proxy and the eBPF
    // programs; agents resolved by the daemon (registry, address index, enrolments).
    const ev = config.firewall.events;
    const rate = ev.perSourcePerSecond;
    const events = new EventHub({
      log,
      ringCapacity: ev.ringSize,
      ratePerSecond: { dns: rate, bpf: rate, proxy: rate, other: rate },
      resolver: agentResolver({
        registry: () => this.#registry,
        index: this.#index,
        ...(this.#enforcement === undefined ? {} : { enrolled: () => this.#enforcement!.enrolled() }),
      }),
      topic: this.#overseer.firewall,
      onDrop: (source, n) => this.#metrics.eventsDropped(source, n),
    });
    this.#events = events;
    // Decisions by verdict and layer for /metrics (a gap or an unknown layer is not a decision).
    events.onEvent((e) => {
      const verdict = METRIC_VERDICTS[e.verdict];
      const layer = METRIC_LAYERS[e.layer];
      if (verdict !== undefined && layer !== undefined) this.#metrics.firewallDecision(verdict, layer);
    });
    // Every decision to the audit log (it never throws or blocks; what it cannot write it counts).
    events.onEvent((e) => this.#audit.event(e));
    const enforcement = this.#enforcement;
    this.#bpfEvents =
      enforcement === undefined
        ? undefined
        : new BpfEventFeed({
            subscribe: (signal) => enforcement.client.events(signal),
            // The kernel's own event drops (ring full, per-cgroup rate): the bpf source's drops.
            kernelDrops: async () => (await enforcement.client.dump()).counters,
            hub: events,
            log: log.child({ component: "firewall-events" }),
          });
    // ---- Issue 16 (wip/fwrest): the interception CA into running agents, at a rotation and at each
    // ready link (firewall/ca-push.ts); lazy on the registry, the dialer and the firewall. ----
    this.#caPush = new CaPush({
      agents: () => this.#registry?.list() ?? [],
      channel: (id) => this.#dialer?.readyChannel(id),
      bundle: () => this.#firewall.trustBundle(),
      log,
    });
    this.#firewall = new Firewall({
      caPush: this.#caPush,
      settings: config.firewall,
      audit: this.#audit,
      dataDir: config.dataDir,
      database: join(config.dataDir, DATABASE_FILE),
      host: {
        spawn: (name, command) => this.#supervisor.start(name, command),
        stop: async (name) => void (await this.#supervisor.stop(name)),
      },
      containers: this.#index,
      agents: { list: () => this.#registry?.list() ?? [] },
      network: agentNetworkLookup(docker),
      log,
      // The eBPF enforcement puts the firewall into the kernel: modes, routes, where agents go.
      ...(this.#enforcement === undefined ? {} : enforcementSlots(this.#enforcement)),
      agentFacing: [
        { host: config.listen.agent.host, port: config.listen.agent.port },
        { host: config.auth.publicHost ?? config.auth.host, port: config.auth.publicPort },
      ],
      dnsGate: dnsGateProcess({
        host: this.#supervisor,
        ebpfSocket: config.firewall.dns.ebpfSocket ?? this.#enforcement?.socketPath,
        onDecision: (d) => {
          const { event, origin } = dnsEvent(d);
          events.publish(event, origin);
        },
        onDecisionsDropped: (count) => events.countUpstreamDrops("dns", count),
      }),
      onDecision: (d) => {
        const { event, origin } = proxyEvent(d);
        events.publish(event, origin);
      },
      // Lines the kernel dropped at the proxy's log socket: the proxy source's upstream drops.
      onDecisionsDropped: (count) => events.countUpstreamDrops("proxy", count),
    });
    // Issue 11 (wip/triage): every decision feeds the triage; approvals go through the firewall.
    this.#triage = new EgressTriage({ firewall: this.#firewall, log, audit: this.#audit });
    events.onEvent((e) => this.#triage.record(e));
    const a = config.agents;
    this.#watcher = a.drainToZero
      ? new AgentWatcher(
          {
            countAgents: (signal) => countRunningAgentContainers(docker, { signal }),
            onDrain: () => this.stop({ kind: "drained_to_zero" }),
            log: log.child({ component: "agent-watcher" }),
            containers: this.#overseer.containers,
            drain: this.#overseer.drain,
          },
          {
            pollInterval: a.pollIntervalMs,
            missedThreshold: a.missedThreshold,
            gracePeriod: a.gracePeriodMs,
            listErrCeiling: a.listErrCeiling,
          },
        )
      : undefined;
    // Before any collection can drop them: Node's tick object maps stay alive (tick-shape.ts).
    holdTickShape();
    this.#relief = new MemoryRelief({
      ...config.memoryRelief,
      log: log.child({ component: "memory-relief" }),
    });
    this.#stopped = new Promise<StopCause>((resolve) => (this.#onStop = resolve));
  }

  /** The daemon's metrics (what /metrics renders; the issue-11 event stream feeds its seams). */
  get metrics(): Metrics {
    return this.#metrics;
  }

  /** Refusal counts by listener and reason (what later metrics read). */
  get counters(): ListenerCounters {
    return this.#counters;
  }

  /**
   * Asks the daemon to stop; the first cause starts the drain. A later one (a second signal, an
   * exception during the drain) is logged, never dropped, and a failure among them makes the exit 1.
   */
  stop(cause: StopCause): void {
    if (this.#stopCause !== undefined) {
      this.#laterCauses.push(cause);
      this.#logCause(cause, "stop_cause_during_drain");
      return;
    }
    this.#stopCause = cause;
    // Before any await: a helper exit from here on is part of the stop, not a crash.
    this.#supervisor.beginShutdown();
    this.#startAbort.abort(cause);
    this.#onStop?.(cause);
  }

  /**
   * Starts in order, serves until a stop cause arrives, drains, and resolves with the exit code: 0
   * only for a requested stop or a drain to zero whose every drain step succeeded and during
   * which no failure arrived.
   */
  async run(): Promise<0 | 1> {
    const began = StartupTimeline.sinceExecMs();
    // A helper that exits before ready (the auth server forked before this module loaded may have
    // exited already, e.g. refusing a live admin socket) fails the start-up: it is the start's
    // first failure like its own health wait's, whichever of the two is seen first.
    void this.#supervisor.crashed.then((crash) => {
      if (this.#ready) this.stop({ kind: "helper_crash", crash });
      else this.#failStart(new HelperExitedError(crash.name, crash.code, crash.signal));
    });
    try {
      await this.#start();
      if (this.#stopCause === undefined) {
        this.#log.info(
          {
            event: "ready",
            ms: Math.round(StartupTimeline.sinceExecMs() - began),
            // From exec: the figure `clawker controlplane up` waits for.
            totalMs: Math.round(StartupTimeline.sinceExecMs()),
            addresses: this.#addresses,
          },
          "control plane ready",
        );
      }
    } catch (error) {
      this.stop({ kind: "startup_failed", error: this.#failStart(error) });
    }
    const cause = await this.#stopped;
    this.#logCause(cause, "drain");
    const { failed, ms } = await runDrain(this.#drainSteps(), {
      deadlineMs: this.#config.shutdownGraceMs,
      log: this.#log,
    });
    const code =
      exitCodeFor(cause) === 1 || failed.length > 0 || this.#laterCauses.some((c) => exitCodeFor(c) === 1)
        ? 1
        : 0;
    this.#log.info(
      { event: "stopped", code, cause: cause.kind, failedSteps: failed, drainMs: ms },
      "control plane stopped",
    );
    return code;
  }

  /** Records the start-up's first failure (later ones are its consequences) and returns that first one. */
  #failStart(error: unknown): unknown {
    if (!this.#startFailed.signal.aborted) this.#startFailed.abort(error);
    return this.#startFailed.signal.reason;
  }

  async #start(): Promise<void> {
    // A stop cause or the start-up's first failure aborts every step still running.
    const signal = AbortSignal.any([this.#startAbort.signal, this.#startFailed.signal]);
    const cfg = this.#config;

    // 1-2. Leftovers reaped, trust material, registry, the auth helpers' configs, the first one
    // forked (auth-boot.ts): run.ts began these before it loaded this module.
    let booted: Booted;
    try {
      booted = await this.#boot.result;
    } finally {
      this.#registry = this.#boot.registry; // the drain closes it whatever failed after it opened
    }
    const { trust, registry, plan } = booted;
    try {
      publishAgentLimits(cfg.dataDir, cfg.agentLimits);
    } catch (err) {
      // Not fatal: `clawker run` then says it found no defaults and starts agents without them.
      this.#log.warn({ err, event: "agent_limits_unpublished" }, "cannot publish the default agent limits");
    }

    // The auth helpers boot in processes of their own, the longest step of the start-up: the first
    // is forked already, and the daemon's own steps run while they boot (4): the listeners (3),
    // then the eBPF manager, the audit log and the firewall (5-6), none of which needs the auth
    // stack. The first failure stops the other branch, and #start settles only once both have, so
    // the drain never races a listener that is still binding or a firewall still coming up.
    const auth = this.#startAuth(trust, plan, signal);
    const local = (async () => {
      await this.#startListeners(trust, registry, signal);
      await this.#startEnforcement(signal);
    })();
    const settled = await Promise.allSettled(
      [auth, local].map((p) =>
        p.catch((err: unknown) => {
          throw this.#failStart(err);
        }),
      ),
    );
    // The first failure is the cause; the other branch's is only its abort.
    if (this.#startFailed.signal.aborted) throw this.#startFailed.signal.reason;
    for (const s of settled) if (s.status === "rejected") throw s.reason;

    // 7. Ready.
    signal.throwIfAborted();
    this.#ready = true;
    // From the first authorized call on, V8 pretenures nothing (heap-tuning.ts); the start-up
    // keeps the pretenuring its long-lived allocations gain from (~50 ms of the cold start).
    tuneHeap();
    this.#readyGate.setReady();
    this.#health.setReady();
    this.#sos.finish();

    // After ready: follow Docker (the address index first, so it sees the reconcile), dial every
    // running agent, and drain to zero when the last agent is gone.
    this.#index.start(signal);
    this.#feeder.start(signal);
    this.#dialer!.start(signal);
    this.#jobPlacement?.start(signal);
    this.#watcher?.run(signal).catch((error: unknown) => this.stop({ kind: "serve_failure", error }));
    this.#relief.start(signal);
    this.#relief.collectStartup();
  }

  /** 5-6. Enforcement, after the listeners, while the auth helpers boot: eBPF, audit log, firewall, triage. */
  async #startEnforcement(signal: AbortSignal): Promise<void> {
    const t = this.#timeline;
    signal.throwIfAborted();
    // 5. The eBPF manager: started, programs on the agents' cgroup parent, stale bypasses cleared.
    await t.step("ebpf", () => this.#enforcement?.start(signal));
    this.#bpfEvents?.start(signal);
    // 6. The audit log first (the firewall records into it), then the firewall: its rules (the
    // floor file checked), and the stack when enabled or left up.
    await t.step("audit", () => this.#audit.start(signal));
    await t.step("firewall", () => this.#firewall.start(signal));
    // The firewall's layers join /healthz (they pass while its stack is down).
    const enforcement = this.#enforcement;
    const probes = firewallProbes(
      this.#firewall,
      enforcement === undefined ? undefined : () => enforcement.client,
    );
    for (const [name, probe] of probes) this.#health.addProbe(name, probe);
    // Issue 11 (wip/triage): its tables are the firewall's (migrated above); stored expiries armed.
    await t.step("egress_triage", () => this.#triage.start(signal));
  }

  /** 3. Listeners: agent serving at once, admin behind the ready gate, then /healthz. */
  async #startListeners(trust: TrustMaterial, registry: Registry, signal: AbortSignal): Promise<void> {
    signal.throwIfAborted();
    const cfg = this.#config;
    const t = this.#timeline;

    const fds = this.#openFiles;
    this.#log[fds === undefined || fds.soft < RECOMMENDED_OPEN_FILES ? "warn" : "info"](
      { event: "fd_limit", soft: fds?.soft ?? "unknown", hard: fds?.hard ?? "unknown", caps: this.#caps },
      "open-file limit and the connection caps sized from it",
    );
    routeGrpcJsLogs(this.#log, this.#refusals);
    const refusals = this.#refusals;
    const l = cfg.listen.limits;
    const introspections = { perSecond: l.introspectionsPerSecond, burst: l.introspectionBurst };
    const limits: Omit<ListenerLimits, "maxConnections" | "maxConnectionsPerPeer"> = {
      handshakeTimeoutMs: l.handshakeTimeoutMs,
      requestTimeoutMs: l.requestTimeoutMs,
      idleTimeoutMs: l.idleTimeoutMs,
      maxStreamsPerConnection: l.maxStreamsPerConnection,
      refusalsPerSecond: l.refusalsPerSecond,
      tarpitMs: l.tarpitMs,
      maxHandshakes: this.#caps.handshakes,
      maxProbes: this.#caps.probe,
    };
    const urls = authUrls(cfg);
    this.#introspector = new HttpIntrospector({
      adminUrl: urls.adminUrl,
      ca: trust.ca,
      timeoutMs: cfg.auth.introspectionTimeoutMs,
    });
    const cached = new CachingIntrospector(this.#introspector, {
      maxTtlMs: cfg.auth.cacheTtlMs,
      maxEntries: cfg.auth.cacheSize,
    });
    this.#introspectionCache = cached;
    const tls = { ca: trust.ca, cert: trust.serverCert, key: trust.serverKey };
    const adminLog = this.#log.child({ component: "admin" });
    const agentLog = this.#log.child({ component: "agent-listener" });
    const gate = new IdentityGate({
      index: this.#index,
      registry,
      agents: this.#overseer.agents,
      log: agentLog,
    });
    this.#dialer = new Dialer({
      index: this.#index,
      registry,
      agents: this.#overseer.agents,
      commands: this.#overseer.commands,
      tls: { ca: trust.ca, cert: trust.clientCert, key: trust.clientKey },
      log: this.#log.child({ component: "dialer" }),
      // Issue 16 (wip/fwrest): each ready link gets the current interception CA bundle.
      onLinkReady: (id) => this.#caPush.onLinkReady(id),
      // Issue 15: a scavenge per 8 MiB of agent output frees its Buffers young (scavenge-pacer.ts).
      onOutput: new ScavengePacer({ log: this.#log.child({ component: "scavenge-pacer" }) }).account,
    });
    const admin = adminService({
      agents: registry,
      sos: this.#sos,
      exec: execAgentHandler({
        dialer: this.#dialer,
        registry,
        log: adminLog.child({ rpc: "ExecAgent" }),
      }),
      // Issue 11: FirewallStatus also lists the decision stream's counters (event_sources).
      firewall: withEventSources(firewallHandlers(this.#firewall, adminLog), this.#events),
    });
    this.#agent = new GrpcListener({
      name: "agent",
      ...cfg.listen.agent,
      tls,
      services: [
        recovered(agentService({ gate, log: agentLog }), agentLog),
        // Issue 11 (wip/triage): an agent asks for a destination; it grants nothing.
        recovered(agentEgressService({ gate, triage: this.#triage, log: agentLog }), agentLog),
      ],
      // Run by the call guard (issue 15: no interceptor layer of their own).
      gates: [
        new AuthInterceptor({
          introspector: cached,
          requiredClientId: AGENT_CLIENT.clientId,
          log: agentLog,
          refusals,
          listener: "agent",
          introspections,
        }).gate,
      ],
      log: agentLog,
      peers: { serve: "agent" },
      countCall: this.#metrics.rpcCounter("agent"),
      limits: {
        ...limits,
        maxConnections: this.#caps.agent,
        maxConnectionsPerPeer: l.maxConnectionsPerAgent,
      },
      refusals,
    });
    this.#admin = new GrpcListener({
      name: "admin",
      ...cfg.listen.admin,
      tls,
      services: [
        recovered(admin, adminLog),
        // Issue 11: EgressService (WatchFirewallEvents; triage's RPCs once it is given).
        recovered(
          egressService({
            hub: this.#events,
            log: adminLog,
            closing: this.#eventsClosing.signal,
            // Backfill older than the ring from the audit log.
            audit: this.#audit,
            maxQueue: cfg.firewall.events.watchQueue,
            triage: triageHandlers(this.#triage, adminLog), // issue 11 (wip/triage)
          }),
          adminLog,
        ),
        recovered(
          jobService({
            dialer: this.#dialer,
            registry,
            log: adminLog.child({ rpc: "JobService" }),
            placement: this.#jobPlacement,
          }),
          adminLog,
        ),
        recovered(
          agentUsageService({
            registry,
            placement: this.#agentUsage,
            log: adminLog.child({ rpc: "AgentUsageService" }),
          }),
          adminLog,
        ),
      ],
      // Run by the call guard in this order (issue 15: no interceptor layer of their own).
      gates: [
        this.#readyGate.gate,
        new AuthInterceptor({
          introspector: cached,
          requiredClientId: CLI_CLIENT.clientId,
          log: adminLog,
          refusals,
          listener: "admin",
          introspections,
        }).gate,
      ],
      log: adminLog,
      // The /healthz probe dials with the control plane's own leaf: it may see HTTP/2, never call.
      peers: { serve: "cli", probe: "controlplane" },
      countCall: this.#metrics.rpcCounter("admin"),
      limits: { ...limits, maxConnections: this.#caps.admin, maxConnectionsPerPeer: this.#caps.admin },
      refusals,
    });
    signal.throwIfAborted();
    const agentPort = await t.step("agent_listener", () => this.#agent!.start());
    signal.throwIfAborted();
    const adminPort = await t.step("admin_listener", () => this.#admin!.start());
    // The same AdminService server on a Unix socket gated by a group (server/group-socket.ts).
    if (cfg.listen.adminSocket.enabled) {
      const path = adminSocketPath(cfg);
      const listener = this.#admin;
      let n = 0;
      this.#adminSocket = new GroupSocket({
        path,
        group: cfg.listen.adminSocket.group,
        log: adminLog,
        onConnection: (socket) => listener.serveLocal(socket, `unix:${path}#${++n}`),
      });
      await t.step("admin_socket", () => this.#adminSocket!.start());
    }
    this.#metricsToken = t.stepSync("metrics_token", () =>
      MetricsToken.loadOrCreate(join(cfg.dataDir, METRICS_TOKEN_FILE)),
    );
    await t.step("healthz", () => this.#health.start(signal));
    this.#addresses = {
      admin: { host: cfg.listen.admin.host, port: adminPort },
      agent: { host: cfg.listen.agent.host, port: agentPort },
      health: this.#health.address,
      ...(this.#adminSocket === undefined ? {} : { adminSocket: adminSocketPath(cfg) }),
    };
    this.#health.addProbe(
      "admin-listener",
      tlsHandshakeProbe(cfg.listen.admin.host, adminPort, {
        ca: trust.ca,
        cert: trust.clientCert,
        key: trust.clientKey,
        servername: "localhost",
        expectHttp2: true,
      }),
    );
  }

  /** 4. Auth stack: the helpers spawned in turn (the first was), each waited healthy; the two clients registered. */
  async #startAuth(trust: TrustMaterial, plan: AuthPlan, signal: AbortSignal): Promise<void> {
    const cfg = this.#config;
    const t = this.#timeline;
    for (const [i, helper] of plan.helpers.entries()) {
      signal.throwIfAborted();
      const instance = helper.instance === undefined ? {} : { instance: helper.instance };
      if (i > 0) {
        await t.step(`spawn_${helper.name}`, () => this.#supervisor.start(helper.name, helper.command));
      }
      await t.step(`healthy_${helper.name}`, () =>
        this.#supervisor.waitHealthy(helper.name, {
          url: helper.healthUrl,
          tls: { ca: trust.ca },
          timeoutMs: cfg.auth.healthTimeoutMs,
          signal,
          ...instance,
        }),
      );
      this.#health.addProbe(helper.name, httpProbe(helper.healthUrl, { ca: trust.ca }, instance));
    }
    const registered = await t.step("register_clients", () =>
      registerClients(clawkerClients({ keys: [trust.cliPublicJwk] }), {
        adminUrl: plan.adminUrl,
        ca: trust.ca,
        signal,
      }),
    );
    for (const [clientId, r] of registered) {
      if (r.outcome !== "replaced") continue;
      // Someone else's registration under our client id (or keys from an older trust dir): it is
      // ours again and its tokens are deleted. A security event either way; no key material.
      this.#log.warn(
        { event: "oauth_client_replaced", clientId, differences: r.differences },
        "a registered OAuth2 client was not ours; replaced it and deleted its tokens",
      );
    }
    this.#log.info(
      {
        event: "clients_registered",
        clients: Object.fromEntries([...registered].map(([id, r]) => [id, r.outcome])),
      },
      `OAuth2 clients ${CLI_CLIENT.clientId} and ${AGENT_CLIENT.clientId} registered`,
    );
  }

  /**
   * The fixed drain order of ARCHITECTURE.md, one line per step, all under one deadline
   * (`shutdownGraceMs`); each step runs even if an earlier one failed. Still to come, at its
   * place: eBPF state (after the firewall stack).
   */
  #drainSteps(): DrainStep[] {
    return [
      { name: "memory_relief", run: () => this.#relief.close() },
      // Before anything else stops: rule changes from here on answer UNAVAILABLE instead of
      // half-applying.
      { name: "firewall_queue", run: () => this.#firewall.closeQueue() },
      { name: "watcher", run: () => Promise.all([this.#watcher?.close(), this.#feeder.close()]) },
      {
        name: "agent_sessions",
        run: () => {
          this.#jobPlacement?.close();
          return this.#dialer?.close();
        },
      },
      // Half of what is left for in-flight calls, so the auth processes keep time for SIGTERM.
      { name: "grpc", run: (b) => this.#closeGrpc(b.remainingMs() / 2) },
      { name: "bypass_timers", run: () => this.#firewall.cancelBypasses() },
      // Issue 11 (wip/triage): the expiry timer stops; stored ends are armed again at the next start.
      { name: "egress_triage", run: () => this.#triage.close() },
      { name: "firewall_stack", run: () => this.#firewall.close() },
      { name: "firewall_events", run: () => this.#bpfEvents?.close() },
      // After the firewall: its last records (bypasses ended, stack down) are written and synced.
      { name: "audit", run: () => this.#audit.close() },
      // Bypasses cleared; the programs stay pinned, so agents are refused, never let out.
      { name: "ebpf", run: () => this.#enforcement?.close() },
      { name: "healthz", run: () => this.#health.close() },
      { name: "refusal_log", run: () => this.#refusals.close() },
      { name: "introspector", run: () => this.#introspector?.close() },
      { name: "topics", run: () => this.#closeTopics() },
      { name: "registry", run: () => this.#registry?.close() },
      { name: "auth_processes", run: (b) => this.#stopHelpers(b.remainingMs()) },
    ];
  }

  #closeTopics(): Promise<void> {
    this.#index.close();
    return this.#overseer.close();
  }

  async #closeGrpc(graceMs: number): Promise<void> {
    // Ends WatchSOS streams that would otherwise hold the graceful close until its grace ran out.
    this.#sos.finish();
    // ...and WatchFirewallEvents streams, likewise.
    this.#eventsClosing.abort();
    await this.#adminSocket?.close();
    await Promise.all([this.#admin?.close(graceMs), this.#agent?.close(graceMs)]);
  }

  async #stopHelpers(deadlineMs: number): Promise<void> {
    const { forced } = await this.#supervisor.shutdown(deadlineMs);
    if (forced.length > 0) throw new ForcedStopError(forced);
  }

  #logCause(cause: StopCause, event: "drain" | "stop_cause_during_drain"): void {
    const late = event === "stop_cause_during_drain";
    switch (cause.kind) {
      case "signal":
        this.#log.info(
          { event, cause: cause.kind, signal: cause.signal },
          late ? "signal received during the drain" : "signal received, draining",
        );
        break;
      case "drained_to_zero":
        this.#log.info(
          { event, cause: cause.kind },
          late ? "no agents left (already draining)" : "no agents left, draining",
        );
        break;
      case "helper_crash":
        this.#log.error(
          { event, cause: cause.kind, ...cause.crash },
          late ? "helper crashed during the drain" : "helper crashed, draining",
        );
        break;
      case "serve_failure":
      case "startup_failed":
      case "fatal":
        this.#log.error(
          { event, cause: cause.kind, err: cause.error },
          late ? "failure during the drain" : "failure, draining",
        );
        break;
    }
  }
}

/** Wire verdicts and layers as the metrics name them. */
const METRIC_VERDICTS: Partial<Record<egress.Verdict, FirewallVerdict>> = {
  [egress.Verdict.VERDICT_ALLOWED]: "allowed",
  [egress.Verdict.VERDICT_DENIED]: "denied",
  [egress.Verdict.VERDICT_BYPASSED]: "bypassed",
};
const METRIC_LAYERS: Partial<Record<egress.Layer, FirewallLayer>> = {
  [egress.Layer.LAYER_DNS]: "dns",
  [egress.Layer.LAYER_BPF]: "bpf",
  [egress.Layer.LAYER_PROXY]: "proxy",
};

function recovered(binding: ServiceBinding, log: Logger): ServiceBinding {
  return {
    definition: binding.definition,
    implementation: withRecovery(binding.definition, binding.implementation, log),
  };
}

/** The firewall's enforcement slots over the eBPF Enforcement (modes, routes, targets). */
function enforcementSlots(
  enforcement: Enforcement,
): Pick<FirewallOptions, "enforcer" | "routes" | "steering"> {
  return {
    enforcer: { apply: (id, mode, _signal, seconds) => enforcement.apply(id, mode, seconds) },
    routes: {
      apply: (routes) =>
        enforcement.syncRoutes(
          routes.map((r) => ({
            identity: r.identity,
            port: r.dstPort,
            protocol: r.protocol,
            listener: r.proxyPort,
          })),
        ),
    },
    steering: {
      steer: (targets) => enforcement.setTargets(targets),
      refuse: (where) => enforcement.setTargets({ ...CLOSED_TARGETS, ...where }),
    },
  };
}
