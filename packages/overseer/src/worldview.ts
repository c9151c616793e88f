// The worldview: what the control plane knows about containers, agents, sessions, commands,
// the drain and the firewall, derived ONLY from events. `reduce` is a pure function over frozen,
// JSON-serialisable state with structural sharing, so a snapshot is the state itself.
import {
  type AgentEvent,
  type CommandEvent,
  type CommandPlan,
  type ContainerEvent,
  type ContainerFacts,
  type DrainEvent,
  type DrainReason,
  type FirewallEvent,
  type Labels,
  LABELS,
  type OverseerEvent,
  isAgentLabels,
} from "./events.js";

/** Bounds that keep the worldview's memory flat however long the control plane runs. */
export interface ReducerOptions {
  /** Finished commands kept (oldest evicted first). */
  readonly maxFinishedCommands: number;
  /** Recently destroyed container ids remembered so that late events about them are ignored. */
  readonly maxTombstones: number;
  /** Drain steps kept. */
  readonly maxDrainSteps: number;
}

/** The bounds `reduce` uses when none are given. */
export const DEFAULT_REDUCER_OPTIONS: ReducerOptions = Object.freeze({
  maxFinishedCommands: 256,
  maxTombstones: 256,
  maxDrainSteps: 64,
});

/** Whether the Docker daemon is reachable; "unknown" until the feeder says. */
export type DockerStatus = "unknown" | "connected" | "disconnected";

/** The events feeder's view of the Docker daemon. */
export interface DockerView {
  readonly status: DockerStatus;
  /** When the status last changed. */
  readonly since: number | null;
  /** When the last reconcile finished since the last (re)connect; null means counts are unknown. */
  readonly reconciledAt: number | null;
  readonly lastError: string | null;
}

/** A container's lifecycle state as the events tell it. */
export type ContainerState = "created" | "running" | "exited";

/** One managed container. */
export interface ContainerView {
  readonly id: string;
  readonly name: string;
  readonly labels: Labels;
  /** Labels say managed agent container. */
  readonly isAgent: boolean;
  /** `dev.clawker.agent` label, null when absent. */
  readonly agentName: string | null;
  /** `dev.clawker.project` label, null when absent. */
  readonly project: string | null;
  readonly state: ContainerState;
  readonly createdAt: number | null;
  readonly startedAt: number | null;
  readonly exitedAt: number | null;
  readonly exitCode: number | null;
}

/** How far an agent's identity has been established. */
export type AgentTrust = "unknown" | "registered" | "register_required" | "untrusted";

/** One agent, keyed by its container id. */
export interface AgentView {
  readonly containerId: string;
  readonly agentName: string;
  readonly project: string | null;
  readonly trust: AgentTrust;
  /** The registered (expected) certificate thumbprint. */
  readonly thumbprint: string | null;
  /** The thumbprint clawkerd last presented on a Session. */
  readonly presentedThumbprint: string | null;
  readonly registeredAt: number | null;
  /** When AgentReady was sent for the current run of the container; null after it died. */
  readonly readyAt: number | null;
  /** Last time the agent was heard from (register, session, ready). */
  readonly lastSeen: number;
}

/** The state of the control plane's Session to one clawkerd. */
export type SessionState = "open" | "closed" | "dial_failing";

/** One Session, keyed by container id. */
export interface SessionView {
  readonly containerId: string;
  readonly state: SessionState;
  readonly peerThumbprint: string | null;
  readonly isChainVerified: boolean;
  readonly isInitialized: boolean;
  readonly isCmdRunning: boolean;
  readonly openedAt: number | null;
  readonly closedAt: number | null;
  readonly closeReason: string | null;
  /** Dial failures since the last open Session. */
  readonly dialFailures: number;
  readonly lastDialError: string | null;
}

/** A command's state: running until exactly one Done or Error. */
export type CommandState = "running" | "done" | "error";

