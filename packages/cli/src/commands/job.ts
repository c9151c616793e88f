// `clawker job start|status|watch|stop|ls`: jobs in agents (clawker.jobs.v1.JobService on the
// admin listener, issue 13), in the seed's shape: start prints the job's name, the others take it.
import { StringDecoder } from "node:string_decoder";
import { jobs } from "@clawker/proto";
import { withAdmin } from "../admin-connection.js";
import {
  FORMAT_FLAG,
  optStr,
  parseDuration,
  positionals,
  type CommandSpec,
  type FlagSpec,
  type FlagValues,
} from "../command-spec.js";
import { CliError, ExitCode } from "../exit-codes.js";
import type { Io } from "../io.js";
import { ADMIN_SOCKET_FLAG, LOCATE_FLAGS, TOKEN_ENDPOINT_FLAG } from "./controlplane-up.js";

const CONNECT_FLAGS: Readonly<Record<string, FlagSpec>> = {
  "trust-dir": LOCATE_FLAGS["trust-dir"],
  admin: LOCATE_FLAGS.admin,
  "token-endpoint": TOKEN_ENDPOINT_FLAG,
  "admin-socket": ADMIN_SOCKET_FLAG,
  format: FORMAT_FLAG,
};

const usage = (message: string): CliError => new CliError(ExitCode.usage, message);

/** `clawker job start`. */
export const JOB_START: CommandSpec = {
  words: ["job", "start"],
  summary: "Start a job in an agent; prints its name (agents/<agent>/jobs/<uuid>).",
  description:
    "The job runs `-- CMD [ARGS...]` in the agent until it ends or `clawker job stop`; it does not\n" +
    "depend on this command (or any watcher) staying connected. Limits apply inside the agent's\n" +
    "own (the control plane places the job in cgroups of its own, v1 or v2); when it cannot,\n" +
    "`job status` says why not.",
  flags: {
    agent: { type: "string", value: "NAME", description: "agent name (required)" },
    project: { type: "string", value: "PROJECT", description: "project of --agent (default: none)" },
    cpu: { type: "string", value: "CPUS", description: "CPU limit in CPUs, e.g. 0.5 (cpu.max)" },
    memory: {
      type: "string",
      value: "SIZE",
      description: "memory limit, e.g. 512M (memory.max; high at 75%)",
    },
    "device-read-bps": { type: "string", value: "SIZE", description: "read bytes per second per device" },
    "device-write-bps": { type: "string", value: "SIZE", description: "write bytes per second per device" },
    "device-read-iops": { type: "string", value: "N", description: "read operations per second per device" },
    "device-write-iops": {
      type: "string",
      value: "N",
      description: "write operations per second per device",
    },
    "pids-limit": { type: "string", value: "N", description: "most processes the job may have (pids.max)" },
    workdir: { type: "string", short: "w", value: "DIR", description: "working directory in the agent" },
    env: {
      type: "string",
      short: "e",
      multiple: true,
      value: "KEY=VALUE",
      description: "environment variable",
    },
    ...CONNECT_FLAGS,
  },
  positionals: "-- CMD [ARGS...]",
  examples: [
    "clawker job start --agent dev -- make test",
    "clawker job start --agent dev --cpu 0.5 --memory 512M -- /bin/sh -c 'npm ci && npm test'",
  ],
};

/** `clawker job status`. */
export const JOB_STATUS: CommandSpec = {
  words: ["job", "status"],
  summary: "A job's state, exit, times and resource usage.",
  flags: { ...CONNECT_FLAGS },
  positionals: "NAME",
  examples: ["clawker job status agents/dev/jobs/3f1c...", "clawker job status NAME --format json"],
};

