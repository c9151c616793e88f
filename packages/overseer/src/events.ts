// The control plane's events, as data only: plain JSON-serialisable objects with a `type`
// discriminant and a `time` in milliseconds since the epoch (taken by the publisher, so every
// subscriber sees the same instant). Each union is published on its own topic (see Overseer).

/** The Docker labels the control plane puts on (and reads from) what it manages. */
export const LABELS = Object.freeze({
  managed: "dev.clawker.managed",
  purpose: "dev.clawker.purpose",
  agent: "dev.clawker.agent",
  project: "dev.clawker.project",
});

/** Container labels as Docker reports them. */
export type Labels = Readonly<Record<string, string>>;

/** Where a container event came from: the live events stream, or a reconcile listing. */
export type ContainerEventSource = "event" | "reconcile";

/** Facts every container event carries. */
export interface ContainerFacts {
  /** Full Docker container id. */
  readonly id: string;
  /** Container name without the leading slash. */
  readonly name: string;
  readonly labels: Labels;
  readonly time: number;
  readonly source: ContainerEventSource;
}

/** A managed container was created (Docker `create`). */
export interface ContainerCreated extends ContainerFacts {
  readonly type: "container.created";
}

/** A managed container started running (Docker `start`). */
export interface ContainerStarted extends ContainerFacts {
  readonly type: "container.started";
}

/** A managed container's main process exited (Docker `die`); exitCode null when unknown. */
export interface ContainerDied extends ContainerFacts {
  readonly type: "container.died";
  readonly exitCode: number | null;
}

/** A managed container was removed (Docker `destroy`). */
export interface ContainerDestroyed extends ContainerFacts {
  readonly type: "container.destroyed";
}

/** The events feeder (re)connected to the Docker daemon; a reconcile follows. */
export interface DockerConnected {
  readonly type: "docker.connected";
  readonly time: number;
}

/** The Docker daemon became unreachable: the container view is now "unknown", not "empty". */
export interface DockerDisconnected {
  readonly type: "docker.disconnected";
  readonly time: number;
  /** A short description of the failure (no secrets). */
  readonly error: string;
}

/**
 * A reconcile listing finished: `containerIds` is every managed container that exists now
 * (stopped ones included); anything else is gone. Published after the listing's synthetic events.
 */
export interface DockerReconciled {
  readonly type: "docker.reconciled";
  readonly time: number;
  readonly containerIds: readonly string[];
}

/** Everything published on the containers topic. */
export type ContainerEvent =
  | ContainerCreated
  | ContainerStarted
  | ContainerDied
  | ContainerDestroyed
  | DockerConnected
  | DockerDisconnected
  | DockerReconciled;

/** Facts every agent event carries: which container and which agent (full name). */
export interface AgentFacts {
  readonly containerId: string;
  readonly agentName: string;
  readonly time: number;
}

/** `AgentService.Register` succeeded: a registry row now binds this thumbprint and container. */
export interface AgentRegistered extends AgentFacts {
  readonly type: "agent.registered";
  readonly project: string;
  /** Lowercase hex SHA-256 of the agent's leaf certificate (DER). */
  readonly thumbprint: string;
}

/** The dialer's attempt to reach clawkerd failed; it will back off and retry. */
export interface AgentDialFailed extends AgentFacts {
  readonly type: "agent.dial_failed";
  readonly attempt: number;
  readonly error: string;
}

/** A Session to clawkerd is open (Hello answered by HelloAck). */
export interface AgentSessionOpened extends AgentFacts {
  readonly type: "agent.session_opened";
  /** Thumbprint of the certificate clawkerd presented. */
  readonly peerThumbprint: string;
  /** Whether that certificate chains to our CA (the dialer connects regardless). */
  readonly isChainVerified: boolean;
  /** HelloAck.initialized: the one-time init plan has run before. */
  readonly isInitialized: boolean;
  /** HelloAck.cmd_running: the container's main command is running. */
  readonly isCmdRunning: boolean;
}

/** The registry has no row for this agent: RegisterRequired was sent. */
export interface AgentRegisterRequired extends AgentFacts {
  readonly type: "agent.register_required";
}

/** The agent's certificate does not match its registry row: the session is not trusted. */
export interface AgentUntrusted extends AgentFacts {
  readonly type: "agent.untrusted";
  readonly expectedThumbprint: string;
  readonly presentedThumbprint: string;
}

/** The init and boot plans ran and AgentReady was sent: the main command is starting. */
export interface AgentReady extends AgentFacts {
  readonly type: "agent.ready";
}

/** The Session ended (stream closed, container stopped, dialer cancelled). */
export interface AgentSessionClosed extends AgentFacts {
  readonly type: "agent.session_closed";
  readonly reason: string;
}

/** Everything published on the agents topic. */
export type AgentEvent =
  | AgentRegistered
  | AgentDialFailed
  | AgentSessionOpened
  | AgentRegisterRequired
  | AgentUntrusted
  | AgentReady
  | AgentSessionClosed;

