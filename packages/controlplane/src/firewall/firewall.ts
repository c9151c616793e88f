// The firewall subsystem: owns the rule store (in the daemon's database file), the action queue,
// the egress proxy (HAProxy, spawned through the daemon's process host), the interception CA and
// the per-container modes; reconciles stored rules into the running stack (compile -> proxy ->
// DNS gate -> eBPF routes). The daemon constructs it, calls start(signal) at start-up step 6 and
// its three drain steps; the AdminService handlers (handlers.ts) call the rest. See README.md.
import { mkdir, readFile } from "node:fs/promises";
import { Resolver as DnsResolver } from "node:dns/promises";
import { networkInterfaces } from "node:os";
import { isAbsolute, join } from "node:path";
import { LABELS } from "@clawker/overseer";
import type { Logger } from "pino";
import type { AddressIndexChange, ContainerRecord } from "../agents/address-index.js";
import type { AgentRecord } from "../agents/registry.js";
import type { Config } from "../config.js";
import { ActionQueue, type MutationOutcome } from "./action-queue.js";
import type { AuditSink } from "./audit/audit-log.js";
import { auditWhoOf as whoOf, type AuditActionKind } from "./audit/audit-record.js";
import { compileFirewall, type CompiledDns, type CompiledFirewall, type CompiledRoute } from "./compile.js";
import { ContainerModes, type ContainerModeState, type ModeEnforcer } from "./container-modes.js";
import { parseDestination } from "./destination.js";
import { FirewallError, QueueClosedError, SavedNotAppliedError, quote } from "./errors.js";
import { loadFloorFile } from "./floor-file.js";
import { hostResolvers } from "./host-resolvers.js";
import { InterceptionCa } from "./interception-ca.js";
import { EgressProxy, type ProxyDecision, type ProxyProcessHost, type ProxySource } from "./proxy/index.js";
import { writeFileAtomic } from "./proxy/map-files.js";
import { isIpv4 } from "./proxy/policy.js";
import type { Resolver } from "./host-resolvers.js";
import type { RuleInput } from "./rule.js";
import { UdpRelay } from "./udp-relay.js";
import {
  type Actor,
  type AddStatus,
  type RemoveResult,
  type RemoveSelector,
  RuleStore,
} from "./rule-store.js";
import type { ListedRule } from "./rule-store.js";

/** The firewall's settings (the `firewall` section of the daemon's config). */
export type FirewallSettings = Config["firewall"];

/** The agents' Docker network, as far as the firewall needs it. */
export interface AgentNetwork {
  readonly id: string;
  readonly subnet?: string | undefined;
  readonly gateway?: string | undefined;
}

/** Looks the agents' network up by name (Docker); undefined when it does not exist. */
export type NetworkLookup = (name: string, signal: AbortSignal) => Promise<AgentNetwork | undefined>;

/** The running agent containers (the address index): who is who by address, and changes. */
export interface FirewallContainers {
  records(): readonly ContainerRecord[];
  onChange(listener: (change: AddressIndexChange) => void): () => void;
}

/**
 * The DNS gate as the firewall drives it (src/firewall/dns/ builds one): started with the stack,
 * handed the compiled rules and clients on every reconcile, closed with the stack.
 */
export interface DnsGate {
  /** The address it answers on (FirewallInit's `coredns_ip`). */
  readonly address: string;
  start(signal: AbortSignal): Promise<void>;
  apply(dns: CompiledDns): Promise<void>;
  /** True when it answers; false (never a rejection) otherwise. */
  healthy(): Promise<boolean>;
  close(): Promise<void>;
}

/** What a DNS gate is built from when the stack comes up. */
export interface DnsGateOptions {
  readonly address: string;
  readonly port: number;
  readonly clients: readonly string[];
  readonly resolvers: readonly Resolver[];
  /** Its own folder in the firewall dir (config file). */
  readonly dir: string;
  readonly log: Logger;
}

export type { Resolver };

/**
 * Where compiled routes go (the eBPF manager's route map). Resolves with how many routes took
 * effect in the kernel.
 */
export interface RouteSink {
  apply(routes: readonly CompiledRoute[], signal: AbortSignal): Promise<number>;
}

/**
 * Where the kernel steers agents' sockets (the eBPF enforcement's targets): the proxy's address
 * and catch-all port, the DNS gate, the agents' subnet (passes) and gateway (refused, except its
 * `gatewayPorts`).
 */
export interface SteeringTargets {
  readonly proxy: string;
  readonly dns: string;
  readonly dnsPort?: number;
  readonly catchallPort: number;
  /** Non-zero when UDP routes are relayed (the UDP relay is up); each goes to its route's port. */
  readonly udpPort?: number;
  readonly gateway?: string;
  /** TCP ports of `gateway` that pass: the control plane's agent-facing listeners bound there. */
  readonly gatewayPorts?: readonly number[];
  readonly subnet?: string;
}

/** What the steering keeps once the stack is down: the subnet passes, the gateway does not (but its exempt ports). */
export type RefusedTargets = Pick<SteeringTargets, "subnet" | "gateway" | "gatewayPorts">;

/** One agent-facing listener of the control plane (agent gRPC, token endpoint). */
export interface AgentFacingListener {
  readonly host: string;
  readonly port: number;
}

/**
 * The eBPF enforcement as the firewall drives it: agents steered to the stack while it is up, and
 * refused (everything steered goes nowhere; only their own subnet passes) while it is down.
 */
