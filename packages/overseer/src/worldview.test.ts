import assert from "node:assert/strict";
import { test } from "node:test";
import { LABELS, type Labels, type OverseerEvent } from "./events.js";
import {
  type ReducerOptions,
  type Worldview,
  countRunningAgents,
  emptyWorldview,
  reduce,
  reduceAll,
} from "./worldview.js";

const A = "a".repeat(64);
const B = "b".repeat(64);
const agentLabels: Labels = {
  [LABELS.managed]: "true",
  [LABELS.purpose]: "agent",
  [LABELS.agent]: "proj.alice",
  [LABELS.project]: "proj",
};
const cpLabels: Labels = { [LABELS.managed]: "true", [LABELS.purpose]: "controlplane" };

const facts = (id: string, time: number, labels: Labels) => ({
  id,
  name: `n-${id.slice(0, 4)}`,
  labels,
  time,
  source: "event" as const,
});
const created = (id: string, time: number, labels: Labels = agentLabels): OverseerEvent => ({
  type: "container.created",
  ...facts(id, time, labels),
});
const started = (id: string, time: number, labels: Labels = agentLabels): OverseerEvent => ({
  type: "container.started",
  ...facts(id, time, labels),
});
const died = (id: string, time: number, exitCode: number | null = 0): OverseerEvent => ({
  type: "container.died",
  ...facts(id, time, agentLabels),
  exitCode,
});
const destroyed = (id: string, time: number): OverseerEvent => ({
  type: "container.destroyed",
  ...facts(id, time, agentLabels),
});
const connected = (time: number): OverseerEvent => ({ type: "docker.connected", time });
const reconciled = (time: number, containerIds: string[]): OverseerEvent => ({
  type: "docker.reconciled",
  time,
  containerIds,
});
const agentEv = <T extends Extract<OverseerEvent, { type: `agent.${string}` }>["type"]>(
  type: T,
  containerId: string,
  time: number,
  rest: Omit<Extract<OverseerEvent, { type: T }>, "type" | "containerId" | "time" | "agentName">,
): OverseerEvent =>
  ({ type, containerId, agentName: "proj.alice", time, ...rest }) as unknown as OverseerEvent;
const cmd = <T extends Extract<OverseerEvent, { type: `command.${string}` }>["type"]>(
  type: T,
  containerId: string,
  commandId: string,
  time: number,
  rest: Omit<Extract<OverseerEvent, { type: T }>, "type" | "containerId" | "commandId" | "time">,
): OverseerEvent => ({ type, containerId, commandId, time, ...rest }) as unknown as OverseerEvent;

interface Case {
  readonly name: string;
  readonly events: readonly OverseerEvent[];
  readonly pick: (v: Worldview) => unknown;
  readonly want: unknown;
  readonly options?: ReducerOptions;
}

