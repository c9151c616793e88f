// clawker.jobs.v1.JobService as clawkerd serves it to the control plane (mTLS only, behind the
// same peer pin as Session): the agent's jobs (agent-jobs.ts) on the wire. Errors carry an
// ErrorInfo reason. A watcher reads the job's on-disk log at its own pace; one whose stream stays
// full for `maxStallMs` while there is more to send is cut off with RESOURCE_EXHAUSTED
// (`watcher_too_slow`), as the seed's send timeout: the job and the other watchers never wait
// for it, and it can watch again from what is kept.
import { once } from "node:events";
import type { ServerWritableStream, StatusObject, sendUnaryData } from "@grpc/grpc-js";
import { JOB_ERRORS, jobs, type JobReason } from "@clawker/proto";
import type { AgentJobs, AgentJobState, JobRecord } from "./agent-jobs.js";
import { ClawkerdError, type ClawkerdReason } from "./errors.js";
import type { GroupStats, Limits } from "./job-cgroup.js";
import type { Logger } from "./log.js";

/** What the service needs. */
export interface JobServiceDeps {
  readonly jobs: AgentJobs;
  /** The agent's name and project, checked against StartJob/ListJobs requests. */
  readonly agentName: string;
  readonly project: string;
  readonly log: Logger;
  /** How long a watcher's stream may stay full while output waits for it; default 5 s. */
  readonly maxStallMs?: number;
}

/** Default stall after which a watcher is cut off. */
export const DEFAULT_MAX_STALL_MS = 5000;

const STATES: Record<AgentJobState, jobs.JobState> = {
  running: jobs.JobState.JOB_STATE_RUNNING,
  completed: jobs.JobState.JOB_STATE_COMPLETED,
  failed: jobs.JobState.JOB_STATE_FAILED,
  stopped: jobs.JobState.JOB_STATE_STOPPED,
};

/** The wire form of a job. */
export function toWireJob(r: JobRecord, output: { written: number; dropped: number }): jobs.Job {
  return {
    name: r.name,
    state: STATES[r.state],
    argv: [...r.argv],
    exitCode: r.exitCode,
    signo: r.signo,
    reason: r.reason,
    startedAtUnixNanos: BigInt(r.startedAtNs),
    endedAtUnixNanos: BigInt(r.endedAtNs),
    limits: {
      cpuMillis: r.limits.cpuMillis,
      memoryMaxBytes: BigInt(r.limits.memoryMaxBytes),
      ioReadBps: BigInt(r.limits.ioReadBps),
      ioWriteBps: BigInt(r.limits.ioWriteBps),
      ioReadIops: r.limits.ioReadIops,
      ioWriteIops: r.limits.ioWriteIops,
      pidsMax: r.limits.pidsMax ?? 0,
    },
    isLimited: r.isLimited,
    limitsNote: r.limitsNote,
    outputBytes: BigInt(output.written),
    outputDroppedBytes: BigInt(output.dropped),
  };
}

/** Limits from the wire (absent: none). */
export function fromWireLimits(l: jobs.JobLimits | undefined): Limits {
  return {
    cpuMillis: l?.cpuMillis ?? 0,
    memoryMaxBytes: Number(l?.memoryMaxBytes ?? 0n),
    ioReadBps: Number(l?.ioReadBps ?? 0n),
    ioWriteBps: Number(l?.ioWriteBps ?? 0n),
    ioReadIops: l?.ioReadIops ?? 0,
    ioWriteIops: l?.ioWriteIops ?? 0,
    pidsMax: l?.pidsMax ?? 0,
  };
}

function toWireStats(s: GroupStats): jobs.JobStats {
  const n = (v: number | undefined): bigint => BigInt(Math.max(0, Math.trunc(v ?? 0)));
  return {
    cpuUsageUsec: n(s.cpu["usage_usec"]),
    cpuUserUsec: n(s.cpu["user_usec"]),
    cpuSystemUsec: n(s.cpu["system_usec"]),
    cpuNrPeriods: n(s.cpu["nr_periods"]),
    cpuNrThrottled: n(s.cpu["nr_throttled"]),
    cpuThrottledUsec: n(s.cpu["throttled_usec"]),
    memoryCurrentBytes: n(s.memoryCurrent),
    memoryPeakBytes: n(s.memoryPeak),
    memoryEvents: Object.fromEntries(Object.entries(s.memoryEvents).map(([k, v]) => [k, n(v)])),
    ioReadBytes: n(s.io.readBytes),
    ioWriteBytes: n(s.io.writeBytes),
    ioReadOps: n(s.io.readOps),
    ioWriteOps: n(s.io.writeOps),
    pidsCurrent: n(s.pidsCurrent),
  };
}

const FROM_WIRE_STATE = new Map<jobs.JobState, AgentJobState>(
  (Object.entries(STATES) as Array<[AgentJobState, jobs.JobState]>).map(([k, v]) => [v, k]),
);

/** The JobService reason of each clawkerd reason a caller may read; any other is internal. */
const JOB_REASONS: Partial<Record<ClawkerdReason, JobReason>> = {
  not_found: "not_found",
  invalid_request: "invalid_argument",
};

