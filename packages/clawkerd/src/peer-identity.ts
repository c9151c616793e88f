// Who may open a Session: only the control plane. The TLS layer already requires a client
// certificate chaining to the bootstrap CA; this interceptor adds the identity pin (CN exactly
// clawker-controlplane, client-auth extended key usage), so another agent's leaf from the same
// CA (CN clawker-clawkerd) is refused before any handler runs.
import { X509Certificate } from "node:crypto";
import type { PeerCertificate } from "node:tls";
import { ServerInterceptingCall, status, type ServerInterceptor } from "@grpc/grpc-js";
import { CONTROLPLANE_CN } from "@clawker/proto";
import type { Logger } from "./log.js";

/** The TLS client-authentication extended key usage (RFC 5280 §4.2.1.12). */
export const EKU_CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";

/** A refusal: the gRPC status and a fixed reason for the log. */
export interface PeerRefusal {
  readonly code: status;
  readonly reason: "no_client_certificate" | "wrong_common_name" | "no_client_auth_usage";
}

/** Checks the peer's leaf; undefined when it is the control plane. */
export function checkControlPlaneClient(cert: PeerCertificate | undefined): PeerRefusal | undefined {
  if (cert === undefined || cert.raw === undefined)
    return { code: status.UNAUTHENTICATED, reason: "no_client_certificate" };
  if (cert.subject?.CN !== CONTROLPLANE_CN)
    return { code: status.PERMISSION_DENIED, reason: "wrong_common_name" };
  let usages: string[] | undefined;
  try {
    usages = new X509Certificate(cert.raw).keyUsage;
  } catch {
    usages = undefined;
  }
  // Fail closed: a leaf without an EKU extension is not accepted as a client either.
  if (usages === undefined || !usages.includes(EKU_CLIENT_AUTH)) {
    return { code: status.PERMISSION_DENIED, reason: "no_client_auth_usage" };
  }
  return undefined;
}

/** A server interceptor that refuses every call not made by the control plane. */
export function peerIdentityInterceptor(log: Logger): ServerInterceptor {
  return (method, next) => {
    const call: ServerInterceptingCall = new ServerInterceptingCall(next, {
      start: (startNext) => {
        startNext({
          onReceiveMetadata: (metadata, metadataNext) => {
            const refusal = checkControlPlaneClient(next.getAuthContext().sslPeerCertificate);
            if (refusal === undefined) {
              metadataNext(metadata);
              return;
            }
            log.warn(
              { reason: refusal.reason, method: method.path, peer: next.getPeer(), event: "peer_refused" },
              "call refused",
            );
            call.sendStatus({ code: refusal.code, details: "only the control plane may call clawkerd" });
          },
        });
      },
    });
    return call;
  };
}
