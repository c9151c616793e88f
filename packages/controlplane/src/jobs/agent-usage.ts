// clawker.jobs.v1.AgentUsageService on the admin listener (scope `admin`): each registered agent's
// usage and limits, read by the control plane from the agent container's own cgroups (the
// numbers `clawker controlplane agents --stats` prints). Nothing is asked of clawkerd.
import { agentFullName, jobs } from "@clawker/proto";
import type { Registry } from "../agents/registry.js";
import type { ServiceBinding } from "../server/grpc-listener.js";
import type { Logger } from "../logging.js";
import type { JobPlacement } from "./placement.js";

/** What the service uses. */
export interface AgentUsageDeps {
  readonly registry: Pick<Registry, "list">;
  /** The container cgroup reader (v1 placement, or the v2 reader); absent when neither can read. */
  readonly placement: Pick<JobPlacement, "usage"> | undefined;
  readonly log: Logger;
}

/** Builds the AgentUsageService binding for the admin listener. */
export function agentUsageService(deps: AgentUsageDeps): ServiceBinding {
  const implementation: jobs.AgentUsageServiceServer = {
    listAgentUsage: (call, callback) => {
      const req = call.request;
      const want = req.agentName === "" ? undefined : agentFullName(req.project, req.agentName);
      const rows = deps.registry
        .list()
        .filter((r) => want === undefined || agentFullName(r.project, r.agentName) === want);
      void Promise.all(
        rows.map(async (r): Promise<jobs.AgentUsage> => {
          const base = {
            agentName: r.agentName,
            project: r.project,
            containerId: r.containerId,
            cpuLimitMillis: 0,
            memoryLimitBytes: 0n,
            pidsLimit: 0n,
          };
          if (deps.placement === undefined)
            return {
              ...base,
              note: "no cgroup controllers the control plane can read on this host: usage not read",
            };
          try {
            const u = await deps.placement.usage(r.containerId);
            if (u === undefined)
              return { ...base, note: "the agent's container or its cgroups were not found" };
            return {
              ...base,
              stats: u.stats,
              cpuLimitMillis: u.cpuLimitMillis,
              memoryLimitBytes: BigInt(u.memoryLimitBytes),
              pidsLimit: BigInt(u.pidsLimit),
              note: "",
            };
          } catch (err) {
            deps.log.warn(
              { err, containerId: r.containerId, event: "agent_usage_failed" },
              "cannot read agent usage",
            );
            return { ...base, note: "the agent's usage could not be read" };
          }
        }),
      ).then((agents) => callback(null, { agents }));
    },
  };
  return { definition: jobs.AgentUsageServiceService, implementation };
}