/** Which executor plan a command belongs to. */
export type CommandPlan = "init" | "boot" | "user";

/** Facts every command (executor progress) event carries. */
export interface CommandFacts {
  readonly containerId: string;
  /** The Session command_id; unique within one Session. */
  readonly commandId: string;
  readonly time: number;
}

/** A ShellCommand was sent and clawkerd answered Started. */
export interface CommandStarted extends CommandFacts {
  readonly type: "command.started";
  readonly plan: CommandPlan;
  /** A short human description chosen by the sender (never argv with secrets). */
  readonly description: string;
  /** Number of pipeline stages. */
  readonly stages: number;
}

/** Output arrived: only the byte count travels on the bus, never the data. */
export interface CommandOutput extends CommandFacts {
  readonly type: "command.output";
  readonly bytes: number;
}

/** One pipeline stage exited. */
export interface CommandStageExit extends CommandFacts {
  readonly type: "command.stage_exit";
  readonly stageIndex: number;
  readonly exitCode: number;
  /** Signal number that ended the stage, 0 when it exited normally. */
  readonly signo: number;
}

/** The command finished with Done. */
export interface CommandDone extends CommandFacts {
  readonly type: "command.done";
  readonly exitCode: number;
}

/** The command finished with Error (ErrorCode name, e.g. "ERROR_CODE_TIMEOUT"). */
export interface CommandError extends CommandFacts {
  readonly type: "command.error";
  readonly code: string;
  readonly message: string;
}

/** Everything published on the commands topic. */
export type CommandEvent = CommandStarted | CommandOutput | CommandStageExit | CommandDone | CommandError;

/** Why the control plane is shutting down (ARCHITECTURE.md, "Shutdown and drain"). */
export type DrainReason = "zero_agents" | "signal" | "helper_crash" | "serve_failure" | "uncaught";

/** The agent watcher counted agents; `streak` is the run of zero counts so far. */
export interface DrainCount {
  readonly type: "drain.count";
  readonly agents: number;
  readonly streak: number;
  readonly time: number;
}

/** The agent watcher's listing failed; `consecutive` counts toward the error ceiling. */
export interface DrainListFailed {
  readonly type: "drain.list_failed";
  readonly error: string;
  readonly consecutive: number;
  readonly time: number;
}

/** Shutdown began. */
export interface DrainStarted {
  readonly type: "drain.started";
  readonly reason: DrainReason;
  readonly time: number;
}

/** One ordered shutdown step finished (e.g. "grpc_stopped", "ebpf_flushed"). */
export interface DrainStep {
  readonly type: "drain.step";
  readonly step: string;
  readonly time: number;
}

/** Shutdown finished; the process will exit with `exitCode`. */
export interface DrainFinished {
  readonly type: "drain.finished";
  readonly exitCode: number;
  readonly time: number;
}

/** Everything published on the drain topic. */
export type DrainEvent = DrainCount | DrainListFailed | DrainStarted | DrainStep | DrainFinished;

/** The rule store changed; `ruleCount` is the new number of rules. */
export interface FirewallRulesChanged {
  readonly type: "firewall.rules_changed";
  readonly ruleCount: number;
  readonly time: number;
}

/** A container's cgroup is enforced by the eBPF programs. */
export interface FirewallEnrolled {
  readonly type: "firewall.enrolled";
  readonly containerId: string;
  readonly time: number;
}

/** A container is no longer enforced (FirewallDisable or gone). */
export interface FirewallUnenrolled {
  readonly type: "firewall.unenrolled";
  readonly containerId: string;
  readonly time: number;
}

/** Unrestricted egress for a container until `until` (ms since the epoch). */
export interface FirewallBypassStarted {
  readonly type: "firewall.bypass_started";
  readonly containerId: string;
  readonly until: number;
  readonly time: number;
}

/** A bypass ended (timed out or cancelled); enforcement is back. */
export interface FirewallBypassEnded {
  readonly type: "firewall.bypass_ended";
  readonly containerId: string;
  readonly time: number;
}

/** A connection or lookup was refused; containerId null when it cannot be attributed. */
export interface FirewallDenied {
  readonly type: "firewall.denied";
  readonly containerId: string | null;
  readonly destination: string;
  readonly proto: string;
  readonly port: number;
  readonly time: number;
}

/** Everything published on the firewall topic. */
export type FirewallEvent =
  | FirewallRulesChanged
  | FirewallEnrolled
  | FirewallUnenrolled
  | FirewallBypassStarted
  | FirewallBypassEnded
  | FirewallDenied;

/** True when labels mark a managed agent container (`managed=true`, `purpose=agent`). */
export function isAgentLabels(labels: Labels): boolean {
  return labels[LABELS.managed] === "true" && labels[LABELS.purpose] === "agent";
}
