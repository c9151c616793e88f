// clawker.trust.v1.FirewallTrustService as clawkerd serves it to the control plane (mTLS only,
// behind the same peer pin as Session): the firewall CA install (trust-install.ts) on the wire.
// Errors carry an ErrorInfo reason from TRUST_ERRORS; an unexpected failure is `internal` with a
// fixed text (the details are logged here, not sent).
import type { sendUnaryData, ServerUnaryCall } from "@grpc/grpc-js";
import { TRUST_ERRORS, type trust } from "@clawker/proto";
import type { Logger } from "./log.js";
import { TrustInstallError, type TrustInstaller } from "./trust-install.js";

/** The grpc-js implementation of FirewallTrustService for clawkerd's listener. */
export function trustServiceImplementation(deps: {
  readonly installer: Pick<TrustInstaller, "install">;
  readonly log: Logger;
}): trust.FirewallTrustServiceServer {
  return {
    installFirewallCa: (
      call: ServerUnaryCall<trust.InstallFirewallCaRequest, trust.InstallFirewallCaResponse>,
      callback: sendUnaryData<trust.InstallFirewallCaResponse>,
    ): void => {
      deps.installer.install(call.request.caBundlePem).then(
        (out) =>
          callback(null, {
            changed: out.changed,
            fingerprints: [...out.fingerprints],
            systemStore: out.systemStore,
            bundle: out.bundle,
            absent: out.absent,
          }),
        (err: unknown) => {
          if (err instanceof TrustInstallError) {
            deps.log.warn(
              { reason: err.reason, err: err.message, event: "firewall_ca_refused" },
              "firewall CA refused",
            );
            callback(TRUST_ERRORS.statusOf(err));
            return;
          }
          deps.log.error({ err, event: "firewall_ca_install_failed" }, "firewall CA install failed");
          callback(TRUST_ERRORS.status("internal", "firewall CA install failed"));
        },
      );
    },
  };
}