/** One pipeline stage's exit. */
export interface StageExitView {
  readonly stageIndex: number;
  readonly exitCode: number;
  readonly signo: number;
}

/** One Session command's progress; fields are null when the start event was never seen. */
export interface CommandView {
  readonly containerId: string;
  readonly commandId: string;
  readonly plan: CommandPlan | null;
  readonly description: string | null;
  readonly stages: number | null;
  readonly state: CommandState;
  readonly outputBytes: number;
  readonly outputChunks: number;
  readonly stageExits: readonly StageExitView[];
  readonly exitCode: number | null;
  readonly error: { readonly code: string; readonly message: string } | null;
  readonly startedAt: number | null;
  readonly endedAt: number | null;
}

/** Where the control plane is in its life. */
export type DrainPhase = "running" | "draining" | "finished";

/** The drain: watcher counts, then the ordered shutdown. */
export interface DrainView {
  readonly phase: DrainPhase;
  /** The first reason given; later triggers do not change it. */
  readonly reason: DrainReason | null;
  readonly startedAt: number | null;
  readonly steps: readonly { readonly step: string; readonly time: number }[];
  readonly exitCode: number | null;
  readonly lastCount: number | null;
  readonly streak: number;
  readonly listErrors: number;
  readonly lastListError: string | null;
}

/** The egress firewall as the events tell it. */
export interface FirewallView {
  readonly ruleCount: number | null;
  /** Enforced containers: id -> since. */
  readonly enrolled: Readonly<Record<string, { readonly since: number }>>;
  /** Containers with a bypass: id -> until. */
  readonly bypass: Readonly<Record<string, { readonly since: number; readonly until: number }>>;
  readonly denied: number;
  readonly lastDenied: {
    readonly containerId: string | null;
    readonly destination: string;
    readonly proto: string;
    readonly port: number;
    readonly time: number;
  } | null;
}

/** The whole worldview: frozen, JSON-serialisable, keyed records in event order. */
export interface Worldview {
  /** Number of events that changed the worldview. */
  readonly applied: number;
  /** `time` of the last event applied. */
  readonly updatedAt: number | null;
  readonly docker: DockerView;
  readonly containers: Readonly<Record<string, ContainerView>>;
  /** Keyed by container id. */
  readonly agents: Readonly<Record<string, AgentView>>;
  /** Keyed by container id. */
  readonly sessions: Readonly<Record<string, SessionView>>;
  /** Keyed by container id, then command id (nested so an update copies only small tables). */
  readonly commands: Readonly<Record<string, Readonly<Record<string, CommandView>>>>;
  readonly drain: DrainView;
  readonly firewall: FirewallView;
  /** Recently destroyed container ids, oldest first; events about them are ignored. */
  readonly tombstones: readonly string[];
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };
type Table<V> = Readonly<Record<string, V>>;

const EMPTY_TABLE: Table<never> = Object.freeze({});

const EMPTY: Worldview = deepFreeze({
  applied: 0,
  updatedAt: null,
  docker: { status: "unknown", since: null, reconciledAt: null, lastError: null },
  containers: {},
  agents: {},
  sessions: {},
  commands: {},
  drain: {
    phase: "running",
    reason: null,
    startedAt: null,
    steps: [],
    exitCode: null,
    lastCount: null,
    streak: 0,
    listErrors: 0,
    lastListError: null,
  },
  firewall: { ruleCount: null, enrolled: {}, bypass: {}, denied: 0, lastDenied: null },
  tombstones: [],
});

/** The worldview before any event: Docker unknown, nothing known. */
export function emptyWorldview(): Worldview {
  return EMPTY;
}

/**
 * Applies one event: returns a new frozen worldview sharing every untouched part with `state`,
 * or `state` itself when the event changes nothing (unknown type, a destroyed container's late
 * event). Pure and deterministic: the result depends only on its arguments.
 */