/** The gRPC status for a failure: known reasons keep their text, anything else is internal. */
function failure(err: unknown, log: Logger): StatusObject {
  if (err instanceof ClawkerdError) {
    const reason = JOB_REASONS[err.reason];
    if (reason !== undefined) return JOB_ERRORS.status(reason, err.message);
  }
  log.error({ err, event: "job_call_failed" }, "job call failed");
  return JOB_ERRORS.status("internal", "internal error");
}

function unary<Req, Res>(log: Logger, fn: (req: Req) => Promise<Res> | Res) {
  return (call: { request: Req }, callback: sendUnaryData<Res>): void => {
    void (async () => fn(call.request))().then(
      (res) => callback(null, res),
      (err: unknown) => callback(failure(err, log)),
    );
  };
}

/** The grpc-js implementation of JobGateService (the control plane's placement) for clawkerd's listener. */
export function jobGateImplementation(deps: Pick<JobServiceDeps, "jobs" | "log">): jobs.JobGateServiceServer {
  const { jobs: table, log } = deps;
  return {
    openJobGate: unary(log, async (req: jobs.OpenJobGateRequest) => {
      const record = await table.openGate(req.name, req.run, req.isLimited, req.limitsNote);
      return { job: toWireJob(record, table.output(record.name)) };
    }),
    reserveSpareGate: unary(log, (req: jobs.ReserveSpareGateRequest) => ({
      pid: table.reserveSpare(req.jobUuid),
    })),
  };
}

/** The grpc-js implementation of JobService for clawkerd's listener. */
export function jobServiceImplementation(deps: JobServiceDeps): jobs.JobServiceServer {
  const { jobs: table, log } = deps;
  const maxStall = deps.maxStallMs ?? DEFAULT_MAX_STALL_MS;
  const wire = (r: JobRecord): jobs.Job => toWireJob(r, table.output(r.name));
  const checkAgent = (agentName: string, project: string): void => {
    if (agentName !== deps.agentName || project !== deps.project) {
      throw new ClawkerdError("invalid_request", "the request names another agent");
    }
  };
  return {
    startJob: unary(log, async (req: jobs.StartJobRequest) => {
      checkAgent(req.agentName, req.project);
      const { record, heldPid } = await table.start({
        argv: req.argv,
        cwd: req.cwd,
        env: req.env,
        limits: fromWireLimits(req.limits),
        hold: req.holdForPlacement,
        uuid: req.jobUuid,
        ...(req.sparePlacement === undefined
          ? {}
          : {
              placedSpare: { isLimited: req.sparePlacement.isLimited, note: req.sparePlacement.limitsNote },
            }),
      });
      return { job: wire(record), heldPid };
    }),
    stopJob: unary(log, async (req: jobs.StopJobRequest) => {
      const grace = req.graceSeconds === 0 ? undefined : req.graceSeconds * 1000;
      return { job: wire(await table.stop(req.name, grace)) };
    }),
    getJobStatus: unary(log, (req: jobs.GetJobStatusRequest) => {
      const record = table.get(req.name);
      const stats = table.stats(req.name);
      return { job: wire(record), ...(stats === undefined ? {} : { stats: toWireStats(stats) }) };
    }),
    listJobs: unary(log, (req: jobs.ListJobsRequest) => {
      if (req.agentName !== "") checkAgent(req.agentName, req.project);
      const state = FROM_WIRE_STATE.get(req.state);
      return { jobs: table.list(state).map(wire) };
    }),
    watchJobOutput: (call: ServerWritableStream<jobs.WatchJobOutputRequest, jobs.WatchJobOutputResponse>) => {
      void watch(call, table, maxStall, log);
    },
  };
}

async function watch(
  call: ServerWritableStream<jobs.WatchJobOutputRequest, jobs.WatchJobOutputResponse>,
  table: AgentJobs,
  maxStall: number,
  log: Logger,
): Promise<void> {
  const ac = new AbortController();
  call.once("cancelled", () => ac.abort());
  let watcher;
  try {
    watcher = table.watch(call.request.name);
  } catch (err) {
    call.emit("error", failure(err, log));
    return;
  }
  let isFirst = true;
  try {
    for await (const ev of watcher) {
      if (ac.signal.aborted) return;
      const hasRoom = call.write({ data: ev.data, droppedBytes: BigInt(ev.dropped) });
      if (isFirst && ev.data.length > 0) {
        isFirst = false;
        table.firstChunkSent(call.request.name);
      }
      if (hasRoom) continue;
      // The stream is full: wait for the reader, but only so long.
      let timer: NodeJS.Timeout | undefined;
      const stalled = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), maxStall)));
      const drained = once(call, "drain", { signal: ac.signal }).then(
        () => false,
        () => false,
      );
      const isStalled = await Promise.race([drained, stalled]);
      clearTimeout(timer);
      if (isStalled && !ac.signal.aborted) {
        log.warn(
          { job: call.request.name, lag: watcher.lag, event: "watcher_cut_off" },
          "watcher too slow; cut off",
        );
        call.emit(
          "error",
          JOB_ERRORS.status(
            "watcher_too_slow",
            `watcher did not read for ${maxStall} ms; watch again to resume from the output still kept`,
          ),
        );
        ac.abort();
        return;
      }
    }
    if (!ac.signal.aborted) call.end();
  } finally {
    void watcher.return();
  }
}
