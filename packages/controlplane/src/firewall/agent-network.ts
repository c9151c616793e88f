// The agents' Docker network as the firewall reads it: its id, and the IPv4 subnet and gateway
// that default the proxy's clients and listen address (firewall.clients, firewall.proxy.address).
import type { DockerClient } from "../docker/client.js";
import { DockerError } from "../docker/errors.js";
import type { AgentNetwork, NetworkLookup } from "./firewall.js";
import { isCidr4, isIpv4 } from "./proxy/policy.js";

/** A NetworkLookup over the Docker client: a missing network is undefined, other failures reject. */
export function agentNetworkLookup(docker: Pick<DockerClient, "inspectNetwork">): NetworkLookup {
  return async (name, signal): Promise<AgentNetwork | undefined> => {
    let info;
    try {
      info = await docker.inspectNetwork(name, signal);
    } catch (err) {
      if (err instanceof DockerError && err.statusCode === 404) return undefined;
      throw err;
    }
    // The first IPv4 config: the firewall is IPv4-only.
    const v4 = (info.IPAM?.Config ?? []).find((c) => c.Subnet !== undefined && isCidr4(c.Subnet));
    return {
      id: info.Id,
      subnet: v4?.Subnet,
      gateway: v4?.Gateway !== undefined && isIpv4(v4.Gateway) ? v4.Gateway : undefined,
    };
  };
}
