// Who may open a Session: only the control plane. The TLS layer already requires a client
// certificate chaining to the bootstrap CA; this interceptor adds the identity pin (CN exactly
// clawker-controlplane, client-auth extended key usage), so another agent's leaf from the same
// CA (CN clawker-clawkerd) is refused before any handler runs. Being the one interceptor of the
// server, it is also where every error status gets its ErrorInfo detail if it has none yet.
import { X509Certificate } from "node:crypto";
import type { PeerCertificate } from "node:tls";
import {
  ServerInterceptingCall,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  type status,
} from "@grpc/grpc-js";
import {
  CLAWKERD_ERRORS,
  CONTROLPLANE_CN,
  codeName,
  withCodeNameDetail,
  type ClawkerdServerReason,
} from "@clawker/proto";
import type { Logger } from "./log.js";

/** The TLS client-authentication extended key usage (RFC 5280 §4.2.1.12). */
export const EKU_CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";

/** Which check refused a peer (logged; the wire carries only PEER_WIRE_REASON's class). */
export type PeerCheck = "no_client_certificate" | "wrong_common_name" | "no_client_auth_usage";

/** The wire reason of each check: a wrong CN and a missing client-auth usage are one class. */
export const PEER_WIRE_REASON = {
  no_client_certificate: "no_client_certificate",
  wrong_common_name: "not_control_plane",
  no_client_auth_usage: "not_control_plane",
} as const satisfies Record<PeerCheck, ClawkerdServerReason>;

/** The one text every refused peer gets. */
export const PEER_REFUSED_MESSAGE = "only the control plane may call clawkerd";

/** A refusal: the gRPC status code (from CLAWKERD_ERRORS) and the check, for the log. */
export interface PeerRefusal {
  readonly code: status;
  readonly reason: PeerCheck;
}

function refusal(reason: PeerCheck): PeerRefusal {
  return { code: CLAWKERD_ERRORS.codes[PEER_WIRE_REASON[reason]], reason };
}

/** Checks the peer's leaf; undefined when it is the control plane. */
export function checkControlPlaneClient(cert: PeerCertificate | undefined): PeerRefusal | undefined {
  if (cert === undefined || cert.raw === undefined) return refusal("no_client_certificate");
  if (cert.subject?.CN !== CONTROLPLANE_CN) return refusal("wrong_common_name");
  let usages: string[] | undefined;
  try {
    usages = new X509Certificate(cert.raw).keyUsage;
  } catch {
    usages = undefined;
  }
  // Fail closed: a leaf without an EKU extension is not accepted as a client either.
  if (usages === undefined || !usages.includes(EKU_CLIENT_AUTH)) {
    return refusal("no_client_auth_usage");
  }
  return undefined;
}

/**
 * The verdict of checkControlPlaneClient per HTTP/2 session, i.e. per connection: grpc-js builds
 * the peer certificate afresh on every call (`getPeerCertificate()`, then the leaf is parsed for
 * its usages), the costliest step of a job call here, yet a TLS 1.3 connection's peer certificate
 * cannot change (no renegotiation) and a session never changes its socket. Keyed on grpc-js's own
 * session object, never on anything a client sends, and dropped with the session; a refusal is
 * kept too, so every call on a refused connection is refused.
 */
const verdicts = new WeakMap<object, PeerRefusal | null>();

/** The verdict on `call`'s peer, checked once per connection (see `verdicts`). */
function verdictOf(call: ServerInterceptingCallInterface): PeerRefusal | undefined {
  // grpc-js's base call keeps its HTTP/2 stream in a field of that name; not part of its API.
  const session = (call as { stream?: { session?: unknown } }).stream?.session;
  if (typeof session !== "object" || session === null)
    return checkControlPlaneClient(call.getAuthContext().sslPeerCertificate);
  let verdict = verdicts.get(session);
  if (verdict === undefined) {
    verdict = checkControlPlaneClient(call.getAuthContext().sslPeerCertificate) ?? null;
    verdicts.set(session, verdict);
  }
  return verdict ?? undefined;
}

/**
 * A server interceptor that refuses every call not made by the control plane, and gives an error
 * status sent without an ErrorInfo detail one (the code's name as the reason, logged).
 */
export function peerIdentityInterceptor(log: Logger): ServerInterceptor {
  return (method, next) => {
    const call: ServerInterceptingCall = new ServerInterceptingCall(next, {
      start: (startNext) => {
        startNext({
          onReceiveMetadata: (metadata, metadataNext) => {
            const refusal = verdictOf(next);
            if (refusal === undefined) {
              metadataNext(metadata);
              return;
            }
            log.warn(
              { reason: refusal.reason, method: method.path, peer: next.getPeer(), event: "peer_refused" },
              "call refused",
            );
            call.sendStatus(CLAWKERD_ERRORS.status(PEER_WIRE_REASON[refusal.reason], PEER_REFUSED_MESSAGE));
          },
        });
      },
      sendStatus: (st, statusNext) => {
        const out = withCodeNameDetail(st, CLAWKERD_ERRORS.domain);
        if (out !== st) {
          log.warn(
            { method: method.path, code: codeName(st.code), event: "status_without_reason" },
            "error status without a reason",
          );
        }
        statusNext(out);
      },
    });
    return call;
  };
}