export interface Steering {
  /** The stack is up: steer every agent to it. Resolves once the kernel has it. */
  steer(targets: SteeringTargets): Promise<void>;
  /**
   * The stack is down: refuse every steered socket; `subnet` (agent to agent) still passes, except
   * `gateway`, which is refused too but for its `gatewayPorts`.
   */
  refuse(where: RefusedTargets): Promise<void>;
}

/** What the firewall is built from. */
export interface FirewallOptions {
  readonly settings: FirewallSettings;
  /** The daemon's data dir: `settings.dir` is relative to it. */
  readonly dataDir: string;
  /** The daemon's sqlite file (the registry's); the rule tables live beside the agents table. */
  readonly database: string;
  /** Runs HAProxy: the daemon's SubprocessManager (crash reporting included). */
  readonly host: ProxyProcessHost;
  readonly containers: FirewallContainers;
  /** Registered agents (the registry): container ids FirewallEnable and friends may name. */
  readonly agents: { list(): readonly AgentRecord[] };
  readonly network: NetworkLookup;
  readonly log: Logger;
  /** Builds the DNS gate; absent until the gate lands: names are then answered by nobody. */
  readonly dnsGate?: (options: DnsGateOptions) => DnsGate;
  /** Takes the eBPF routes; absent until the eBPF manager lands (routes are then computed only). */
  readonly routes?: RouteSink;
  /** Puts container modes into the kernel (the eBPF enforcement); absent: modes are recorded only. */
  readonly enforcer?: ModeEnforcer;
  /**
   * Steers agents to the stack (the eBPF enforcement). Absent, the stack refuses to come up
   * (`not_enforced`) unless `settings.allowUnenforced`: a proxy nothing steers to enforces nothing.
   */
  readonly steering?: Steering;
  /**
   * The control plane's agent-facing listeners (agent gRPC, token endpoint). Those bound on the
   * agents' gateway must stay reachable: their ports of the gateway pass, every other port of it
   * is refused (README, "What is enforced").
   */
  readonly agentFacing?: readonly AgentFacingListener[];
  readonly onDecision?: (decision: ProxyDecision) => void;
  /** Told of proxy decision lines the kernel dropped before the daemon read them. */
  readonly onDecisionsDropped?: (count: number) => void;
  /**
   * The audit log: every committed rule change, enable, disable, bypass start and end, stack up
   * and down and CA rotation, with who asked (audit/README.md). Absent: not recorded.
   */
  readonly audit?: AuditSink;
  readonly now?: () => number;
  /** Where the default upstream resolvers come from (default /etc/resolv.conf); tests change it. */
  readonly resolvConf?: string;
  /**
   * Puts a CA bundle into every running agent (ca-push.ts). Absent: a rotated CA reaches only
   * agents made after it (README, "The interception CA").
   */
  readonly caPush?: { pushAll(bundle: string): Promise<unknown> };
}

/** FirewallInit's answer. */
export interface StackAddresses {
  readonly proxyAddress: string;
  readonly dnsAddress: string;
  readonly networkId: string;
}

/** FirewallStatus's answer. */
export interface FirewallState {
  readonly running: boolean;
  readonly proxyHealthy: boolean;
  readonly dnsHealthy: boolean;
  readonly ruleCount: number;
  readonly proxyAddress: string;
  readonly dnsAddress: string;
  readonly networkId: string;
  readonly cidr: string;
  readonly containers: readonly ContainerModeState[];
  /** The interception CA certificate agents must trust (PEM); "" when none was made yet. */
  readonly interceptionCaPem: string;
}

/** What a reconcile reports to the callers it served. */
interface Reconciled {
  readonly running: boolean;
}

interface Stack {
  readonly proxy: EgressProxy;
  readonly dns: DnsGate | undefined;
  /** `udp` rules' datagrams (HAProxy proxies no UDP): in this process, on the proxy's address. */
  readonly udp: UdpRelay;
  readonly address: string;
  readonly network: AgentNetwork | undefined;
  readonly cidr: string;
  /** Where agents were steered (their subnet and gateway stay the same once the stack is down). */
  readonly steered: SteeringTargets;
  readonly forbidden: readonly string[];
  readonly ports: {
    readonly tls: number;
    readonly http: number;
    readonly routes: readonly number[];
    readonly udp: readonly number[];
  };
  /** Interception certificates installed in this proxy: name -> CA fingerprint and expiry. */
  readonly certificates: Map<string, { readonly ca: string; readonly notAfterMs: number }>;
}

/** The state file's name in the firewall dir: whether the stack was left up. */
const STATE_FILE = "state.json";
/** Leaves this close to their end are re-issued at the next reconcile. */
const LEAF_RENEW_BEFORE_MS = 7 * 24 * 3600_000;
/** Budget of one health look at the proxy or DNS gate (FirewallStatus). */
const HEALTH_TIMEOUT_MS = 1_000;
const CONTAINER_ID = /^[0-9a-f]{1,64}$/;
// The proxy's scope-name token (proxy/policy.ts).
const SOURCE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,128}$/;