/** `clawker job watch`. */
export const JOB_WATCH: CommandSpec = {
  words: ["job", "watch"],
  summary: "Print a job's output from the oldest byte kept, then follow it until the job ends.",
  description:
    "stdout and stderr of the job arrive multiplexed on stdout. When the job's oldest output was\n" +
    "dropped to keep its bound, a note on stderr says how many bytes are missing. Any number of\n" +
    "watchers may follow one job; one that stops reading is cut off (exit 1, watcher_too_slow).",
  flags: { ...CONNECT_FLAGS },
  positionals: "NAME",
  examples: ["clawker job watch agents/dev/jobs/3f1c..."],
};

/** `clawker job stop`. */
export const JOB_STOP: CommandSpec = {
  words: ["job", "stop"],
  summary: "Stop a job: SIGTERM to its whole tree, SIGKILL after the grace. A finished job: no-op.",
  flags: {
    grace: {
      type: "string",
      value: "DURATION",
      description: "time between SIGTERM and SIGKILL (default 10s)",
    },
    ...CONNECT_FLAGS,
  },
  positionals: "NAME",
  examples: ["clawker job stop agents/dev/jobs/3f1c...", "clawker job stop NAME --grace 30s"],
};

/** `clawker job ls`. */
export const JOB_LS: CommandSpec = {
  words: ["job", "ls"],
  summary: "List jobs of one agent, or of every agent with a session.",
  flags: {
    agent: { type: "string", value: "NAME", description: "only this agent's jobs" },
    project: { type: "string", value: "PROJECT", description: "project of --agent" },
    state: { type: "string", value: "STATE", description: "running, completed, failed or stopped" },
    ...CONNECT_FLAGS,
  },
  examples: ["clawker job ls", "clawker job ls --agent dev --state running --format json"],
};

const SIZE_UNITS: Readonly<Record<string, number>> = {
  "": 1,
  K: 2 ** 10,
  M: 2 ** 20,
  G: 2 ** 30,
  T: 2 ** 40,
};

/** Parses a byte size: `512M`, `1G`, `1.5GiB`, `4096`, `10MB` (binary units); usage error otherwise. */
export function parseSize(flag: string, text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(text.trim());
  const unit = SIZE_UNITS[(m?.[2] ?? "").toUpperCase()];
  const n = m === null || unit === undefined ? NaN : Math.round(Number(m[1]) * unit);
  if (!Number.isSafeInteger(n) || n <= 0) {
    throw usage(`--${flag} must be a positive size such as 512M or 1G, got ${JSON.stringify(text)}`);
  }
  return n;
}

/** Parses `--cpu`/`--cpus` (CPUs, e.g. 0.5) into thousandths of a CPU. */
export function parseCpu(text: string, flag = "cpu"): number {
  const n = /^\d+(\.\d+)?$/.test(text.trim()) ? Number(text) : NaN;
  const millis = Math.round(n * 1000);
  if (!Number.isFinite(n) || millis < 1 || millis > 1024 * 1000) {
    throw usage(
      `--${flag} must be a number of CPUs between 0.001 and 1024, e.g. 0.5, got ${JSON.stringify(text)}`,
    );
  }
  return millis;
}

/** Parses a positive whole count (IOPS, pids). */
export function positiveCount(flag: string, text: string): number {
  const n = /^\d+$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n) || n <= 0 || n > 0xffff_ffff)
    throw usage(`--${flag} must be a positive integer, got ${JSON.stringify(text)}`);
  return n;
}

