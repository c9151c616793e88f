// AdminService.ExecAgent, OUR EXTENSION beyond the Go contract (admin.proto): runs one
// ShellCommand in one registered agent over the dialer's open Session to its clawkerd and streams
// that command's clawkerd Responses back unchanged (Started, OutputChunk..., StageExit..., exactly
// one Done or Error), honouring the caller's flow control; a cancelled call kills the command.
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import type * as grpc from "@grpc/grpc-js";
import {
  ADMIN_ERRORS,
  ClawkerError,
  serializeClawkerdResponse,
  type AdminReason,
  admin,
  type clawkerd,
} from "@clawker/proto";
import { DialerError, type Dialer } from "../agents/dialer.js";
import type { AgentRecord, Registry } from "../agents/registry.js";
import { SessionError } from "../agents/session.js";
import type { Logger } from "../logging.js";

/** The grpc-js handler of AdminService.ExecAgent (the AdminServiceDeps `exec` slot). */
export type ExecAgentHandler = grpc.handleServerStreamingCall<admin.ExecAgentRequest, clawkerd.Response>;

/** What the handler uses: the dialer's Sessions and the registry of trusted agents. */
export interface ExecAgentDeps {
  readonly dialer: Pick<Dialer, "exec" | "session" | "status">;
  readonly registry: Pick<Registry, "get" | "list">;
  readonly log: Logger;
}

/** Why an ExecAgent call was refused or cut short: admin listener reasons (codes in ADMIN_ERRORS). */
export type ExecAgentErrorReason = Extract<
  AdminReason,
  | "invalid_argument"
  | "agent_not_found"
  | "agent_ambiguous"
  | "agent_starting"
  | "no_session"
  | "session_closed"
>;

/** An ExecAgent failure with a stable `reason`; its message is safe to send to the caller. */
export class ExecAgentError extends ClawkerError<ExecAgentErrorReason> {
  override readonly name = "ExecAgentError";
}

/** SIGKILL: what a cancelled call's command gets (every stage; clawkerd then answers Done/Error). */
const SIGKILL = 9;

/**
 * AdminService's method table with ExecAgent's responses serialized by @clawker/proto's one-copy
 * encoder (a reused buffer per OutputChunk) instead of the generated codec's three copies. The
 * relay writes the Responses the Dialer decoded, so only the fields this control plane knows are
 * encoded: unknown fields an agent put on the wire end at the decoder and never reach the CLI.
 */
export const AdminServiceRelay: typeof admin.AdminServiceService = {
  ...admin.AdminServiceService,
  execAgent: { ...admin.AdminServiceService.execAgent, responseSerialize: serializeClawkerdResponse },
};

/** Which agent a request names. */
export type ExecTarget =
  | { readonly kind: "container"; readonly containerId: string }
  | { readonly kind: "name"; readonly agentName: string; readonly project: string };

/** A checked request: whom to ask and what to run. */
export interface ExecPlan {
  readonly target: ExecTarget;
  readonly command: clawkerd.ShellCommand;
}

/**
 * Checks a request (pure): exactly one way of naming the agent, at least one stage, a non-empty
 * program in every stage, and no `exit_on_non_zero` (that flag makes clawkerd itself exit, taking
 * the container with it; it belongs to the control plane's own plans).
 */
export function checkExecRequest(request: admin.ExecAgentRequest): ExecPlan {
  const bad = (message: string): ExecAgentError => new ExecAgentError("invalid_argument", message);
  const hasId = request.containerId !== "";
  const hasName = request.agentName !== "";
  if (hasId && hasName) throw bad("name the agent by container_id or by agent_name, not both");
  if (!hasId && !hasName) throw bad("name the agent by container_id or by agent_name");
  if (!hasName && request.project !== "") throw bad("project goes with agent_name");
  if (hasId && !/^[0-9a-f]{1,64}$/.test(request.containerId)) throw bad("container_id must be hex");
  const command = request.command;
  if (command === undefined || command.stages.length === 0) throw bad("the command has no stages");
  command.stages.forEach((stage, i) => {
    if (stage.argv.length === 0 || stage.argv[0] === "") throw bad(`stage ${i} has no program`);
  });
  if (command.exitOnNonZero) throw bad("exit_on_non_zero is reserved for the control plane's plans");
  const target: ExecTarget = hasId
    ? { kind: "container", containerId: request.containerId }
    : { kind: "name", agentName: request.agentName, project: request.project };
  return { target, command };
}

/**
 * Finds the registered agent a target names. A container id may be a unique prefix. A name that
 * several registrations carry (an old container and its replacement) picks the one with an open
 * Session; more than one such is `agent_ambiguous`.
 */
