// AdminService handlers (CLI -> control plane). Authorization, the ready gate and recovery are
// interceptors in front of these; handlers only do the work. The 13 firewall RPCs come from the
// firewall subsystem (firewall/handlers.ts); without it they answer UNIMPLEMENTED.
import type * as grpc from "@grpc/grpc-js";
import { ADMIN_ERRORS, admin } from "@clawker/proto";
import type { AgentRecord } from "../agents/registry.js";
import type { FirewallHandlers } from "../firewall/handlers.js";
import { AdminServiceRelay, type ExecAgentHandler } from "./exec-agent.js";
import type { ServiceBinding } from "./grpc-listener.js";
import type { SosBoard, SosKind } from "./sos-board.js";

/** What the handlers read. */
export interface AdminServiceDeps {
  readonly agents: { list(): readonly AgentRecord[] };
  readonly sos: SosBoard;
  /** ExecAgent (our extension, exec-agent.ts); absent: the RPC answers UNIMPLEMENTED. */
  readonly exec?: ExecAgentHandler;
  /** The firewall RPCs (firewall/handlers.ts); absent: they answer UNIMPLEMENTED. */
  readonly firewall?: FirewallHandlers;
  /** Wall-clock now in unix nanoseconds (injectable for tests). */
  readonly nowUnixNanos?: () => bigint;
}

const SOS_KINDS = { bpffs_delegation: admin.SOSKind.SOS_KIND_BPFFS_DELEGATION } as const satisfies Record<
  SosKind,
  admin.SOSKind
>;

/** The wall clock in unix nanoseconds, from the high-resolution time origin. */
export function unixNanosNow(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1_000)) * 1_000n;
}

/** A handler for an RPC this control plane does not serve yet. */
function unimplemented<Req, Res>(): grpc.handleUnaryCall<Req, Res> {
  return (_call, callback) => {
    callback(ADMIN_ERRORS.status("unimplemented", "the firewall is not available in this control plane"));
  };
}

/**
 * The ListAgents answer for a registry listing, rebuilt only when the listing object changes,
 * and its wire bytes, encoded once per answer (issue 15: every call encoded the same answer into a
 * fresh writer and copied it into a Buffer). The answer is frozen, so its bytes cannot go stale.
 */
class ListingAnswer {
  #records: readonly AgentRecord[] | undefined;
  #answer: admin.ListAgentsResult = Object.freeze({ agents: Object.freeze([]) as unknown as admin.Agent[] });
  #bytes: Buffer | undefined;

  of(records: readonly AgentRecord[]): admin.ListAgentsResult {
    if (records !== this.#records) {
      this.#records = records;
      this.#answer = Object.freeze({
        agents: Object.freeze(records.map((r) => Object.freeze(toWireAgent(r)))) as unknown as admin.Agent[],
      });
      this.#bytes = undefined;
    }
    return this.#answer;
  }

  /** The response serializer: the current answer's bytes from the memo, anything else encoded. */
  readonly serialize = (value: admin.ListAgentsResult): Buffer => {
    if (value !== this.#answer) return LIST_AGENTS.responseSerialize(value);
    // grpc-js copies the bytes into its frame and keeps no reference, so one Buffer serves every call.
    this.#bytes ??= LIST_AGENTS.responseSerialize(value);
    return this.#bytes;
  };
}

const LIST_AGENTS = AdminServiceRelay.listAgents;

/** ListAgentsRequest has no fields: an empty request is always the same (frozen) message. */
const EMPTY_LIST_AGENTS_REQUEST: admin.ListAgentsRequest = Object.freeze({});

/** The request deserializer: no reader and no message built for the usual empty request. */
function decodeListAgentsRequest(bytes: Buffer): admin.ListAgentsRequest {
  return bytes.length === 0 ? EMPTY_LIST_AGENTS_REQUEST : LIST_AGENTS.requestDeserialize(bytes);
}

function toWireAgent(r: AgentRecord): admin.Agent {
  return {
    agentName: r.agentName,
    containerId: r.containerId,
    certThumbprint: r.certThumbprint,
    registeredAtUnix: BigInt(r.registeredAtUnix),
    lastSeenUnix: BigInt(r.lastSeenUnix),
    project: r.project,
  };
}

/** Builds the AdminService binding for a listener. */
export function adminService(deps: AdminServiceDeps): ServiceBinding {
  const now = deps.nowUnixNanos ?? unixNanosNow;
  const listing = new ListingAnswer();
  const implementation: admin.AdminServiceServer = {
    firewallInit: unimplemented(),
    firewallRemove: unimplemented(),
    firewallEnable: unimplemented(),
    firewallDisable: unimplemented(),
    firewallBypass: unimplemented(),
    firewallAddRules: unimplemented(),
    firewallRemoveRule: unimplemented(),
    firewallListRules: unimplemented(),
    firewallReload: unimplemented(),
    firewallStatus: unimplemented(),
    firewallRotateCa: unimplemented(),
    firewallSyncRoutes: unimplemented(),
    firewallResolveHostname: unimplemented(),
    ...deps.firewall,

    getSystemTime: (_call, callback) => {
      callback(null, { unixNanos: now() });
    },

    listAgents: (_call, callback) => {
      callback(null, listing.of(deps.agents.list()));
    },

    execAgent:
      deps.exec ??
      ((call) => {
        call.emit(
          "error",
          ADMIN_ERRORS.status(
            "unimplemented",
            "running commands in agents is not available in this control plane",
          ),
        );
      }),

    watchSos: (call) => {
      const ac = new AbortController();
      call.on("cancelled", () => ac.abort());
      void (async () => {
        try {
          for await (const sos of deps.sos.watch(ac.signal)) {
            call.write({ message: sos.message, kind: SOS_KINDS[sos.kind] });
          }
          if (!ac.signal.aborted) call.end();
        } catch (err) {
          call.destroy(err instanceof Error ? err : new Error(String(err)));
        }
      })();
    },
  };
  // ExecAgent's output goes out through the relay's one-copy serializer (exec-agent.ts); ListAgents
  // through its answer's memo.
  const definition: typeof AdminServiceRelay = {
    ...AdminServiceRelay,
    listAgents: {
      ...LIST_AGENTS,
      requestDeserialize: decodeListAgentsRequest,
      responseSerialize: listing.serialize,
    },
  };
  return { definition, implementation };
}