/** Builds the StartJob request from parsed flags (pure; usage errors exit 2). */
export function startJobRequest(values: FlagValues): jobs.StartJobRequest {
  const agent = optStr(values, "agent");
  if (agent === undefined || agent === "") throw usage("--agent NAME is required");
  const argv = positionals(values);
  if (argv.length === 0 || argv[0] === "") throw usage("no command: add -- CMD [ARGS...]");
  const env: Record<string, string> = {};
  const envFlags = values["env"];
  for (const pair of Array.isArray(envFlags) ? envFlags : []) {
    const at = pair.indexOf("=");
    if (at <= 0) throw usage(`--env must be KEY=VALUE, got ${JSON.stringify(pair)}`);
    env[pair.slice(0, at)] = pair.slice(at + 1);
  }
  const size = (flag: string): bigint => {
    const v = optStr(values, flag);
    return v === undefined ? 0n : BigInt(parseSize(flag, v));
  };
  const count = (flag: string): number => {
    const v = optStr(values, flag);
    return v === undefined ? 0 : positiveCount(flag, v);
  };
  const cpu = optStr(values, "cpu");
  const limits: jobs.JobLimits = {
    cpuMillis: cpu === undefined ? 0 : parseCpu(cpu),
    memoryMaxBytes: size("memory"),
    ioReadBps: size("device-read-bps"),
    ioWriteBps: size("device-write-bps"),
    ioReadIops: count("device-read-iops"),
    ioWriteIops: count("device-write-iops"),
    pidsMax: count("pids-limit"),
  };
  return {
    agentName: agent,
    project: optStr(values, "project") ?? "",
    argv,
    cwd: optStr(values, "workdir") ?? "",
    env,
    limits,
    // The control plane decides placement; what a CLI sends here is overwritten.
    holdForPlacement: false,
    jobUuid: "",
  };
}

function jobName(values: FlagValues): string {
  const words = positionals(values);
  if (words.length !== 1 || words[0] === "")
    throw usage("give exactly one job NAME (agents/<agent>/jobs/<uuid>)");
  return words[0]!;
}

const STATE_NAMES: Readonly<Record<string, jobs.JobState>> = {
  running: jobs.JobState.JOB_STATE_RUNNING,
  completed: jobs.JobState.JOB_STATE_COMPLETED,
  failed: jobs.JobState.JOB_STATE_FAILED,
  stopped: jobs.JobState.JOB_STATE_STOPPED,
};

/** A job state for people: `RUNNING`, `FAILED`, ... */
function stateText(state: jobs.JobState): string {
  return jobs.jobStateToJSON(state).replace("JOB_STATE_", "");
}

const S = jobs.JobServiceService;

/** Runs `job start`. */
export async function jobStart(values: FlagValues, io: Io): Promise<number> {
  const request = startJobRequest(values);
  const { job } = await withAdmin(values, io, (c) =>
    c.callMethod(S.startJob, request, { deadlineMs: 30_000 }),
  );
  if (job === undefined)
    throw new CliError(ExitCode.error, "job start: the control plane answered without a job");
  if (values["format"] === "json") io.stdout.write(JSON.stringify(jobs.Job.toJSON(job)) + "\n");
  else io.stdout.write(job.name + "\n");
  if (!job.isLimited && job.limitsNote !== "") io.stderr.write(`clawker: warning: ${job.limitsNote}\n`);
  return ExitCode.ok;
}

/** Lines of `job status` in the seed's `key value` shape. */
export function statusLines(job: jobs.Job, stats: jobs.JobStats | undefined): string[] {
  const ns = (v: bigint): string => (v === 0n ? "-" : new Date(Number(v / 1_000_000n)).toISOString());
  const lines = [
    `name ${job.name}`,
    `state ${stateText(job.state)}`,
    ...(job.reason === "" ? [] : [`reason ${job.reason}`]),
    ...(job.state === jobs.JobState.JOB_STATE_RUNNING ? [] : [`exit_code ${job.exitCode}`]),
    ...(job.signo === 0 ? [] : [`signal ${job.signo}`]),
    `started ${ns(job.startedAtUnixNanos)}`,
    `ended ${ns(job.endedAtUnixNanos)}`,
    `argv ${JSON.stringify(job.argv)}`,
    `output_bytes ${job.outputBytes}`,
    `output_dropped_bytes ${job.outputDroppedBytes}`,
    `limited ${job.isLimited}${job.limitsNote === "" ? "" : ` (${job.limitsNote})`}`,
  ];
  if (stats !== undefined) {
    const flat = jobs.JobStats.toJSON(stats) as Record<string, unknown>;
    for (const [k, v] of Object.entries(flat)) {
      if (typeof v === "object" && v !== null)
        for (const [ek, ev] of Object.entries(v)) lines.push(`${k}.${ek} ${String(ev)}`);
      else lines.push(`${k} ${String(v)}`);
    }
  }
  return lines;
}