export function reduce(
  state: Worldview,
  event: OverseerEvent,
  options: ReducerOptions = DEFAULT_REDUCER_OPTIONS,
): Worldview {
  const next = route(state, event, options);
  if (next === state) return state;
  return Object.freeze({ ...next, applied: state.applied + 1, updatedAt: event.time });
}

/** Folds a sequence of events into a worldview (starting from empty by default). */
export function reduceAll(
  events: Iterable<OverseerEvent>,
  state: Worldview = EMPTY,
  options: ReducerOptions = DEFAULT_REDUCER_OPTIONS,
): Worldview {
  let s = state;
  for (const e of events) s = reduce(s, e, options);
  return s;
}

/**
 * Running agent containers, or null while that number is unknown (Docker not connected, or not
 * reconciled since it last connected). Unknown is never reported as zero.
 */
export function countRunningAgents(view: Worldview): number | null {
  if (view.docker.status !== "connected" || view.docker.reconciledAt === null) return null;
  let n = 0;
  for (const c of Object.values(view.containers)) if (c.isAgent && c.state === "running") n++;
  return n;
}

function route(s: Worldview, e: OverseerEvent, o: ReducerOptions): Worldview {
  const t = e.type;
  if (t.startsWith("container.") || t.startsWith("docker.")) return onContainer(s, e as ContainerEvent, o);
  if (t.startsWith("agent.")) return onAgent(s, e as AgentEvent, o);
  if (t.startsWith("command.")) return onCommand(s, e as CommandEvent, o);
  if (t.startsWith("drain.")) return onDrain(s, e as DrainEvent, o);
  if (t.startsWith("firewall.")) return onFirewall(s, e as FirewallEvent);
  return s;
}

function onContainer(s: Worldview, e: ContainerEvent, o: ReducerOptions): Worldview {
  switch (e.type) {
    case "docker.connected":
      return with_(s, {
        docker: freeze({ status: "connected", since: e.time, reconciledAt: null, lastError: null }),
      });
    case "docker.disconnected":
      return with_(s, {
        docker: freeze({ status: "disconnected", since: e.time, reconciledAt: null, lastError: e.error }),
      });
    case "docker.reconciled": {
      const alive = new Set(e.containerIds);
      const gone = new Set<string>();
      for (const id of Object.keys(s.containers)) if (!alive.has(id)) gone.add(id);
      // Agents, sessions, commands or enrolments whose container was never seen go too.
      for (const table of [s.agents, s.sessions, s.commands, s.firewall.enrolled, s.firewall.bypass]) {
        for (const id of Object.keys(table)) if (!alive.has(id)) gone.add(id);
      }
      const docker = freeze({
        status: "connected" as const,
        since: s.docker.status === "connected" ? s.docker.since : e.time,
        reconciledAt: e.time,
        lastError: null,
      });
      return forget(with_(s, { docker }), gone, o, new Set(Object.keys(s.containers)));
    }
    case "container.destroyed":
      if (isTombstoned(s, e.id)) return s;
      return forget(s, new Set([e.id]), o, new Set([e.id]));
    case "container.created":
    case "container.started":
    case "container.died":
      return onContainerState(s, e, o);
    default:
      return s;
  }
}

function onContainerState(
  s: Worldview,
  e: Extract<ContainerEvent, { type: "container.created" | "container.started" | "container.died" }>,
  _o: ReducerOptions,
): Worldview {
  if (isTombstoned(s, e.id)) return s;
  const prev = s.containers[e.id];
  const base = containerBase(e, prev);
  let view: ContainerView;
  if (e.type === "container.created") {
    view = { ...base, state: prev?.state ?? "created", createdAt: e.time };
  } else if (e.type === "container.started") {
    view = { ...base, state: "running", startedAt: e.time, exitedAt: null, exitCode: null };
  } else {
    view = { ...base, state: "exited", exitedAt: e.time, exitCode: e.exitCode };
  }
  let next = with_(s, { containers: put(s.containers, e.id, view) });
  // A new run of the container needs a new AgentReady.
  const agent = s.agents[e.id];
  if (e.type === "container.died" && agent !== undefined && agent.readyAt !== null) {
    next = with_(next, { agents: put(s.agents, e.id, { ...agent, readyAt: null }) });
  }
  return next;
}