/** The firewall subsystem (see the file comment). */
export class Firewall {
  readonly #options: FirewallOptions;
  readonly #settings: FirewallSettings;
  readonly #dir: string;
  readonly #log: Logger;
  readonly #queue: ActionQueue<Reconciled>;
  readonly #ca: InterceptionCa;
  readonly #modes: ContainerModes;
  #store: RuleStore | undefined;
  #stack: Stack | undefined;
  #listeners: ReadonlyMap<string, number> = new Map();
  #udpListeners: ReadonlyMap<string, number> = new Map();
  #compiled: CompiledFirewall | undefined;
  /** Rule ids reported as skipped by the last compile, so each is logged once per change. */
  #skipped = new Set<string>();
  #unsubscribe: (() => void) | undefined;
  /** During a rotation, until the proxy presents the new CA's certificates: the new CA and the old. */
  #overlapBundle: string | undefined;
  #closing = false;
  #closed: Promise<void> | undefined;

  constructor(options: FirewallOptions) {
    this.#options = options;
    this.#settings = options.settings;
    this.#dir = isAbsolute(options.settings.dir)
      ? options.settings.dir
      : join(options.dataDir, options.settings.dir);
    this.#log = options.log.child({ component: "firewall" });
    this.#queue = new ActionQueue({ reconcile: (signal) => this.#reconcile(signal), log: this.#log });
    this.#ca = new InterceptionCa({
      dir: join(this.#dir, "ca"),
      ...(options.now ? { now: options.now } : {}),
    });
    this.#modes = new ContainerModes({
      log: this.#log,
      // audit: a bypass's end, however it ends (expiry, enable, stack down, shutdown).
      onBypassEnd: (containerId, cause) =>
        options.audit?.action("bypass_end", {}, { container_id: containerId, cause }),
      ...(options.enforcer ? { enforcer: options.enforcer } : {}),
      ...(options.now ? { now: options.now } : {}),
    });
  }

  /** The firewall's folder (proxy files, CA, state). */
  get dir(): string {
    return this.#dir;
  }

  /** True while the stack (proxy, DNS gate) runs: a rule added now is live once addRules resolves. */
  get running(): boolean {
    return this.#stack !== undefined;
  }

  /** The daemon's sqlite file the rule tables (and the triage's) live in. */
  get database(): string {
    return this.#options.database;
  }

  /** The interception CA certificate file agents must trust. */
  get caCertFile(): string {
    return this.#ca.certFile;
  }

  /**
   * Opens the rule store (floor file included: an invalid one fails start-up, listing every
   * problem) and brings the stack up when the config says so or the last FirewallInit left it up.
   * Rejects (start-up fails) when that bring-up fails.
   */
  async start(signal: AbortSignal): Promise<void> {
    await mkdir(this.#dir, { recursive: true, mode: 0o700 });
    const floor = this.#settings.floorFile === undefined ? [] : loadFloorFile(this.#settings.floorFile);
    const audit = this.#options.audit;
    this.#store = new RuleStore({
      db: this.#options.database,
      floor,
      // Refused at add time, nothing written: past it the proxy would refuse every reconcile.
      maxRules: this.#settings.proxy.maxRules,
      // audit: one rule_change record per committed rule_changes row, with its before and after.
      ...(audit === undefined
        ? {}
        : {
            onChange: (c) =>
              audit.action("rule_change", whoOf(c.actor), {
                op: c.op,
                key: c.key,
                change_seq: c.seq,
                before: c.before ?? null,
                after: c.after ?? null,
              }),
          }),
    });
    this.#unsubscribe = this.#options.containers.onChange((change) => this.#onContainerChange(change));
    const wanted = this.#settings.enabled || (await this.#readState()).up;
    this.#log.info(
      { event: "firewall_opened", rules: this.#store.list().length, floor: floor.length, bringUp: wanted },
      "firewall rules loaded",
    );
    if (wanted) {
      await this.#bringUp(signal);
      await this.#applyOrTearDown(signal);
    } else {
      await this.#refuseWithoutStack(signal);
    }
  }

  // ---- AdminService operations (handlers.ts maps them to the wire) ----

  /** FirewallInit: brings the stack up (idempotent) and records that it should stay up. */
  init(actor?: Actor): Promise<StackAddresses> {
    return this.#audited("stack_up", actor, {}, () =>
      this.#run(async (signal) => {
        if (this.#stack === undefined) {
          await this.#bringUp(signal);
          await this.#applyOrTearDown(signal);
        }
        await this.#writeState({ up: true });
        return this.#addresses(this.#stack!);
      }),
    );
  }

  /** FirewallRemove: tears the stack down and records that it stays down. */
  remove(actor?: Actor): Promise<void> {
    return this.#audited("stack_down", actor, {}, () =>
      this.#run(async () => {
        await this.#tearDown();
        await this.#writeState({ up: false });
      }),
    );
  }

  /**
   * FirewallAddRules: validated and stored in one transaction (nothing on InvalidRuleError or
   * FloorRuleError), then applied. When the stack runs and applying fails, the rules stay stored
   * and the call fails with SavedNotAppliedError.
   */
  async addRules(inputs: readonly RuleInput[], actor: Actor): Promise<AddStatus[]> {
    const store = this.#openStore();
    const outcome = await this.#queue.mutate(() => store.add(inputs, actor));
    this.#log.info(
      {
        event: "rules_added",
        clientId: actor.clientId,
        certCn: actor.certCn,
        added: outcome.value.filter((s) => s === "added").length,
        modified: outcome.value.filter((s) => s === "modified").length,
        unchanged: outcome.value.filter((s) => s === "unchanged").length,
      },
      "egress rules added",
    );
    this.#requireApplied(outcome);
    return outcome.value;
  }

  /** FirewallRemoveRule: a missing rule is `not_found` in the result, never an error. */
  async removeRule(selector: RemoveSelector, actor: Actor): Promise<RemoveResult> {
    const store = this.#openStore();
    const outcome = await this.#queue.mutate(() => store.remove(selector, actor));
    this.#log.info(
      {
        event: "rules_removed",
        clientId: actor.clientId,
        certCn: actor.certCn,
        status: outcome.value.status,
        count: outcome.value.count,
        all: selector.all === true,
      },
      "egress rules removed",
    );
    this.#requireApplied(outcome);
    return outcome.value;
  }

  /** FirewallListRules: every rule, floor rules included, in canonical order. */
  listRules(): readonly ListedRule[] {
    return this.#openStore().list();
  }

  /** FirewallReload: applies the stored rules again; false (nothing restarted, ever). */
  async reload(): Promise<void> {
    this.#openStore();
    await this.#queue.reconcile();
  }

  /** FirewallStatus: every field, health looked at now (bounded). */
  async status(): Promise<FirewallState> {
    const store = this.#openStore();
    const stack = this.#stack;
    const caPem = (await this.#ca.publicCertPem()) ?? "";
    const [proxyHealthy, dnsHealthy] =
      stack === undefined
        ? [false, false]
        : await Promise.all([
            withTimeout(
              stack.proxy.health().then(() => true),
              false,
            ),
            stack.dns === undefined ? false : withTimeout(stack.dns.healthy(), false),
          ]);
    return {
      running: stack !== undefined,
      proxyHealthy,
      dnsHealthy,
      ruleCount: store.list().length,
      proxyAddress: stack?.address ?? "",
      dnsAddress: stack?.dns?.address ?? "",
      networkId: stack?.network?.id ?? "",
      cidr: stack?.cidr ?? "",
      containers: this.#modes.list(),
      interceptionCaPem: caPem,
    };
  }

  /**
   * FirewallRotateCA: a new interception CA; every intercepted name gets a certificate from it,
   * hot-loaded (passthrough tunnels and other sessions are not touched).
   */
  async rotateCa(actor?: Actor): Promise<void> {
    await this.#audited("ca_rotated", actor, {}, () => this.#rotateCa());
  }

  /** Rotates the CA; the fingerprints before and after (the audit record's). */
  #rotateCa(): Promise<{ before: string; after: string }> {
    return this.#run(async (signal) => {
      await this.#ca.load();
      const before = this.#ca.fingerprint;
      const oldPem = this.#ca.certPem;
      await this.#ca.rotate();
      const newPem = this.#ca.certPem;
      this.#log.warn(
        { event: "interception_ca_rotated", before, after: this.#ca.fingerprint, file: this.#ca.certFile },
        "interception CA rotated",
      );
      const stack = this.#stack;
      const push = this.#options.caPush;
      try {
        if (stack !== undefined && this.#compiled !== undefined) {
          // Agents trust both before the proxy presents the new one's certificates, so a process
          // started in an agent at any moment of the rotation verifies what it is shown.
          this.#overlapBundle = joinPem(newPem, oldPem);
          await push?.pushAll(this.#overlapBundle);
          await this.#installCertificates(stack, this.#compiled.certificates, signal);
        }
      } finally {
        this.#overlapBundle = undefined;
      }
      // The old CA signs nothing the proxy presents any more: agents stop trusting it.
      await push?.pushAll(newPem);
      return { before, after: this.#ca.fingerprint };
    });
  }

  /**
   * The CA bundle agents should hold now: the interception CA, plus the previous one while a
   * rotation has not yet switched the proxy to the new one's certificates; undefined before any
   * CA was made.
   */
  async trustBundle(): Promise<string | undefined> {
    return this.#overlapBundle ?? (await this.#ca.publicCertPem());
  }

  /** FirewallSyncRoutes: recompiles from the store and hands the routes over; how many took effect. */
  syncRoutes(): Promise<number> {
    return this.#run(async (signal) => {
      if (this.#stack === undefined) return 0;
      const compiled = this.#compile(this.#stack);
      return (await this.#options.routes?.apply(compiled.routes, signal)) ?? 0;
    });
  }

  /** FirewallResolveHostname: A records from the configured upstream resolvers (not the host's). */
  async resolveHostname(hostname: string): Promise<string[]> {
    this.#openStore();
    const parsed = parseDestination(hostname);
    if (!parsed.ok || parsed.dst.startsWith("*.") || parsed.dst.includes("/")) {
      throw new FirewallError(
        "invalid_request",
        `hostname ${quote(hostname)} is not a DNS name${parsed.ok ? "" : ` (${parsed.message})`}`,
      );
    }
    if (isIpv4(parsed.dst)) return [parsed.dst];
    const resolver = new DnsResolver({ timeout: 2_000, tries: 2 });
    resolver.setServers((await this.#resolvers()).map((r) => `${r.address}:${r.port}`));
    try {
      return (await resolver.resolve4(parsed.dst)).sort();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOTFOUND" || code === "ENODATA") return [];
      throw new FirewallError(
        "resolve_failed",
        `the upstream resolvers did not answer for ${parsed.dst} (${code ?? "error"})`,
        {
          cause: err,
        },
      );
    }
  }

  /** FirewallEnable: the container is enforced again (ends a bypass or a disable). */
  async enable(containerId: string, actor?: Actor): Promise<void> {
    await this.#audited("enable", actor, { container_id: containerId }, () =>
      this.#run(async (signal) => {
        const id = this.#container(containerId);
        return { container_id: id, enforced: await this.#modes.enforce(id, signal) };
      }),
    );
  }

  /** FirewallDisable: the container is no longer enforced (until enable or a restart). */
  async disable(containerId: string, actor?: Actor): Promise<void> {
    await this.#audited("disable", actor, { container_id: containerId }, () =>
      this.#run(async (signal) => {
        const id = this.#container(containerId);
        return { container_id: id, enforced: await this.#modes.disable(id, signal) };
      }),
    );
  }

  /** FirewallBypass: unrestricted egress for `seconds` (1-3600), then enforcement comes back by itself. */
  async bypass(containerId: string, seconds: number, actor?: Actor): Promise<void> {
    const request = { container_id: containerId, timeout_seconds: seconds };
    await this.#audited("bypass_start", actor, request, () =>
      this.#run(async (signal) => {
        const id = this.#container(containerId);
        return { container_id: id, seconds, enforced: await this.#modes.bypass(id, seconds, signal) };
      }),
    );
  }

  /** The rule store's change log (who changed what), for tests and tools. */
  get store(): RuleStore {
    return this.#openStore();
  }

  // ---- drain (ARCHITECTURE.md "Shutdown and drain": one line each in the daemon's table) ----

  /**
   * The drain's first firewall step, before anything stops serving: the queue refuses new work
   * (UNAVAILABLE) and settles once idle.
   */
  async closeQueue(): Promise<void> {
    this.#closing = true;
    await this.#queue.close();
  }

  /** After gRPC stopped: every bypass timer is cancelled. */
  cancelBypasses(): void {
    this.#modes.clear();
  }

  /** Stops the proxy and DNS gate and closes the store. Idempotent. */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#closing = true;
      await this.#queue.close();
      this.#unsubscribe?.();
      this.#modes.clear();
      try {
        await this.#tearDown();
      } finally {
        this.#store?.close();
      }
    })();
    return this.#closed;
  }

  // ---- internals ----

  /**
   * Runs an operator action and records it in the audit log with who asked and the request:
   * `outcome: "ok"` with what it did (an object result is merged in), or `outcome: "failed"`
   * with the refusal's reason, so refused attempts (a disable tried without the rights to
   * succeed, say) are on record too.
   */
  async #audited<T>(
    kind: AuditActionKind,
    actor: Actor | undefined,
    request: Record<string, unknown>,
    run: () => Promise<T>,
  ): Promise<T> {
    const audit = this.#options.audit;
    const who = actor === undefined ? {} : whoOf(actor);
    try {
      const result = await run();
      const done = typeof result === "object" && result !== null ? result : {};
      audit?.action(kind, who, { request, outcome: "ok", ...done });
      return result;
    } catch (err) {
      const reason = err instanceof FirewallError ? err.reason : "internal";
      audit?.action(kind, who, { request, outcome: "failed", reason });
      throw err;
    }
  }

  /** Runs an action on the queue, in order with every mutation; refused once closing. */
  async #run<T>(action: (signal: AbortSignal) => Promise<T>): Promise<T> {
    this.#openStore();
    return await this.#queue.run(action);
  }

  #openStore(): RuleStore {
    if (this.#closing) throw new QueueClosedError();
    if (this.#store === undefined) throw new FirewallError("internal", "firewall not started");
    return this.#store;
  }

  #requireApplied(outcome: MutationOutcome<unknown, Reconciled>): void {
    if (outcome.applied) return;
    this.#log.warn({ err: outcome.error, event: "rules_saved_not_applied" }, "rules saved but not applied");
    throw new SavedNotAppliedError({ cause: outcome.error });
  }

  async #bringUp(signal: AbortSignal): Promise<void> {
    const s = this.#settings;
    const steering = this.#options.steering;
    if (steering === undefined && !s.allowUnenforced) {
      // Deny by default: a proxy that nothing steers agents to would report rules it never enforces.
      throw new FirewallError(
        "not_enforced",
        "the eBPF enforcement is off, so nothing would steer agents to the proxy: set ebpf.enabled: true (needs root, cgroup2 and bpffs)",
      );
    }
    let network: AgentNetwork | undefined;
    try {
      network = await this.#options.network(s.network, AbortSignal.any([signal, AbortSignal.timeout(5_000)]));
    } catch (err) {
      this.#log.warn(
        { err, network: s.network, event: "agent_network_unknown" },
        "agents' network not found",
      );
    }
    const address = s.proxy.address ?? network?.gateway;
    const clients = s.clients ?? (network?.subnet === undefined ? undefined : [network.subnet]);
    if (address === undefined || clients === undefined) {
      throw new FirewallError(
        "not_configured",
        `the proxy needs an address and the agents' networks: set firewall.proxy.address and firewall.clients, or create the Docker network ${quote(s.network)} (its gateway and subnet are the defaults)`,
      );
    }
    const resolvers = await this.#resolvers();
    await this.#ca.load();
    const routePorts = Array.from(
      { length: s.proxy.routePorts.count },
      (_, i) => s.proxy.routePorts.first + i,
    );
    // UDP port numbers are a namespace of their own: the relay reuses the route listeners' numbers.
    const ports = { tls: s.proxy.tlsPort, http: s.proxy.httpPort, routes: routePorts, udp: routePorts };
    const proxy = new EgressProxy({
      config: {
        dir: join(this.#dir, "proxy"),
        haproxy: s.proxy.haproxy,
        listen: { address, tlsPort: ports.tls, httpPort: ports.http, routePorts: s.proxy.routePorts },
        clients: [...clients],
        resolvers: resolvers.map((r) => ({ address: r.address, port: r.port })),
        maxRules: s.proxy.maxRules,
        ...(s.proxy.upstreamCaFile === undefined ? {} : { upstreamCaFile: s.proxy.upstreamCaFile }),
      },
      host: this.#options.host,
      log: this.#log,
      ...(this.#options.onDecision ? { onDecision: this.#options.onDecision } : {}),
      ...(this.#options.onDecisionsDropped ? { onDecisionsDropped: this.#options.onDecisionsDropped } : {}),
    });
    try {
      await proxy.start(signal);
    } catch (err) {
      throw new FirewallError("stack_failed", `egress proxy did not start: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const dnsAddress = s.dns.address ?? address;
    let dns: DnsGate | undefined;
    if (this.#options.dnsGate !== undefined) {
      dns = this.#options.dnsGate({
        address: dnsAddress,
        port: s.dns.port,
        clients,
        resolvers,
        dir: join(this.#dir, "dns"),
        log: this.#log,
      });
      try {
        await dns.start(signal);
      } catch (err) {
        await proxy.close();
        throw new FirewallError("stack_failed", `DNS gate did not start: ${(err as Error).message}`, {
          cause: err,
        });
      }
    }
    // The relay binds its sockets at the first reconcile (one per routed UDP rule port).
    const upstreams = new DnsResolver({ timeout: 2_000, tries: 2 });
    upstreams.setServers(resolvers.map((r) => `${r.address}:${r.port}`));
    const udp = new UdpRelay({
      address,
      resolve: (name) => upstreams.resolve4(name),
      log: this.#log,
      ...(this.#options.onDecision ? { onDecision: this.#options.onDecision } : {}),
    });
    const cidr = network?.subnet ?? clients[0]!;
    const targets = this.#targets(address, dnsAddress, cidr, network?.gateway, ports.tls, routePorts[0]);
    if (steering === undefined) {
      this.#log.error(
        { event: "firewall_unenforced", proxy: address },
        "firewall stack up WITHOUT eBPF enforcement (firewall.allowUnenforced): agents are not steered to it",
      );
    } else {
      try {
        await steering.steer(targets);
      } catch (err) {
        await this.#closeStack(proxy, dns, udp);
        throw new FirewallError("stack_failed", `agents could not be steered: ${(err as Error).message}`, {
          cause: err,
        });
      }
    }
    this.#stack = {
      proxy,
      dns,
      udp,
      address,
      network,
      cidr,
      steered: targets,
      forbidden: forbiddenList(s.forbidden, [address, dnsAddress, ...clients]),
      ports,
      certificates: new Map(),
    };
    this.#log.info(
      {
        event: "firewall_up",
        proxy: address,
        dns: dns?.address ?? null,
        networkId: network?.id ?? null,
        clients,
        steered: steering === undefined ? null : targets,
        routes: this.#options.routes !== undefined,
      },
      "firewall stack up",
    );
  }

  /**
   * Where agents are steered: the proxy's catch-all, the DNS gate, their subnet (passes) and the
   * gateway (refused but for the control plane's agent-facing ports on it).
   */
  #targets(
    proxy: string,
    dns: string,
    subnet: string,
    gateway: string | undefined,
    catchallPort: number,
    udpPort: number | undefined,
  ): SteeringTargets {
    return {
      proxy,
      dns,
      dnsPort: this.#settings.dns.port,
      catchallPort,
      // Non-zero: UDP routes are relayed (each to its route's port); 0 would deny them all.
      ...(udpPort === undefined ? {} : { udpPort }),
      subnet,
      ...this.#refusedGateway(gateway),
    };
  }

  /**
   * The gateway agents are refused, with the ports of the control plane's agent-facing listeners
   * that bind it (agents register there); every other port of it stays refused, so a host service
   * bound to all addresses is not reachable from agents.
   */
  #refusedGateway(gateway: string | undefined): Pick<SteeringTargets, "gateway" | "gatewayPorts"> {
    if (gateway === undefined) return {};
    const ports = [
      ...new Set((this.#options.agentFacing ?? []).filter((l) => l.host === gateway).map((l) => l.port)),
    ].sort((a, b) => a - b);
    if (ports.length === 0) return { gateway };
    this.#log.info(
      { event: "gateway_ports_pass", gateway, ports },
      "the control plane listens for agents on their gateway: only its ports of the gateway pass",
    );
    return { gateway, gatewayPorts: ports };
  }

  /**
   * No stack at start: agents stay refused, but their own subnet passes (the enforcement starts
   * with closed targets and no subnet, which would also refuse a control plane agents register
   * with on their network), and the gateway is refused unless agents must reach it.
   */
  async #refuseWithoutStack(signal: AbortSignal): Promise<void> {
    const steering = this.#options.steering;
    if (steering === undefined) return;
    const s = this.#settings;
    let network: AgentNetwork | undefined;
    try {
      network = await this.#options.network(s.network, AbortSignal.any([signal, AbortSignal.timeout(5_000)]));
    } catch (err) {
      signal.throwIfAborted();
      this.#log.warn(
        { err, network: s.network, event: "agent_network_unknown" },
        "agents' network not found",
      );
    }
    const subnet = network?.subnet ?? s.clients?.[0];
    if (subnet === undefined) return; // closed targets, nothing passes: stricter, never looser
    try {
      await steering.refuse({ subnet, ...this.#refusedGateway(network?.gateway) });
    } catch (err) {
      // The closed targets stay: stricter than what failed, so start-up goes on.
      this.#log.error({ err, event: "steering_not_set" }, "agents' subnet could not be let through");
    }
  }

  /** The first apply after bring-up; a failure takes the stack down again (nothing half-up). */
  async #applyOrTearDown(signal: AbortSignal): Promise<void> {
    try {
      await this.#reconcile(signal);
    } catch (err) {
      await this.#tearDown();
      throw new FirewallError(
        "stack_failed",
        `firewall rules could not be applied: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
  }

  async #tearDown(): Promise<void> {
    const stack = this.#stack;
    if (stack === undefined) return;
    // First, so nothing applies to a stack on its way out.
    this.#stack = undefined;
    this.#compiled = undefined;
    // Bypasses and disables end with the stack, in the kernel too: nothing stays let out.
    await this.#modes.restoreAll();
    try {
      // Before the proxy goes: agents are refused from here on, never steered to a stranger that
      // might bind the proxy's port next.
      await this.#options.steering?.refuse(refusal(stack.steered));
    } catch (err) {
      this.#log.error(
        { err, event: "steering_not_closed" },
        "agents could not be switched to refusal; they stay steered to the stopped proxy",
      );
    }
    await this.#closeStack(stack.proxy, stack.dns, stack.udp);
    this.#log.info({ event: "firewall_down" }, "firewall stack down");
  }

  async #closeStack(proxy: EgressProxy, dns: DnsGate | undefined, udp?: UdpRelay): Promise<void> {
    try {
      await udp?.close();
      await dns?.close();
    } finally {
      await proxy.close();
    }
  }

  #addresses(stack: Stack): StackAddresses {
    return {
      proxyAddress: stack.address,
      dnsAddress: stack.dns?.address ?? "",
      networkId: stack.network?.id ?? "",
    };
  }

  /** The queue's reconcile: compile -> certificates -> proxy -> DNS gate -> routes. */
  async #reconcile(signal: AbortSignal): Promise<Reconciled> {
    const stack = this.#stack;
    if (stack === undefined) return { running: false };
    const compiled = this.#compile(stack);
    await this.#installCertificates(stack, compiled.certificates, signal);
    signal.throwIfAborted();
    // Removing or narrowing a rule retires its session tag, and the sockets marked with it are
    // destroyed: the sessions opened under it end (proxy/README.md, "Live updates and revocation").
    await stack.proxy.apply(compiled.proxy);
    await stack.dns?.apply(compiled.dns);
    // Before the routes: a new UDP route's socket is bound before the kernel steers to it, and a
    // removed rule's socket and sessions close (revocation) as its route goes.
    await stack.udp.apply({
      routes: compiled.udp,
      sources: compiled.proxy.sources,
      forbidden: stack.forbidden,
    });
    await this.#options.routes?.apply(compiled.routes, signal);
    this.#compiled = compiled;
    return { running: true };
  }

  #compile(stack: Stack): CompiledFirewall {
    const compiled = compileFirewall({
      rules: this.#openStoreForReconcile().list(),
      sources: this.#sources(),
      forbidden: stack.forbidden,
      ports: stack.ports,
      listeners: this.#listeners,
      udpListeners: this.#udpListeners,
    });
    this.#listeners = compiled.listeners;
    this.#udpListeners = compiled.udpListeners;
    const now = new Set(compiled.skipped.map((s) => `${s.ruleId} ${s.reason}`));
    for (const s of compiled.skipped) {
      if (!this.#skipped.has(`${s.ruleId} ${s.reason}`)) {
        this.#log.warn({ event: "rule_not_compiled", ruleId: s.ruleId, reason: s.reason }, s.message);
      }
    }
    this.#skipped = now;
    return compiled;
  }

  #openStoreForReconcile(): RuleStore {
    if (this.#store === undefined) throw new FirewallError("internal", "firewall not started");
    return this.#store;
  }

  /** Issues (or re-issues: new CA, near expiry) and hot-loads the certificate of every intercepted name. */
  async #installCertificates(stack: Stack, names: readonly string[], signal?: AbortSignal): Promise<void> {
    const ca = this.#ca.fingerprint;
    const now = this.#options.now?.() ?? Date.now();
    for (const name of names) {
      const held = stack.certificates.get(name);
      if (held !== undefined && held.ca === ca && held.notAfterMs - now > LEAF_RENEW_BEFORE_MS) continue;
      signal?.throwIfAborted();
      const leaf = await this.#ca.issue(name);
      await stack.proxy.installCertificate(name, leaf.certPem, leaf.keyPem);
      stack.certificates.set(name, { ca, notAfterMs: leaf.notAfter.getTime() });
    }
  }

  /** Who an agent is, by source address: the running agent containers' labels and IPv4 addresses. */
  #sources(): ProxySource[] {
    const byAddress = new Map<string, ProxySource | null>();
    for (const record of this.#options.containers.records()) {
      const agent = record.labels[LABELS.agent] ?? "";
      const project = record.labels[LABELS.project] ?? "";
      const full = project === "" ? agent : `${project}.${agent}`;
      if (!SOURCE_NAME.test(full) || (project !== "" && !SOURCE_NAME.test(project))) continue;
      for (const address of record.addresses) {
        if (!isIpv4(address)) continue;
        // Two containers on one address: neither identity can be trusted, so neither is given.
        byAddress.set(
          address,
          byAddress.has(address) ? null : { address, agent: full, ...(project === "" ? {} : { project }) },
        );
      }
    }
    return [...byAddress.values()].filter((s): s is ProxySource => s !== null);
  }

  #onContainerChange(change: AddressIndexChange): void {
    if (change.kind === "down") this.#modes.forget(change.containerId);
    if (this.#stack === undefined || this.#closing) return;
    // Sources changed: a reconcile (coalesced with whatever else is queued) rewrites them.
    this.#queue.reconcile().catch(() => undefined);
  }

  /** A container id (full or a unique prefix) of a running or registered agent container. */
  #container(containerId: string): string {
    if (this.#stack === undefined) {
      throw new FirewallError("not_running", "the firewall is not running (start it: clawker firewall up)");
    }
    if (!CONTAINER_ID.test(containerId)) {
      throw new FirewallError(
        "invalid_request",
        `container_id ${quote(containerId)} is not a Docker container id (hex, full or a unique prefix)`,
      );
    }
    const ids = new Set([
      ...this.#options.containers.records().map((r) => r.id),
      ...this.#options.agents.list().map((a) => a.containerId),
    ]);
    if (ids.has(containerId)) return containerId;
    const matches = [...ids].filter((id) => id.startsWith(containerId));
    if (matches.length === 1) return matches[0]!;
    if (matches.length === 0) {
      throw new FirewallError(
        "unknown_container",
        `no agent container ${containerId} (running or registered)`,
      );
    }
    throw new FirewallError(
      "invalid_request",
      `container id prefix ${containerId} matches ${matches.length} agent containers; give more of it`,
    );
  }

  /**
   * The upstream resolvers: `firewall.resolvers`, else the host's non-loopback IPv4 nameservers
   * (a loopback one, such as systemd-resolved's 127.0.0.53, is the host's own and means nothing
   * to the gate and the proxy); none at all is a FirewallError naming the setting.
   */
  async #resolvers(): Promise<readonly Resolver[]> {
    if (this.#settings.resolvers !== undefined) return this.#settings.resolvers;
    const file = this.#options.resolvConf ?? "/etc/resolv.conf";
    let text = "";
    try {
      text = await readFile(file, "utf8");
    } catch (err) {
      this.#log.warn({ err, file, event: "resolv_conf_unreadable" }, "host resolver list unreadable");
    }
    const found = hostResolvers(text);
    if (found.length === 0) {
      throw new FirewallError(
        "not_configured",
        `no upstream DNS resolver: ${file} names no IPv4 nameserver that is not loopback; set firewall.resolvers`,
      );
    }
    return found;
  }

  async #readState(): Promise<{ up: boolean }> {
    try {
      const parsed = JSON.parse(await readFile(join(this.#dir, STATE_FILE), "utf8")) as unknown;
      return {
        up: typeof parsed === "object" && parsed !== null && (parsed as { up?: unknown }).up === true,
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return { up: false };
      this.#log.warn(
        { err, event: "firewall_state_unreadable" },
        "firewall state file unreadable; taken as down",
      );
      return { up: false };
    }
  }

  async #writeState(state: { up: boolean }): Promise<void> {
    await writeFileAtomic(join(this.#dir, STATE_FILE), `${JSON.stringify(state)}\n`);
  }
}

/** What stays of the steering once the stack is down: the subnet passes, the gateway does not (but its exempt ports). */
function refusal(targets: SteeringTargets): RefusedTargets {
  return {
    ...(targets.subnet === undefined ? {} : { subnet: targets.subnet }),
    ...(targets.gateway === undefined ? {} : { gateway: targets.gateway }),
    ...(targets.gatewayPorts === undefined ? {} : { gatewayPorts: targets.gatewayPorts }),
  };
}

/**
 * The configured forbidden destinations plus the firewall's own addresses, the agents' networks
 * and every IPv4 address of this host, so no rule can reach the host through the proxy.
 */
function forbiddenList(configured: readonly string[], own: readonly string[]): string[] {
  const host = Object.values(networkInterfaces())
    .flat()
    .flatMap((i) => (i !== undefined && i.family === "IPv4" ? [i.address] : []));
  return [...new Set([...configured, ...own, ...host])];
}

async function withTimeout<T>(p: Promise<T>, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<T>(
    (resolve) => (timer = setTimeout(() => resolve(fallback), HEALTH_TIMEOUT_MS)),
  );
  try {
    return await Promise.race([p.catch(() => fallback), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Two PEM texts as one bundle, each ending in one newline. */
function joinPem(first: string, second: string): string {
  const line = (pem: string): string => (pem.endsWith("\n") ? pem : `${pem}\n`);
  return line(first) + line(second);
}
