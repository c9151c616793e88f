// How many agent containers are running, asked of Docker directly: the agent
// watcher's count. A failure is a DockerError, never zero: "unknown" must not drain the daemon.
import { LABELS } from "@clawker/overseer";
import type { DockerClient } from "./client.js";
import { DockerError, toDockerError } from "./errors.js";

/** Default budget for one listing; a wedged daemon becomes a list error, not a hang. */
export const DEFAULT_COUNT_TIMEOUT_MS = 10_000;

/** The listContainers filter for running managed agent containers (labels are ANDed). */
export const RUNNING_AGENTS_FILTER = Object.freeze({
  label: [`${LABELS.managed}=true`, `${LABELS.purpose}=agent`],
  status: ["running"],
});

/**
 * Counts running containers labelled managed=true and purpose=agent. Rejects with a DockerError
 * ("unreachable", "api_error" or "timeout") when Docker cannot answer.
 */
export async function countRunningAgentContainers(
  docker: Pick<DockerClient, "listContainers">,
  options: { signal?: AbortSignal; timeoutMs?: number } = {},
): Promise<number> {
  const timeout = AbortSignal.timeout(options.timeoutMs ?? DEFAULT_COUNT_TIMEOUT_MS);
  const signal = options.signal === undefined ? timeout : AbortSignal.any([options.signal, timeout]);
  try {
    const list = await docker.listContainers({ filters: RUNNING_AGENTS_FILTER }, signal);
    return list.length;
  } catch (err) {
    if (timeout.aborted && options.signal?.aborted !== true) {
      throw new DockerError("timeout", "listContainers", "docker listContainers: timed out", { cause: err });
    }
    throw toDockerError(err, "listContainers");
  }
}