const cases: readonly Case[] = [
  {
    name: "empty: docker unknown, agent count unknown",
    events: [],
    pick: (v) => [v.docker.status, countRunningAgents(v)],
    want: ["unknown", null],
  },
  {
    name: "created then started: running agent with label-derived fields",
    events: [created(A, 1), started(A, 2)],
    pick: (v) => {
      const c = v.containers[A]!;
      return [c.state, c.isAgent, c.agentName, c.project, c.createdAt, c.startedAt];
    },
    want: ["running", true, "proj.alice", "proj", 1, 2],
  },
  {
    name: "started without created (missed event) still makes a container",
    events: [started(A, 5)],
    pick: (v) => [v.containers[A]?.state, v.containers[A]?.createdAt],
    want: ["running", null],
  },
  {
    name: "died records exit code and time",
    events: [started(A, 1), died(A, 3, 137)],
    pick: (v) => [v.containers[A]?.state, v.containers[A]?.exitCode, v.containers[A]?.exitedAt],
    want: ["exited", 137, 3],
  },
  {
    name: "restart clears the exit",
    events: [started(A, 1), died(A, 3, 1), started(A, 4)],
    pick: (v) => [v.containers[A]?.state, v.containers[A]?.exitCode, v.containers[A]?.exitedAt],
    want: ["running", null, null],
  },
  {
    name: "non-agent managed containers are not agents",
    events: [started(B, 1, cpLabels)],
    pick: (v) => [v.containers[B]?.isAgent, v.containers[B]?.agentName],
    want: [false, null],
  },
  {
    name: "running agents are unknown until connected and reconciled",
    events: [started(A, 1), connected(2)],
    pick: (v) => countRunningAgents(v),
    want: null,
  },
  {
    name: "running agents counted after reconcile; control plane and exited do not count",
    events: [
      connected(1),
      started(A, 2),
      started(B, 2, cpLabels),
      started("c", 2),
      died("c", 3),
      reconciled(4, [A, B, "c"]),
    ],
    pick: (v) => countRunningAgents(v),
    want: 1,
  },
  {
    name: "zero agents is zero only when known",
    events: [connected(1), reconciled(2, [])],
    pick: (v) => countRunningAgents(v),
    want: 0,
  },
  {
    name: "disconnect makes the count unknown again and keeps the last error",
    events: [
      connected(1),
      started(A, 2),
      reconciled(3, [A]),
      { type: "docker.disconnected", time: 4, error: "ECONNREFUSED" },
    ],
    pick: (v) => [
      countRunningAgents(v),
      v.docker.status,
      v.docker.lastError,
      v.docker.since,
      Object.keys(v.containers),
    ],
    want: [null, "disconnected", "ECONNREFUSED", 4, [A]],
  },
  {
    name: "reconcile drops containers that vanished while disconnected, with their agent state",
    events: [
      started(A, 1),
      started(B, 1),
      agentEv("agent.registered", B, 2, { project: "proj", thumbprint: "t" }),
      cmd("command.started", B, "c1", 3, { plan: "boot", description: "d", stages: 1 }),
      { type: "firewall.enrolled", containerId: B, time: 3 },
      connected(5),
      reconciled(6, [A]),
    ],
    pick: (v) => [
      Object.keys(v.containers),
      Object.keys(v.agents),
      Object.keys(v.commands),
      Object.keys(v.firewall.enrolled),
      v.tombstones,
    ],
    want: [[A], [], [], [], [B]],
  },
  {
    name: "destroy removes everything about the container and tombstones it",
    events: [
      started(A, 1),
      agentEv("agent.registered", A, 2, { project: "proj", thumbprint: "t" }),
      agentEv("agent.session_opened", A, 3, {
        peerThumbprint: "t",
        isChainVerified: true,
        isInitialized: false,
        isCmdRunning: false,
      }),
      cmd("command.started", A, "c1", 4, { plan: "init", description: "d", stages: 1 }),
      { type: "firewall.bypass_started", containerId: A, until: 99, time: 4 },
      died(A, 5),
      destroyed(A, 6),
    ],
    pick: (v) => [v.containers, v.agents, v.sessions, v.commands, v.firewall.bypass, v.tombstones],
    want: [{}, {}, {}, {}, {}, [A]],
  },
  {
    name: "late events about a destroyed container are ignored",
    events: [
      started(A, 1),
      destroyed(A, 2),
      agentEv("agent.session_closed", A, 3, { reason: "eof" }),
      cmd("command.done", A, "c1", 3, { exitCode: 0 }),
      started(A, 4),
      { type: "firewall.enrolled", containerId: A, time: 4 },
    ],
    pick: (v) => [v.containers, v.sessions, v.commands, v.firewall.enrolled, v.applied],
    want: [{}, {}, {}, {}, 2],
  },
  {
    name: "tombstones are bounded, oldest forgotten first",
    options: { maxFinishedCommands: 256, maxTombstones: 2, maxDrainSteps: 64 },
    events: [
      started("x", 1),
      destroyed("x", 2),
      started("y", 3),
      destroyed("y", 4),
      started("z", 5),
      destroyed("z", 6),
    ],
    pick: (v) => v.tombstones,
    want: ["y", "z"],
  },
  {
    name: "registration sets trust, thumbprint and project",
    events: [started(A, 1), agentEv("agent.registered", A, 2, { project: "proj", thumbprint: "abc" })],
    pick: (v) => {
      const a = v.agents[A]!;
      return [a.trust, a.thumbprint, a.project, a.registeredAt, a.lastSeen];
    },
    want: ["registered", "abc", "proj", 2, 2],
  },
  {
    name: "a session opens with the peer facts and resets dial failures",
    events: [
      agentEv("agent.dial_failed", A, 1, { attempt: 1, error: "ECONNREFUSED" }),
      agentEv("agent.dial_failed", A, 2, { attempt: 2, error: "ECONNREFUSED" }),
      agentEv("agent.session_opened", A, 3, {
        peerThumbprint: "p",
        isChainVerified: false,
        isInitialized: true,
        isCmdRunning: true,
      }),
    ],
    pick: (v) => {
      const s = v.sessions[A]!;
      return [
        s.state,
        s.peerThumbprint,
        s.isChainVerified,
        s.isInitialized,
        s.isCmdRunning,
        s.dialFailures,
        v.agents[A]?.presentedThumbprint,
      ];
    },
    want: ["open", "p", false, true, true, 0, "p"],
  },
  {
    name: "dial failures count up while no session is open",
    events: [
      agentEv("agent.dial_failed", A, 1, { attempt: 1, error: "x" }),
      agentEv("agent.dial_failed", A, 2, { attempt: 2, error: "timeout" }),
    ],
    pick: (v) => [
      v.sessions[A]?.state,
      v.sessions[A]?.dialFailures,
      v.sessions[A]?.lastDialError,
      v.agents[A]?.trust,
    ],
    want: ["dial_failing", 2, "timeout", "unknown"],
  },
  {
    name: "a thumbprint mismatch makes the agent untrusted with both thumbprints",
    events: [
      agentEv("agent.registered", A, 1, { project: "proj", thumbprint: "good" }),
      agentEv("agent.untrusted", A, 2, { expectedThumbprint: "good", presentedThumbprint: "evil" }),
    ],
    pick: (v) => [v.agents[A]?.trust, v.agents[A]?.thumbprint, v.agents[A]?.presentedThumbprint],
    want: ["untrusted", "good", "evil"],
  },
  {
    name: "register required, then registered",
    events: [
      agentEv("agent.register_required", A, 1, {}),
      agentEv("agent.registered", A, 2, { project: "proj", thumbprint: "t" }),
    ],
    pick: (v) => v.agents[A]?.trust,
    want: "registered",
  },
  {
    name: "ready is per run: a died container needs a new AgentReady",
    events: [started(A, 1), agentEv("agent.ready", A, 2, {}), died(A, 3)],
    pick: (v) => [v.agents[A]?.readyAt, v.agents[A]?.lastSeen],
    want: [null, 2],
  },
  {
    name: "session closed keeps the reason",
    events: [
      agentEv("agent.session_opened", A, 1, {
        peerThumbprint: "p",
        isChainVerified: true,
        isInitialized: true,
        isCmdRunning: false,
      }),
      agentEv("agent.session_closed", A, 2, { reason: "container stopped" }),
    ],
    pick: (v) => [
      v.sessions[A]?.state,
      v.sessions[A]?.closedAt,
      v.sessions[A]?.closeReason,
      v.sessions[A]?.openedAt,
    ],
    want: ["closed", 2, "container stopped", 1],
  },
  {
    name: "executor progress: output bytes add up, stage exits in order, done",
    events: [
      cmd("command.started", A, "c1", 1, { plan: "boot", description: "install", stages: 2 }),
      cmd("command.output", A, "c1", 2, { bytes: 100 }),
      cmd("command.output", A, "c1", 3, { bytes: 28 }),
      cmd("command.stage_exit", A, "c1", 4, { stageIndex: 0, exitCode: 0, signo: 0 }),
      cmd("command.stage_exit", A, "c1", 5, { stageIndex: 1, exitCode: 3, signo: 0 }),
      cmd("command.done", A, "c1", 6, { exitCode: 3 }),
    ],
    pick: (v) => v.commands[A]?.["c1"],
    want: {
      containerId: A,
      commandId: "c1",
      plan: "boot",
      description: "install",
      stages: 2,
      state: "done",
      outputBytes: 128,
      outputChunks: 2,
      stageExits: [
        { stageIndex: 0, exitCode: 0, signo: 0 },
        { stageIndex: 1, exitCode: 3, signo: 0 },
      ],
      exitCode: 3,
      error: null,
      startedAt: 1,
      endedAt: 6,
    },
  },
  {
    name: "a command error keeps code and message",
    events: [
      cmd("command.started", A, "c2", 1, { plan: "user", description: "sleep", stages: 1 }),
      cmd("command.error", A, "c2", 9, { code: "ERROR_CODE_TIMEOUT", message: "timed out" }),
    ],
    pick: (v) => [v.commands[A]?.["c2"]?.state, v.commands[A]?.["c2"]?.error],
    want: ["error", { code: "ERROR_CODE_TIMEOUT", message: "timed out" }],
  },
  {
    name: "progress for a command whose start was missed still shows up",
    events: [cmd("command.output", A, "lost", 1, { bytes: 5 })],
    pick: (v) => [v.commands[A]?.["lost"]?.plan, v.commands[A]?.["lost"]?.outputBytes],
    want: [null, 5],
  },
  {
    name: "finished commands are bounded, running ones never evicted",
    options: { maxFinishedCommands: 2, maxTombstones: 256, maxDrainSteps: 64 },
    events: [
      cmd("command.started", A, "run", 0, { plan: "user", description: "", stages: 1 }),
      ...[1, 2, 3].flatMap((i) => [
        cmd("command.started", A, `c${i}`, i, { plan: "user", description: "", stages: 1 }),
        cmd("command.done", A, `c${i}`, i + 10, { exitCode: 0 }),
      ]),
    ],
    pick: (v) => Object.keys(v.commands[A] ?? {}).sort(),
    want: ["c2", "c3", "run"],
  },
  {
    name: "drain: counts, list errors reset by a count",
    events: [
      { type: "drain.list_failed", error: "EOF", consecutive: 1, time: 1 },
      { type: "drain.list_failed", error: "EOF", consecutive: 2, time: 2 },
      { type: "drain.count", agents: 0, streak: 1, time: 3 },
    ],
    pick: (v) => [
      v.drain.phase,
      v.drain.lastCount,
      v.drain.streak,
      v.drain.listErrors,
      v.drain.lastListError,
    ],
    want: ["running", 0, 1, 0, "EOF"],
  },
  {
    name: "drain: the first reason wins, steps in order, finished with exit code",
    events: [
      { type: "drain.started", reason: "zero_agents", time: 1 },
      { type: "drain.started", reason: "signal", time: 2 },
      { type: "drain.step", step: "grpc_stopped", time: 3 },
      { type: "drain.step", step: "topics_closed", time: 4 },
      { type: "drain.finished", exitCode: 0, time: 5 },
    ],
    pick: (v) => [
      v.drain.phase,
      v.drain.reason,
      v.drain.startedAt,
      v.drain.steps.map((s) => s.step),
      v.drain.exitCode,
    ],
    want: ["finished", "zero_agents", 1, ["grpc_stopped", "topics_closed"], 0],
  },
  {
    name: "firewall: rules, enrolment, bypass and denials",
    events: [
      { type: "firewall.rules_changed", ruleCount: 7, time: 1 },
      { type: "firewall.enrolled", containerId: A, time: 2 },
      { type: "firewall.enrolled", containerId: B, time: 2 },
      { type: "firewall.unenrolled", containerId: B, time: 3 },
      { type: "firewall.bypass_started", containerId: A, until: 600, time: 4 },
      { type: "firewall.bypass_ended", containerId: A, time: 5 },
      { type: "firewall.bypass_started", containerId: A, until: 900, time: 6 },
      {
        type: "firewall.denied",
        containerId: null,
        destination: "evil.test",
        proto: "https",
        port: 443,
        time: 7,
      },
    ],
    pick: (v) => [
      v.firewall.ruleCount,
      v.firewall.enrolled,
      v.firewall.bypass,
      v.firewall.denied,
      v.firewall.lastDenied?.destination,
    ],
    want: [7, { [A]: { since: 2 } }, { [A]: { since: 6, until: 900 } }, 1, "evil.test"],
  },
  {
    name: "applied counts only events that changed something; updatedAt is the last one's time",
    events: [
      started(A, 1),
      { type: "firewall.unenrolled", containerId: A, time: 2 },
      { type: "nonsense.happened", time: 3 } as unknown as OverseerEvent,
      died(A, 4),
    ],
    pick: (v) => [v.applied, v.updatedAt],
    want: [2, 4],
  },
];