/** Runs `job status`. */
export async function jobStatus(values: FlagValues, io: Io): Promise<number> {
  const name = jobName(values);
  const r = await withAdmin(values, io, (c) => c.callMethod(S.getJobStatus, { name }));
  if (values["format"] === "json")
    io.stdout.write(JSON.stringify(jobs.GetJobStatusResponse.toJSON(r)) + "\n");
  else if (r.job !== undefined) io.stdout.write(statusLines(r.job, r.stats).join("\n") + "\n");
  return ExitCode.ok;
}

/** Runs `job watch`. */
export async function jobWatch(values: FlagValues, io: Io): Promise<number> {
  const name = jobName(values);
  const isJson = values["format"] === "json";
  const decoder = new StringDecoder("utf8");
  await withAdmin(values, io, async (c) => {
    for await (const m of c.streamMethod(S.watchJobOutput, { name })) {
      if (isJson) {
        io.stdout.write(JSON.stringify(jobs.WatchJobOutputResponse.toJSON(m)) + "\n");
        continue;
      }
      if (m.droppedBytes > 0n)
        io.stderr.write(`clawker: ${m.droppedBytes} bytes of older output were dropped\n`);
      if (io.stdout.writeBytes !== undefined) io.stdout.writeBytes(m.data);
      else io.stdout.write(decoder.write(m.data));
    }
  });
  if (!isJson) io.stdout.write(decoder.end());
  return ExitCode.ok;
}

/** Runs `job stop`. */
export async function jobStop(values: FlagValues, io: Io): Promise<number> {
  const name = jobName(values);
  const grace = optStr(values, "grace");
  const graceSeconds = grace === undefined ? 0 : Math.max(1, Math.ceil(parseDuration("grace", grace) / 1000));
  const r = await withAdmin(values, io, (c) =>
    c.callMethod(S.stopJob, { name, graceSeconds }, { deadlineMs: (graceSeconds || 10) * 1000 + 20_000 }),
  );
  if (values["format"] === "json") io.stdout.write(JSON.stringify(jobs.StopJobResponse.toJSON(r)) + "\n");
  else if (r.job !== undefined) io.stdout.write(`${r.job.name} ${stateText(r.job.state)}\n`);
  return ExitCode.ok;
}

/** Runs `job ls`. */
export async function jobLs(values: FlagValues, io: Io): Promise<number> {
  const agent = optStr(values, "agent") ?? "";
  const project = optStr(values, "project") ?? "";
  if (project !== "" && agent === "") throw usage("--project goes with --agent");
  const stateFlag = optStr(values, "state");
  const state =
    stateFlag === undefined ? jobs.JobState.JOB_STATE_UNSPECIFIED : STATE_NAMES[stateFlag.toLowerCase()];
  if (state === undefined)
    throw usage(`--state must be running, completed, failed or stopped, got ${JSON.stringify(stateFlag)}`);
  const r = await withAdmin(values, io, (c) =>
    c.callMethod(S.listJobs, { agentName: agent, project, state }),
  );
  if (values["format"] === "json") {
    io.stdout.write(JSON.stringify(jobs.ListJobsResponse.toJSON(r)) + "\n");
    return ExitCode.ok;
  }
  const rows = r.jobs.map((j) => [
    j.name,
    stateText(j.state),
    j.state === jobs.JobState.JOB_STATE_RUNNING ? "" : String(j.exitCode),
    j.argv.join(" "),
  ]);
  const head = ["NAME", "STATE", "EXIT", "COMMAND"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i]!.length)));
  for (const row of [head, ...rows])
    io.stdout.write(
      row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join("  ") + "\n",
    );
  return ExitCode.ok;
}
