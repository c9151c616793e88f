// The firewall's /healthz probes (issue 11 §5): its egress proxy and DNS gate while its stack is
// up, and the eBPF manager whenever the daemon runs it. One FirewallStatus look serves the round.
import type { Probe } from "../supervisor/probes.js";

/** The firewall as these probes see it (Firewall.status()). */
export interface ProbedFirewall {
  status(): Promise<{
    readonly running: boolean;
    readonly proxyHealthy: boolean;
    readonly dnsHealthy: boolean;
    readonly dnsAddress: string;
  }>;
}

/** The eBPF manager's client as the probe sees it (EbpfClient.status()). */
export interface ProbedEbpfManager {
  status(): Promise<unknown>;
}

/** A firewall layer that did not answer its health check. */
export class FirewallProbeError extends Error {
  override readonly name = "FirewallProbeError";
  /** The stable machine-readable cause. */
  readonly reason = "layer_unhealthy";
}

/**
 * Named probes, in the order /healthz reports failures: `firewall-proxy` and `firewall-dns` pass
 * while the stack is down (nothing to serve; agents are refused in the kernel), `ebpf-manager` only
 * when `ebpf` is given. The two firewall probes of one round share one status() call.
 */
export function firewallProbes(
  firewall: ProbedFirewall,
  ebpf?: () => ProbedEbpfManager,
): Array<[string, Probe]> {
  let round: ReturnType<ProbedFirewall["status"]> | undefined;
  const status = (): ReturnType<ProbedFirewall["status"]> => {
    round ??= firewall.status().finally(() => {
      // Handed out for this round only; the next /healthz round looks again.
      queueMicrotask(() => (round = undefined));
    });
    return round;
  };
  const probes: Array<[string, Probe]> = [
    [
      "firewall-proxy",
      async () => {
        const s = await status();
        if (s.running && !s.proxyHealthy)
          throw new FirewallProbeError("the egress proxy did not answer its health check");
      },
    ],
    [
      "firewall-dns",
      async () => {
        const s = await status();
        if (s.running && s.dnsAddress !== "" && !s.dnsHealthy)
          throw new FirewallProbeError("the DNS gate did not answer its health check");
      },
    ],
  ];
  if (ebpf !== undefined) probes.push(["ebpf-manager", async () => void (await ebpf().status())]);
  return probes;
}
