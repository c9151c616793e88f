// The firewall's default upstream resolvers: the host's own list (/etc/resolv.conf), as Docker's
// embedded DNS does, minus what only the host itself can reach.
import { isIpv4 } from "./proxy/policy.js";

/** An upstream DNS resolver. */
export interface Resolver {
  readonly address: string;
  readonly port: number;
}

/** The most resolv.conf may name (glibc's MAXNS), and the most `firewall.resolvers` takes. */
const MAX_RESOLVERS = 4;

/**
 * The IPv4 nameservers of a resolv.conf text, in order, deduplicated, at most 4, port 53. Loopback
 * ones (systemd-resolved's 127.0.0.53, Docker's 127.0.0.11) and 0/8 are left out: they are this
 * host's or this container's own stub, which the gate's upstream must not be. IPv6 ones too: the
 * firewall is IPv4 only.
 */
export function hostResolvers(resolvConf: string): Resolver[] {
  const found: Resolver[] = [];
  for (const line of resolvConf.split("\n")) {
    const [keyword, address] = line.trim().split(/\s+/);
    if (keyword !== "nameserver" || address === undefined || !isIpv4(address)) continue;
    if (address.startsWith("127.") || address.startsWith("0.")) continue;
    if (!found.some((r) => r.address === address)) found.push({ address, port: 53 });
  }
  return found.slice(0, MAX_RESOLVERS);
}