for (const c of cases) {
  void test(`reduce: ${c.name}`, () => {
    const view = reduceAll(c.events, emptyWorldview(), c.options);
    assert.deepEqual(c.pick(view), c.want);
  });
}

/** Every case's events, in order, as one long history; container ids made distinct per case. */
const history: OverseerEvent[] = cases.flatMap(
  (c, i) =>
    JSON.parse(
      JSON.stringify(c.events).replaceAll(A, `${A}-${i}`).replaceAll(B, `${B}-${i}`),
    ) as OverseerEvent[],
);

void test("reduce is pure: the input state is never changed and is deeply frozen", () => {
  let state = emptyWorldview();
  for (const e of history) {
    const before = JSON.stringify(state);
    const next = reduce(state, e);
    assert.equal(JSON.stringify(state), before);
    assertDeepFrozen(next);
    state = next;
  }
});

void test("reduce is deterministic: the same events give equal worldviews", () => {
  assert.deepEqual(reduceAll(history), reduceAll(history));
});

void test("a worldview survives a JSON round trip unchanged", () => {
  const view = reduceAll(history);
  assert.ok(view.applied > 80);
  for (const table of [view.containers, view.agents, view.sessions, view.commands, view.firewall.enrolled]) {
    assert.ok(Object.keys(table).length > 0);
  }
  assert.deepEqual(JSON.parse(JSON.stringify(view)), view);
});