export function resolveAgent(
  deps: { readonly registry: ExecAgentDeps["registry"]; readonly dialer: Pick<Dialer, "session"> },
  target: ExecTarget,
): AgentRecord {
  if (target.kind === "container") {
    const exact = deps.registry.get(target.containerId);
    if (exact !== undefined) return exact;
    const matches = deps.registry.list().filter((r) => r.containerId.startsWith(target.containerId));
    if (matches.length === 1) return matches[0]!;
    if (matches.length === 0) {
      throw new ExecAgentError("agent_not_found", `no registered agent in container ${target.containerId}`);
    }
    throw new ExecAgentError(
      "agent_ambiguous",
      `container id prefix ${target.containerId} matches several agents`,
    );
  }
  const rows = deps.registry
    .list()
    .filter((r) => r.agentName === target.agentName && r.project === target.project);
  const shown = target.project === "" ? target.agentName : `${target.agentName} (project ${target.project})`;
  if (rows.length === 0) throw new ExecAgentError("agent_not_found", `no registered agent ${shown}`);
  if (rows.length === 1) return rows[0]!;
  const live = rows.filter((r) => deps.dialer.session(r.containerId) !== undefined);
  if (live.length === 1) return live[0]!;
  const ids = (live.length === 0 ? rows : live).map((r) => r.containerId.slice(0, 12)).join(", ");
  throw new ExecAgentError("agent_ambiguous", `agent ${shown} is registered in several containers (${ids})`);
}

/** Maps what the dialer and session throw to an ExecAgentError (undefined: an unexpected error). */
function classify(err: unknown): ExecAgentError | undefined {
  if (err instanceof ExecAgentError) return err;
  if (err instanceof DialerError) {
    return err.reason === "no_session"
      ? new ExecAgentError("no_session", "the agent has no open session", { cause: err })
      : new ExecAgentError("session_closed", "the control plane is shutting down", { cause: err });
  }
  if (err instanceof SessionError && err.reason === "session_closed") {
    return new ExecAgentError("session_closed", "the session to the agent closed", { cause: err });
  }
  return undefined;
}

/** Builds the ExecAgent handler. */
export function execAgentHandler(deps: ExecAgentDeps): ExecAgentHandler {
  return (call) => {
    const ac = new AbortController();
    // Client cancel, deadline or connection loss all surface as `cancelled`.
    call.once("cancelled", () => ac.abort(new Error("call cancelled")));
    void serve(deps, call, ac.signal);
  };
}

async function serve(
  deps: ExecAgentDeps,
  call: grpc.ServerWritableStream<admin.ExecAgentRequest, clawkerd.Response>,
  signal: AbortSignal,
): Promise<void> {
  const log = deps.log;
  let containerId: string | undefined;
  const commandId = `exec-${randomUUID()}`;
  let iterator: AsyncIterableIterator<clawkerd.Response, undefined> | undefined;
  let isTerminal = false;
  try {
    const plan = checkExecRequest(call.request);
    const agent = resolveAgent(deps, plan.target);
    containerId = agent.containerId;
    const state = deps.dialer.status(containerId)?.state;
    if (state !== "ready") {
      // A Session that is still registering or running its plans is not the user's yet.
      if (state === "open") throw new ExecAgentError("agent_starting", "the agent is still starting");
      throw new ExecAgentError("no_session", "the agent has no open session");
    }
    const running = deps.dialer.exec(containerId, plan.command, { commandId, description: "admin exec" });
    iterator = running;
    log.info(
      { event: "exec_started", containerId, commandId, stages: plan.command.stages.length },
      "exec in agent",
    );
    // One abort listener per call, not a race per chunk: cancelling kills the command and returns
    // its iterator, which settles a pending next() with done.
    const onAbort = (): void => cancelCommand(deps, log, containerId, commandId, running, isTerminal);
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
    try {
      for (;;) {
        const next = await running.next();
        if (signal.aborted) return;
        if (next.done === true) break;
        const r = next.value;
        const p = r.payload;
        if (p?.$case === "done" || p?.$case === "error") {
          isTerminal = true;
          const outcome =
            p.$case === "done" ? { exitCode: p.value.finalExitCode } : { errorCode: p.value.code };
          log.info({ event: "exec_ended", containerId, commandId, ...outcome }, "exec ended");
        }
        // Flow control: grpc-js buffers a bounded number of messages; past that, wait for the client.
        if (!call.write(r)) await once(call, "drain", { signal });
        if (isTerminal) break;
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
    call.end();
  } catch (err) {
    // Cancelled: the abort listener has killed the command already (or there was none yet).
    if (signal.aborted) return;
    const known = classify(err);
    if (known === undefined) log.error({ event: "exec_failed", containerId, commandId, err }, "exec failed");
    else if (known.reason !== "invalid_argument" && known.reason !== "agent_not_found") {
      log.warn({ event: "exec_refused", containerId, reason: known.reason }, known.message);
    }
    if (iterator !== undefined && !isTerminal)
      cancelCommand(deps, log, containerId, commandId, iterator, false);
    call.emit(
      "error",
      known === undefined ? ADMIN_ERRORS.status("internal", "internal error") : ADMIN_ERRORS.statusOf(known),
    );
  }
}

/** The caller went away: SIGKILL the command's stages and stop reading its output. */
function cancelCommand(
  deps: ExecAgentDeps,
  log: Logger,
  containerId: string | undefined,
  commandId: string,
  iterator: AsyncIterableIterator<clawkerd.Response, undefined> | undefined,
  isTerminal: boolean,
): void {
  if (iterator === undefined || containerId === undefined) return;
  if (!isTerminal) {
    try {
      deps.dialer.session(containerId)?.signal(commandId, SIGKILL);
    } catch {
      // The session closed meanwhile: clawkerd kills a closed session's commands itself.
    }
    log.info({ event: "exec_cancelled", containerId, commandId }, "exec cancelled by the caller");
  }
  void iterator.return?.();
}
