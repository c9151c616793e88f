// AgentService (API.md §2) for the agent listener: Register behind the identity gate. The auth
// interceptor in front has already checked the bearer token, its scope and the client id.
import type { sendUnaryData, ServerUnaryCall } from "@grpc/grpc-js";
import { AGENT_ERRORS, agent } from "@clawker/proto";
import type { Logger } from "../logging.js";
import type { ServiceBinding } from "../server/grpc-listener.js";
import { GATE_WIRE_REASON, GateError, type IdentityGate } from "./identity-gate.js";

const INTERNAL_MESSAGE = "internal error";

/** Options of the AgentService binding. */
export interface AgentServiceOptions {
  readonly gate: IdentityGate;
  readonly log: Logger;
}

/** The AgentService definition and implementation, ready for GrpcListener's `services`. */
export function agentService(options: AgentServiceOptions): ServiceBinding {
  const { gate, log } = options;
  const implementation: agent.AgentServiceServer = {
    register(
      call: ServerUnaryCall<agent.RegisterRequest, agent.Welcome>,
      callback: sendUnaryData<agent.Welcome>,
    ): void {
      const cert = call.getAuthContext()?.sslPeerCertificate;
      gate.admit(call.getPeer(), cert, call.request).then(
        () => callback(null, {}),
        (err: unknown) => {
          if (err instanceof GateError) {
            const reason = GATE_WIRE_REASON[err.reason];
            callback(AGENT_ERRORS.status(reason, reason === "internal" ? INTERNAL_MESSAGE : err.message));
            return;
          }
          log.error({ err, event: "register_failed" }, "register failed");
          callback(AGENT_ERRORS.status("internal", INTERNAL_MESSAGE));
        },
      );
    },
  };
  return { definition: agent.AgentServiceService, implementation };
}