function containerBase(e: ContainerFacts, prev: ContainerView | undefined): ContainerView {
  const labels = freeze({ ...e.labels });
  return {
    id: e.id,
    name: e.name,
    labels,
    isAgent: isAgentLabels(labels),
    agentName: labels[LABELS.agent] ?? null,
    project: labels[LABELS.project] ?? null,
    state: prev?.state ?? "created",
    createdAt: prev?.createdAt ?? null,
    startedAt: prev?.startedAt ?? null,
    exitedAt: prev?.exitedAt ?? null,
    exitCode: prev?.exitCode ?? null,
  };
}

function onAgent(s: Worldview, e: AgentEvent, _o: ReducerOptions): Worldview {
  if (isTombstoned(s, e.containerId)) return s;
  const id = e.containerId;
  const prev = s.agents[id] ?? {
    containerId: id,
    agentName: e.agentName,
    project: s.containers[id]?.project ?? null,
    trust: "unknown",
    thumbprint: null,
    presentedThumbprint: null,
    registeredAt: null,
    readyAt: null,
    lastSeen: e.time,
  };
  const session = s.sessions[id] ?? {
    containerId: id,
    state: "closed",
    peerThumbprint: null,
    isChainVerified: false,
    isInitialized: false,
    isCmdRunning: false,
    openedAt: null,
    closedAt: null,
    closeReason: null,
    dialFailures: 0,
    lastDialError: null,
  };
  const seen = { ...prev, agentName: e.agentName, lastSeen: Math.max(prev.lastSeen, e.time) };
  const agents = (a: AgentView): Worldview => with_(s, { agents: put(s.agents, id, a) });
  switch (e.type) {
    case "agent.registered":
      return agents({
        ...seen,
        project: e.project,
        trust: "registered",
        thumbprint: e.thumbprint,
        registeredAt: e.time,
      });
    case "agent.register_required":
      return agents({ ...seen, trust: "register_required" });
    case "agent.untrusted":
      return agents({
        ...seen,
        trust: "untrusted",
        thumbprint: e.expectedThumbprint,
        presentedThumbprint: e.presentedThumbprint,
      });
    case "agent.ready":
      return agents({ ...seen, readyAt: e.time });
    case "agent.session_opened":
      return with_(s, {
        agents: put(s.agents, id, { ...seen, presentedThumbprint: e.peerThumbprint }),
        sessions: put(s.sessions, id, {
          ...session,
          state: "open",
          peerThumbprint: e.peerThumbprint,
          isChainVerified: e.isChainVerified,
          isInitialized: e.isInitialized,
          isCmdRunning: e.isCmdRunning,
          openedAt: e.time,
          closedAt: null,
          closeReason: null,
          dialFailures: 0,
          lastDialError: null,
        }),
      });
    case "agent.session_closed":
      return with_(s, {
        sessions: put(s.sessions, id, {
          ...session,
          state: "closed",
          closedAt: e.time,
          closeReason: e.reason,
        }),
      });
    case "agent.dial_failed":
      return with_(s, {
        agents: s.agents[id] === undefined ? put(s.agents, id, prev) : s.agents,
        sessions: put(s.sessions, id, {
          ...session,
          state: session.state === "open" ? "open" : "dial_failing",
          dialFailures: session.dialFailures + 1,
          lastDialError: e.error,
        }),
      });
    default:
      return s;
  }
}

