// Who made an attempt, from what the daemon itself knows: the cgroup id -> container of the eBPF
// enforcement's enrolments, the source address -> running agent container of the address index,
// then the container -> agent of the registry (or, for a container that has not registered yet,
// the agent labels the operator's `clawker run` set, which is what the firewall scopes rules by).
// A source's own claim about the agent is never used, and nothing is guessed: an address two
// containers share, or one no agent owns, resolves to nobody.
import { isAgentLabels, LABELS } from "@clawker/overseer";
import type { AddressLookup, ContainerRecord } from "../../agents/address-index.js";
import type { AgentRecord } from "../../agents/registry.js";
import type { AgentResolver, EventOrigin, ResolvedAgent } from "./event-hub.js";

/** What the resolver reads. */
export interface AgentResolverDeps {
  /** The registry (absent until start-up opened it). */
  readonly registry: () => { get(containerId: string): AgentRecord | undefined } | undefined;
  readonly index: {
    lookup(address: string): AddressLookup;
    get(containerId: string): ContainerRecord | undefined;
  };
  /** Enrolled containers by cgroup id (the eBPF Enforcement), when it runs. */
  readonly enrolled?: () => readonly { readonly containerId: string; readonly cgroupId: string }[];
}

const NO_ONE: ResolvedAgent = Object.freeze({ agentName: "", project: "", containerId: "" });

/** The daemon's resolver (see the file comment). */
export function agentResolver(deps: AgentResolverDeps): AgentResolver {
  // cgroup id -> container id, rebuilt from the enrolments when an id is not in it (agents come
  // and go rarely; the eBPF source is rate-limited per cgroup in the kernel).
  let cgroups = new Map<string, string>();
  const containerOfCgroup = (cgroupId: string): string | undefined => {
    const known = cgroups.get(cgroupId);
    if (known !== undefined || deps.enrolled === undefined) return known;
    cgroups = new Map(deps.enrolled().map((e) => [e.cgroupId, e.containerId]));
    return cgroups.get(cgroupId);
  };
  return {
    resolve(origin: EventOrigin): ResolvedAgent {
      let containerId = origin.containerId;
      if (containerId === undefined && origin.cgroupId !== undefined)
        containerId = containerOfCgroup(origin.cgroupId);
      if (containerId === undefined && origin.address !== undefined) {
        const found = deps.index.lookup(origin.address);
        if (found.kind === "found") containerId = found.record.id;
      }
      if (containerId === undefined) return NO_ONE;
      const registered = deps.registry()?.get(containerId);
      if (registered !== undefined)
        return { agentName: registered.agentName, project: registered.project, containerId };
      const labels = deps.index.get(containerId)?.labels;
      if (labels !== undefined && isAgentLabels(labels))
        return {
          agentName: labels[LABELS.agent] ?? "",
          project: labels[LABELS.project] ?? "",
          containerId,
        };
      return { ...NO_ONE, containerId };
    },
  };
}
