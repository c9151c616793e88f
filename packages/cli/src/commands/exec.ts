// `clawker exec`: runs one command in an agent through the control plane's Session channel
// (AdminService.ExecAgent, our extension beyond the Go contract), streams its output to stdout as
// it comes, and exits with the command's own exit code.
import { StringDecoder } from "node:string_decoder";
import { clawkerd, type admin as adminProto } from "@clawker/proto";
import { withAdmin } from "../admin-connection.js";
import {
  FORMAT_FLAG,
  optStr,
  parseDuration,
  positionals,
  type CommandSpec,
  type FlagValues,
} from "../command-spec.js";
import { CliError, ExitCode } from "../exit-codes.js";
import type { Io } from "../io.js";
import { ADMIN_SOCKET_FLAG, LOCATE_FLAGS, TOKEN_ENDPOINT_FLAG } from "./controlplane-up.js";

/** The spec of `clawker exec`. */
export const EXEC: CommandSpec = {
  words: ["exec"],
  summary: "Run a command in an agent and stream its output (ExecAgent, over the agent's Session).",
  description:
    "Name the agent with --agent (and --project) or with --container. The command is everything\n" +
    "after `--` (one program and its arguments, no shell), or a shell line with --sh, which runs\n" +
    "`/bin/sh -c LINE` so pipes work. Output (stdout and stderr combined) goes to stdout as it\n" +
    "arrives; the exit code is the command's own. A failure to run it (timeout, spawn failure,\n" +
    "lost session) prints the reason and exits 1. stdin is not forwarded. Interrupting clawker\n" +
    "kills the command. --format json prints each clawkerd Response as one JSON line instead.",
  flags: {
    agent: { type: "string", value: "NAME", description: "agent name, as in `clawker controlplane agents`" },
    project: { type: "string", value: "PROJECT", description: "project of --agent (default: none)" },
    container: { type: "string", value: "ID", description: "agent container id (or a unique prefix)" },
    sh: { type: "string", value: "LINE", description: "run `/bin/sh -c LINE` instead of `-- CMD [ARGS...]`" },
    timeout: {
      type: "string",
      value: "DURATION",
      description: "kill the command after this long (e.g. 30s, 2m; default: no limit)",
    },
    user: {
      type: "string",
      value: "UID[:GID]",
      description: "numeric user (and group) to run as (default 0:0)",
    },
    workdir: { type: "string", short: "w", value: "DIR", description: "working directory in the agent" },
    env: {
      type: "string",
      short: "e",
      multiple: true,
      value: "KEY=VALUE",
      description: "environment variable",
    },
    "trust-dir": LOCATE_FLAGS["trust-dir"],
    admin: LOCATE_FLAGS.admin,
    "token-endpoint": TOKEN_ENDPOINT_FLAG,
    "admin-socket": ADMIN_SOCKET_FLAG,
    format: FORMAT_FLAG,
  },
  positionals: "-- CMD [ARGS...]",
  examples: [
    "clawker exec --agent dev -- ls -la /workspace",
    "clawker exec --agent dev --project web --sh 'ps aux | grep node'",
    "clawker exec --container 3f2a9c --timeout 30s -- make test",
    "clawker exec --agent dev --format json -- uname -a",
  ],
};

const usage = (message: string): CliError => new CliError(ExitCode.usage, message);

/** Parses `--user UID[:GID]` into numeric ids (the group defaults to the user's number). */
export function parseUser(text: string): { uid: number; gid: number } {
  const m = /^(\d{1,10})(?::(\d{1,10}))?$/.exec(text);
  const uid = Number(m?.[1]);
  const gid = m?.[2] === undefined ? uid : Number(m[2]);
  if (m === null || uid > 0xffff_ffff || gid > 0xffff_ffff) {
    throw usage(`--user must be a numeric UID or UID:GID, got ${JSON.stringify(text)}`);
  }
  return { uid, gid };
}