void test("an event that changes nothing returns the very same state", () => {
  const s = reduceAll([started(A, 1), destroyed(A, 2)]);
  assert.equal(reduce(s, started(A, 3)), s);
  assert.equal(reduce(s, { type: "unknown.kind", time: 9 } as unknown as OverseerEvent), s);
});

void test("untouched parts are shared between states (structural sharing)", () => {
  const s1 = reduceAll([started(A, 1), agentEv("agent.registered", A, 2, { project: "p", thumbprint: "t" })]);
  const s2 = reduce(s1, { type: "firewall.rules_changed", ruleCount: 1, time: 3 });
  assert.equal(s2.containers, s1.containers);
  assert.equal(s2.agents, s1.agents);
  assert.notEqual(s2.firewall, s1.firewall);
});

void test("the reducer does not alias the publisher's objects", () => {
  const labels: Record<string, string> = { ...agentLabels };
  const view = reduce(emptyWorldview(), {
    type: "container.started",
    id: A,
    name: "n",
    labels,
    time: 1,
    source: "event",
  });
  labels[LABELS.agent] = "changed";
  assert.equal(view.containers[A]?.labels[LABELS.agent], "proj.alice");
  assert.equal(Object.isFrozen(labels), false);
});

function assertDeepFrozen(value: unknown, path = "$"): void {
  if (typeof value !== "object" || value === null) return;
  assert.ok(Object.isFrozen(value), `${path} is not frozen`);
  for (const [k, v] of Object.entries(value)) assertDeepFrozen(v, `${path}.${k}`);
}