function onCommand(s: Worldview, e: CommandEvent, o: ReducerOptions): Worldview {
  if (isTombstoned(s, e.containerId)) return s;
  const byContainer = s.commands[e.containerId] ?? EMPTY_TABLE;
  const prev: CommandView = byContainer[e.commandId] ?? {
    containerId: e.containerId,
    commandId: e.commandId,
    plan: null,
    description: null,
    stages: null,
    state: "running",
    outputBytes: 0,
    outputChunks: 0,
    stageExits: [],
    exitCode: null,
    error: null,
    startedAt: null,
    endedAt: null,
  };
  const commands = (c: CommandView): Worldview =>
    with_(s, { commands: put(s.commands, e.containerId, put(byContainer, e.commandId, c)) });
  switch (e.type) {
    case "command.started":
      // A start under a known key is a new command (a later Session reused the id).
      return commands({
        containerId: e.containerId,
        commandId: e.commandId,
        plan: e.plan,
        description: e.description,
        stages: e.stages,
        state: "running",
        outputBytes: 0,
        outputChunks: 0,
        stageExits: [],
        exitCode: null,
        error: null,
        startedAt: e.time,
        endedAt: null,
      });
    case "command.output":
      return commands({
        ...prev,
        outputBytes: prev.outputBytes + e.bytes,
        outputChunks: prev.outputChunks + 1,
      });
    case "command.stage_exit":
      return commands({
        ...prev,
        stageExits: [...prev.stageExits, { stageIndex: e.stageIndex, exitCode: e.exitCode, signo: e.signo }],
      });
    case "command.done":
      return evictFinished(commands({ ...prev, state: "done", exitCode: e.exitCode, endedAt: e.time }), o);
    case "command.error":
      return evictFinished(
        commands({ ...prev, state: "error", error: { code: e.code, message: e.message }, endedAt: e.time }),
        o,
      );
    default:
      return s;
  }
}

function onDrain(s: Worldview, e: DrainEvent, o: ReducerOptions): Worldview {
  const d = s.drain;
  const drain = (patch: Partial<DrainView>): Worldview => with_(s, { drain: deepFreeze({ ...d, ...patch }) });
  switch (e.type) {
    case "drain.count":
      return drain({ lastCount: e.agents, streak: e.streak, listErrors: 0 });
    case "drain.list_failed":
      return drain({ listErrors: e.consecutive, lastListError: e.error });
    case "drain.started":
      if (d.phase !== "running") return s; // the first trigger wins
      return drain({ phase: "draining", reason: e.reason, startedAt: e.time });
    case "drain.step": {
      const steps = [...d.steps, { step: e.step, time: e.time }];
      return drain({
        phase: d.phase === "running" ? "draining" : d.phase,
        steps: steps.slice(Math.max(0, steps.length - o.maxDrainSteps)),
      });
    }
    case "drain.finished":
      return drain({ phase: "finished", exitCode: e.exitCode });
    default:
      return s;
  }
}

function onFirewall(s: Worldview, e: FirewallEvent): Worldview {
  const f = s.firewall;
  const firewall = (patch: Partial<FirewallView>): Worldview =>
    with_(s, { firewall: freeze({ ...f, ...patch }) });
  switch (e.type) {
    case "firewall.rules_changed":
      return firewall({ ruleCount: e.ruleCount });
    case "firewall.enrolled":
      if (isTombstoned(s, e.containerId)) return s;
      return firewall({ enrolled: put(f.enrolled, e.containerId, { since: e.time }) });
    case "firewall.unenrolled":
      if (f.enrolled[e.containerId] === undefined) return s;
      return firewall({ enrolled: drop(f.enrolled, e.containerId) });
    case "firewall.bypass_started":
      if (isTombstoned(s, e.containerId)) return s;
      return firewall({ bypass: put(f.bypass, e.containerId, { since: e.time, until: e.until }) });
    case "firewall.bypass_ended":
      if (f.bypass[e.containerId] === undefined) return s;
      return firewall({ bypass: drop(f.bypass, e.containerId) });
    case "firewall.denied":
      return firewall({
        denied: f.denied + 1,
        lastDenied: freeze({
          containerId: e.containerId,
          destination: e.destination,
          proto: e.proto,
          port: e.port,
          time: e.time,
        }),
      });
    default:
      return s;
  }
}

