// clawker.egress.v1.AgentEgressService on the agent listener (scope `agent:self:request`, checked by
// the AuthInterceptor in front): RequestEgress records a pending request of the calling agent. The
// agent is who the identity gate says the caller is (certificate, address, container, labels,
// registry row), never anything in the request; a request grants nothing by itself.
import type { sendUnaryData, ServerUnaryCall } from "@grpc/grpc-js";
import { AGENT_ERRORS, egress } from "@clawker/proto";
import { GATE_WIRE_REASON, GateError, type IdentityGate } from "../../agents/identity-gate.js";
import type { Logger } from "../../logging.js";
import type { ServiceBinding } from "../../server/grpc-listener.js";
import { FirewallError, firewallStatus } from "../errors.js";
import { actorOf } from "../handlers.js";
import type { EgressTriage } from "./egress-triage.js";

/** What the binding uses. */
export interface AgentEgressServiceOptions {
  readonly gate: Pick<IdentityGate, "identify">;
  readonly triage: Pick<EgressTriage, "request">;
  readonly log: Logger;
}

/** The AgentEgressService definition and implementation, ready for GrpcListener's `services`. */
export function agentEgressService(options: AgentEgressServiceOptions): ServiceBinding {
  const { gate, triage, log } = options;
  const implementation: egress.AgentEgressServiceServer = {
    requestEgress(
      call: ServerUnaryCall<egress.RequestEgressRequest, egress.RequestEgressResponse>,
      callback: sendUnaryData<egress.RequestEgressResponse>,
    ): void {
      const cert = call.getAuthContext()?.sslPeerCertificate;
      gate
        .identify(call.getPeer(), cert, "egress_request_denied")
        .then((agent) => triage.request(agent, call.request, actorOf(call)))
        .then(
          (answer) => callback(null, answer),
          (err: unknown) => {
            if (err instanceof GateError) {
              const reason = GATE_WIRE_REASON[err.reason];
              callback(AGENT_ERRORS.status(reason, reason === "internal" ? "internal error" : err.message));
              return;
            }
            if (err instanceof FirewallError && err.reason !== "internal") {
              log.info({ reason: err.reason, event: "egress_request_refused" }, err.message);
            } else {
              log.error({ err, event: "egress_request_failed" }, "egress request failed");
            }
            callback(firewallStatus(err));
          },
        );
    },
  };
  return { definition: egress.AgentEgressServiceService, implementation };
}