/** Builds the ExecAgent request from parsed flags (pure; usage errors exit 2). */
export function execRequest(values: FlagValues): adminProto.ExecAgentRequest {
  const agent = optStr(values, "agent");
  const project = optStr(values, "project");
  const container = optStr(values, "container");
  if ((agent === undefined) === (container === undefined)) {
    throw usage("name the agent with --agent NAME [--project P] or with --container ID (one of them)");
  }
  if (project !== undefined && agent === undefined) throw usage("--project goes with --agent");
  if (agent === "") throw usage("--agent must not be empty");
  if (container !== undefined && !/^[0-9a-f]{1,64}$/.test(container)) {
    throw usage(`--container must be a hex container id, got ${JSON.stringify(container)}`);
  }

  const sh = optStr(values, "sh");
  const words = positionals(values);
  if (sh !== undefined && words.length > 0) throw usage("give the command after -- or with --sh, not both");
  if (sh === undefined && words.length === 0) throw usage("no command: add -- CMD [ARGS...] or --sh LINE");
  if (sh === "" || words[0] === "") throw usage("the command must not be empty");
  const argv = sh === undefined ? words : ["/bin/sh", "-c", sh];

  const env: Record<string, string> = {};
  const envFlags = values["env"];
  for (const pair of Array.isArray(envFlags) ? envFlags : []) {
    const at = pair.indexOf("=");
    if (at <= 0) throw usage(`--env must be KEY=VALUE, got ${JSON.stringify(pair)}`);
    env[pair.slice(0, at)] = pair.slice(at + 1);
  }
  const user = optStr(values, "user");
  const { uid, gid } = user === undefined ? { uid: 0, gid: 0 } : parseUser(user);
  const timeout = optStr(values, "timeout");
  const timeoutSeconds = timeout === undefined ? 0 : Math.ceil(parseDuration("timeout", timeout) / 1000);

  return {
    containerId: container ?? "",
    agentName: agent ?? "",
    project: project ?? "",
    command: {
      stages: [{ argv, uid, gid, cwd: optStr(values, "workdir") ?? "", env }],
      timeoutSeconds,
      initialStdin: Buffer.alloc(0),
      printOutput: false,
      exitOnNonZero: false,
    },
  };
}

/** The process exit code for a command's final exit code (outside 0..255: 1). */
export function exitCodeOfCommand(finalExitCode: number): number {
  return Number.isInteger(finalExitCode) && finalExitCode >= 0 && finalExitCode <= 255 ? finalExitCode : 1;
}

/** Runs `exec`. */
export async function exec(values: FlagValues, io: Io): Promise<number> {
  const request = execRequest(values);
  const isJson = values["format"] === "json";
  return await withAdmin(values, io, async (client) => {
    // Bytes go out as bytes where the output can take them; otherwise decoded as a UTF-8 stream
    // (a character split across two chunks is held until it is whole).
    const decoder = new StringDecoder("utf8");
    const writeOutput = (data: Uint8Array): void => {
      if (io.stdout.writeBytes !== undefined) io.stdout.writeBytes(data);
      else io.stdout.write(decoder.write(Buffer.from(data)));
    };
    for await (const r of client.execAgent(request)) {
      if (isJson) io.stdout.write(JSON.stringify(clawkerd.Response.toJSON(r)) + "\n");
      const p = r.payload;
      switch (p?.$case) {
        case "output":
          if (!isJson) writeOutput(p.value.data);
          break;
        case "done":
          if (!isJson) io.stdout.write(decoder.end());
          return exitCodeOfCommand(p.value.finalExitCode);
        case "error":
          if (!isJson) io.stdout.write(decoder.end());
          throw new CliError(
            ExitCode.error,
            `exec: ${clawkerd.errorCodeToJSON(p.value.code)}: ${p.value.message}`,
          );
        default:
          break;
      }
    }
    throw new CliError(ExitCode.error, "exec: the stream ended without the command's outcome");
  });
}