/**
 * Removes everything about the `gone` container ids; those in `tomb` (containers we had seen)
 * become tombstones so late events about them are ignored.
 */
function forget(
  s: Worldview,
  gone: ReadonlySet<string>,
  o: ReducerOptions,
  tomb: ReadonlySet<string>,
): Worldview {
  if (gone.size === 0) return s;
  const keep = <V>(table: Table<V>, keyOf: (k: string, v: V) => string): Table<V> => {
    let changed = false;
    const out: Record<string, V> = {};
    for (const [k, v] of Object.entries(table)) {
      if (gone.has(keyOf(k, v))) changed = true;
      else out[k] = v;
    }
    return changed ? freeze(out) : table;
  };
  const byKey = (k: string): string => k;
  const tombstones = [...s.tombstones];
  for (const id of gone) if (tomb.has(id) && !s.tombstones.includes(id)) tombstones.push(id);
  const firewall = s.firewall;
  const enrolled = keep(firewall.enrolled, byKey);
  const bypass = keep(firewall.bypass, byKey);
  return with_(s, {
    containers: keep(s.containers, byKey),
    agents: keep(s.agents, byKey),
    sessions: keep(s.sessions, byKey),
    commands: keep(s.commands, byKey),
    firewall:
      enrolled === firewall.enrolled && bypass === firewall.bypass
        ? firewall
        : freeze({ ...firewall, enrolled, bypass }),
    tombstones: freeze(tombstones.slice(Math.max(0, tombstones.length - o.maxTombstones))),
  });
}

/** Drops the oldest finished commands (by end time, then ids) beyond the retention bound. */
function evictFinished(s: Worldview, o: ReducerOptions): Worldview {
  const finished: CommandView[] = [];
  for (const table of Object.values(s.commands)) {
    for (const c of Object.values(table)) if (c.state !== "running") finished.push(c);
  }
  if (finished.length <= o.maxFinishedCommands) return s;
  finished.sort(
    (a, b) =>
      (a.endedAt ?? 0) - (b.endedAt ?? 0) ||
      a.containerId.localeCompare(b.containerId) ||
      a.commandId.localeCompare(b.commandId),
  );
  const evict = new Map<string, Set<string>>();
  for (const c of finished.slice(0, finished.length - o.maxFinishedCommands)) {
    const ids = evict.get(c.containerId) ?? new Set<string>();
    ids.add(c.commandId);
    evict.set(c.containerId, ids);
  }
  const out: Record<string, Table<CommandView>> = {};
  for (const [containerId, table] of Object.entries(s.commands)) {
    const ids = evict.get(containerId);
    if (ids === undefined) {
      out[containerId] = table;
      continue;
    }
    const kept: Record<string, CommandView> = {};
    for (const [commandId, c] of Object.entries(table)) if (!ids.has(commandId)) kept[commandId] = c;
    if (Object.keys(kept).length > 0) out[containerId] = freeze(kept);
  }
  return with_(s, { commands: freeze(out) });
}

function isTombstoned(s: Worldview, containerId: string): boolean {
  return s.tombstones.includes(containerId);
}

function with_(s: Worldview, patch: Partial<Mutable<Worldview>>): Worldview {
  return { ...s, ...patch };
}

function put<V>(table: Table<V>, key: string, value: V): Table<V> {
  return freeze({ ...table, [key]: deepFreeze(value) });
}

function drop<V>(table: Table<V>, key: string): Table<V> {
  const out: Record<string, V> = { ...table };
  delete out[key];
  return freeze(out);
}

function freeze<T>(value: T): T {
  return Object.freeze(value);
}

/** Freezes `value` and every plain object or array inside it that is not frozen yet. */
function deepFreeze<T>(value: T): T {
  if (typeof value !== "object" || value === null || Object.isFrozen(value)) return value;
  for (const v of Object.values(value)) deepFreeze(v);
  return Object.freeze(value);
}
