// `clawker rm`: stops and removes an agent container, refusing any container of that name that is
// not the managed agent its labels must say it is.
import { dockerClient, removeAgentContainer } from "@clawker/adminclient";
import {
  FORMAT_FLAG,
  optStr,
  parseDuration,
  str,
  type CommandSpec,
  type FlagValues,
} from "../command-spec.js";
import { CliError, ExitCode } from "../exit-codes.js";
import type { Io } from "../io.js";
import { agentCliError } from "./run.js";

/** The spec of `clawker rm`. */
export const RM: CommandSpec = {
  words: ["rm"],
  summary: "Stop and remove an agent container.",
  description:
    "Removes container clawker.<project>.<agent> after checking its labels (dev.clawker.managed=true,\n" +
    "purpose agent, the same agent and project); any other container of that name is refused.\n" +
    "A running agent gets SIGTERM and --timeout to stop before SIGKILL; --force kills it at once.\n" +
    "Docker is reached through DOCKER_HOST (unix:///path; default /var/run/docker.sock).",
  flags: {
    agent: { type: "string", value: "NAME", description: "agent name (required)" },
    project: { type: "string", value: "NAME", description: "project name (default none)" },
    force: { type: "boolean", description: "kill instead of stopping gracefully" },
    timeout: { type: "string", value: "DURATION", description: "graceful stop budget (default 10s)" },
    format: FORMAT_FLAG,
  },
  examples: [
    "clawker rm --agent dev",
    "clawker rm --agent dev --project web --force",
    "clawker rm --agent dev --format json",
  ],
};

/** Runs `clawker rm`. */
export async function rmAgent(values: FlagValues, io: Io): Promise<number> {
  const agent = optStr(values, "agent");
  if (agent === undefined) throw new CliError(ExitCode.usage, "--agent NAME is required");
  const timeoutMs = parseDuration("timeout", str(values, "timeout", "10s"));
  try {
    const removed = await removeAgentContainer(dockerClient(io.env["DOCKER_HOST"]), {
      agent,
      project: str(values, "project", ""),
      force: values["force"] === true,
      stopTimeoutS: Math.max(1, Math.ceil(timeoutMs / 1000)),
    });
    if (values["format"] === "json") {
      io.stdout.write(JSON.stringify(removed, null, 2) + "\n");
    } else {
      io.stdout.write(
        `removed ${removed.name} (${removed.containerId.slice(0, 12)})${removed.wasRunning ? "; it was running" : ""}\n`,
      );
    }
    return ExitCode.ok;
  } catch (err) {
    throw agentCliError(err);
  }
}
