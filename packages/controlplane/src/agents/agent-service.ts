// AgentService (API.md §2) for the agent listener: Register behind the identity gate. The auth
// interceptor in front has already checked the bearer token, its scope and the client id.
import { status, type sendUnaryData, type ServerUnaryCall } from "@grpc/grpc-js";
import { agent } from "@clawker/proto";
import type { Logger } from "../logging.js";
import type { ServiceBinding } from "../server/grpc-listener.js";
import { GATE_STATUS, GateError, type IdentityGate } from "./identity-gate.js";

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
            callback({
              code: GATE_STATUS[err.reason],
              details: err.reason === "internal" ? "internal error" : err.message,
            });
            return;
          }
          log.error({ err, event: "register_failed" }, "register failed");
          callback({ code: status.INTERNAL, details: "internal error" });
        },
      );
    },
  };
  return { definition: agent.AgentServiceService, implementation };
}
