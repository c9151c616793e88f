// clawker.jobs.v1.JobService on the admin listener (issue 13; scope `admin` in METHOD_SCOPES):
// each call goes to the named agent's clawkerd, which serves the same service, over the mTLS
// channel the dialer already holds for that agent's Session. Jobs live in clawkerd, so a control
// plane restart loses nothing: once the dialer has re-dialed, the same names answer again.
// A CLI watcher's stream is paced by write()/'drain' (reads from clawkerd pause meanwhile); one
// that stays full for `maxStallMs` is cut off with RESOURCE_EXHAUSTED (`watcher_too_slow`).
// On a cgroup v1 host (`placement`) StartJob holds the job at its gate, places its first process
// in v1 groups under the agent's container, then opens the gate; GetJobStatus reads those groups.
import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import * as grpc from "@grpc/grpc-js";
import {
  CLAWKER_ERROR_DOMAIN,
  ClawkerError,
  JOB_ERRORS,
  agentFullName,
  errorDetailOf,
  jobs,
  type JobReason,
} from "@clawker/proto";
import type { AgentChannel, Dialer } from "../agents/dialer.js";
import type { Registry } from "../agents/registry.js";
import type { ServiceBinding } from "../server/grpc-listener.js";
import type { Logger } from "../logging.js";
import type { Placement, PreparedGroups } from "./cgroups-v1.js";
import { EarlyWatches, type ClaimedWatch } from "./early-watch.js";
import type { JobPlacement } from "./placement.js";

/** What the service uses. */
export interface JobServiceDeps {
  readonly dialer: Pick<Dialer, "readyChannel">;
  readonly registry: Pick<Registry, "list">;
  readonly log: Logger;
  /** How long a CLI watcher's stream may stay full before it is cut off; default 5 s. */
  readonly maxStallMs?: number;
  /** Deadline of each unary call to clawkerd; default 30 s (StopJob waits for the grace). */
  readonly callTimeoutMs?: number;
  /** Per-job v1 cgroups made by the control plane; absent: clawkerd's own (v2) or none. */
  readonly placement?: JobPlacement | undefined;
  /** Each started job's first watch opened to clawkerd at once (early-watch.ts); false: never. */
  readonly earlyWatch?: EarlyWatches | false;
}

/** The agent a call goes to. */
interface Route {
  readonly client: jobs.JobServiceClient;
  readonly channel: AgentChannel;
  readonly containerId: string;
}

/** A refused job call with a stable reason (JOB_ERRORS in @clawker/proto). */
export class JobError extends ClawkerError<JobReason> {
  override readonly name = "JobError";
}

const NAME = /^agents\/([^/]+)\/jobs\/([0-9a-f-]{36})$/;

/** The agent full name a job name carries; throws invalid_argument when malformed. */
export function agentOfJobName(name: string): string {
  const m = NAME.exec(name);
  if (m === null)
    throw new JobError(
      "invalid_argument",
      `malformed job name ${JSON.stringify(name)}; want agents/<agent>/jobs/<uuid>`,
    );
  return m[1]!;
}

/** Builds the JobService binding for the admin listener. */
export function jobService(deps: JobServiceDeps): ServiceBinding {
  const log = deps.log;
  const timeoutMs = deps.callTimeoutMs ?? 30_000;
  const maxStallMs = deps.maxStallMs ?? 5000;

  /** A JobService client on the agent's Session channel. Never close() it: that closes the channel. */
  const routeTo = (fullName: string): Route => {
    const rows = deps.registry.list().filter((r) => agentFullName(r.project, r.agentName) === fullName);
    if (rows.length === 0) throw new JobError("agent_not_found", `no registered agent ${fullName}`);
    for (const r of rows) {
      const channel = deps.dialer.readyChannel(r.containerId);
      if (channel !== undefined) return { client: clientOn(channel), channel, containerId: r.containerId };
    }
    throw new JobError("agent_unavailable", `agent ${fullName} has no ready session`);
  };
  const clientFor = (fullName: string): jobs.JobServiceClient => routeTo(fullName).client;
  const unaryOn = <Req, Res>(
    call: (req: Req, md: grpc.Metadata, o: grpc.CallOptions, cb: grpc.requestCallback<Res>) => unknown,
    req: Req,
  ): Promise<Res> =>
    new Promise((resolve, reject) =>
      call(req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) =>
        err !== null || res === undefined ? reject(err ?? new Error("no answer")) : resolve(res),
      ),
    );
  const placement = deps.placement;
  const early = deps.earlyWatch === false ? undefined : (deps.earlyWatch ?? new EarlyWatches());
  const uuidOf = (name: string): string => name.slice(name.lastIndexOf("/") + 1);

  /**
   * StartJob where the control plane places the job (v1 host). With a spare gate reserved ahead
   * (already in the job's groups) only the limits are written before clawkerd is asked, and the
   * job runs at once. Otherwise clawkerd holds the first process, the control plane moves it into
   * the job's groups, then opens its gate; the client's answer does not wait for the gate's.
   * No instant of the target runs outside them; what could not be limited is in the limits_note.
   */
  const startPlaced = async (
    route: Route,
    req: jobs.StartJobRequest,
  ): Promise<jobs.StartJobResponse | undefined> => {
    if (placement === undefined) return undefined;
    const t0 = performance.now();
    const groups = await placement.groupsOf(route.containerId);
    if (groups === undefined) return undefined;
    const at = (): number => Math.round((performance.now() - t0) * 1000) / 1000;
    const c = route.client;
    const gate = new jobs.JobGateServiceClient("unused:0", grpc.credentials.createInsecure(), {
      channelOverride: route.channel,
    });
    // The next spare once this job's first output went to its watcher (or after the delay).
    const reserveNext = (after: string): void =>
      placement.reserveSoon(
        route.containerId,
        groups,
        (jobUuid) =>
          unaryOn<jobs.ReserveSpareGateRequest, jobs.ReserveSpareGateResponse>(
            gate.reserveSpareGate.bind(gate),
            { jobUuid },
          ).then((r) => r.pid),
        after,
      );
    const timeline: Record<string, number | boolean> = {};
    const done = (res: jobs.StartJobResponse): jobs.StartJobResponse => {
      log.debug(
        { job: res.job?.name, t0UnixMs: unixMs(t0), ...timeline, event: "job_timeline" },
        "job start timeline",
      );
      reserveNext(res.job === undefined ? "" : uuidOf(res.job.name));
      return res;
    };
    const reserved = placement.takeReserved(route.containerId);
    // The uuid is ours so that the job's groups and limits are made while clawkerd starts the
    // job (or before, with a reserved spare); only the move of a held process waits for it.
    const uuid = reserved?.uuid ?? randomUUID();
    // A reserved spare's limits are written before clawkerd is asked: it runs the job at once.
    const limited = reserved === undefined ? undefined : placement.limitReserved(reserved, req.limits);
    const heldCall = unaryOn<jobs.StartJobRequest, jobs.StartJobResponse>(c.startJob.bind(c), {
      ...req,
      holdForPlacement: true,
      jobUuid: uuid,
      sparePlacement:
        limited === undefined
          ? undefined
          : { isLimited: limited.placed.isLimited, limitsNote: limited.placed.note },
    });
    let prepared: PreparedGroups;
    if (limited !== undefined) {
      prepared = limited.prepared;
      timeline["spareAhead"] = true;
    } else {
      await new Promise(setImmediate);
      prepared = placement.prepare(groups, uuid, req.limits);
    }
    timeline["preparedMs"] = at();
    let held: jobs.StartJobResponse;
    try {
      held = await heldCall;
    } catch (err) {
      placement.abandon(groups, uuid);
      throw err;
    }
    timeline["heldMs"] = at();
    const job = held.job;
    if (job === undefined) {
      placement.abandon(groups, uuid);
      return done({ job, heldPid: 0 });
    }
    // Its first watch on the way while the job runs or is placed: clawkerd serves it from its log.
    if (held.heldPid === 0) {
      early?.open(job.name, c);
      if (reserved !== undefined && uuidOf(job.name) === uuid) placement.ran(uuid);
      else placement.abandon(groups, uuid);
      return done({ job, heldPid: 0 });
    }
    let placed: Placement;
    if (uuidOf(job.name) === uuid) placed = placement.enter(groups, uuid, prepared, held.heldPid);
    else {
      // A clawkerd that predates job_uuid named the job itself: its groups are made now.
      placement.abandon(groups, uuid);
      placed = placement.place(groups, uuidOf(job.name), held.heldPid, req.limits);
    }
    timeline["placedMs"] = at();
    if (placed.note !== "")
      log.warn({ job: job.name, note: placed.note, event: "job_not_limited" }, "job not fully limited");
    const opened = unaryOn<jobs.OpenJobGateRequest, jobs.OpenJobGateResponse>(gate.openJobGate.bind(gate), {
      name: job.name,
      run: true,
      isLimited: placed.isLimited,
      limitsNote: placed.note,
    });
    // After the gate's request, so clawkerd reads that first.
    early?.open(job.name, c);
    // The job is placed and its gate's opening sent: the client is answered now. Should the
    // opening never arrive, clawkerd ends the held job FAILED (cgroup_placement_failed) after its
    // hold timeout, having run nothing: GetJobStatus shows it.
    void opened.then(
      () =>
        log.debug(
          { job: job.name, t0UnixMs: unixMs(t0), gateOpenedMs: at(), event: "job_gate_timeline" },
          "job gate opened",
        ),
      (err: unknown) =>
        log.warn(
          {
            job: job.name,
            err: isServiceError(err) ? err.details : String(err),
            event: "job_gate_open_failed",
          },
          "job gate not opened",
        ),
    );
    return done({
      job: { ...job, isLimited: placed.isLimited, limitsNote: placed.isLimited ? "" : placed.note },
      heldPid: 0,
    });
  };

  const forward = <Req, Res>(
    method: "startJob" | "stopJob" | "getJobStatus" | "listJobs",
    agentOf: (req: Req) => string,
  ): grpc.handleUnaryCall<Req, Res> => {
    return (call, callback) => {
      let client: jobs.JobServiceClient;
      try {
        client = clientFor(agentOf(call.request));
      } catch (err) {
        callback(refusal(err, log));
        return;
      }
      const fn = client[method].bind(client) as unknown as (
        req: Req,
        md: grpc.Metadata,
        opts: grpc.CallOptions,
        cb: (err: grpc.ServiceError | null, res: Res) => void,
      ) => grpc.ClientUnaryCall;
      const upstream = fn.call(
        client,
        call.request,
        new grpc.Metadata(),
        { deadline: Date.now() + timeoutMs },
        (err, res) => (err === null ? callback(null, res) : callback(relayed(err, log))),
      );
      call.once("cancelled", () => upstream.cancel());
    };
  };

  const startJob: grpc.handleUnaryCall<jobs.StartJobRequest, jobs.StartJobResponse> = (call, callback) => {
    const req = call.request;
    let route: Route;
    try {
      if (req.agentName === "") throw new JobError("invalid_argument", "agent_name is required");
      if (req.argv.length === 0 || req.argv[0] === "")
        throw new JobError("invalid_argument", "argv must not be empty");
      route = routeTo(agentFullName(req.project, req.agentName));
    } catch (err) {
      callback(refusal(err, log));
      return;
    }
    // Only the control plane asks clawkerd to hold a job, names its uuid and its spare's placement;
    // a CLI's wish is not taken.
    const own = { ...req, holdForPlacement: false, jobUuid: "", sparePlacement: undefined };
    void startPlaced(route, own)
      .then(async (res) => {
        if (res !== undefined) return res;
        const started = await unaryOn<jobs.StartJobRequest, jobs.StartJobResponse>(
          route.client.startJob.bind(route.client),
          own,
        );
        if (started.job !== undefined) early?.open(started.job.name, route.client);
        return started;
      })
      .then(
        (res) => callback(null, { job: res.job, heldPid: 0 }),
        (err: unknown) => callback(isServiceError(err) ? relayed(err, log) : refusal(err, log)),
      );
  };

  /** After an answer that shows the job ended, its groups go (the reaper would, later). */
  const reapIfEnded = (name: string, job: jobs.Job | undefined): void => {
    if (placement === undefined || job === undefined || job.state === jobs.JobState.JOB_STATE_RUNNING) return;
    try {
      const route = routeTo(agentOfJobName(name));
      placement.removeIfEmpty(route.containerId, uuidOf(name));
    } catch {
      // no route now: the reaper's pass removes them
    }
  };

  const implementation: jobs.JobServiceServer = {
    startJob,
    stopJob: (call, callback) =>
      forward<jobs.StopJobRequest, jobs.StopJobResponse>("stopJob", (req) => agentOfJobName(req.name))(
        call,
        (err, res) => {
          if (err === null && res !== undefined && res !== null) reapIfEnded(call.request.name, res.job);
          callback(err, res);
        },
      ),
    getJobStatus: (call, callback) =>
      forward<jobs.GetJobStatusRequest, jobs.GetJobStatusResponse>("getJobStatus", (req) =>
        agentOfJobName(req.name),
      )(call, (err, res) => {
        if (err !== null || res === undefined || res === null || placement === undefined) {
          callback(err, res);
          return;
        }
        const name = call.request.name;
        let stats = res.stats;
        try {
          const running = res.job?.state === jobs.JobState.JOB_STATE_RUNNING;
          const own = running
            ? placement.stats(routeTo(agentOfJobName(name)).containerId, uuidOf(name))
            : undefined;
          stats = own ?? stats;
        } catch {
          // no route: clawkerd's answer as it is
        }
        reapIfEnded(name, res.job);
        callback(null, { ...res, ...(stats === undefined ? {} : { stats }) });
      }),
    listJobs: (call, callback) => {
      const req = call.request;
      if (req.agentName !== "") {
        forward<jobs.ListJobsRequest, jobs.ListJobsResponse>("listJobs", (r) =>
          agentFullName(r.project, r.agentName),
        )(call, callback);
        return;
      }
      // Every agent with a ready session; one that does not answer is left out, not fatal.
      const clients = readyClients(deps);
      void Promise.all(
        clients.map(
          (c) =>
            new Promise<jobs.Job[]>((resolve) =>
              c.listJobs(req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
                if (err !== null)
                  log.warn(
                    { err: err.message, event: "list_jobs_agent_failed" },
                    "an agent did not list its jobs",
                  );
                resolve(err === null ? res.jobs : []);
              }),
            ),
        ),
      ).then((lists) => callback(null, { jobs: lists.flat() }));
    },
    watchJobOutput: (call) =>
      watch(call, clientFor, maxStallMs, log, early, () => placement?.firstOutput(uuidOf(call.request.name))),
  };
  return { definition: jobs.JobServiceService, implementation };
}

function clientOn(channel: AgentChannel): jobs.JobServiceClient {
  // The target and credentials are unused with channelOverride; the channel carries both.
  return new jobs.JobServiceClient("unused:0", grpc.credentials.createInsecure(), {
    channelOverride: channel,
  });
}

function readyClients(deps: JobServiceDeps): jobs.JobServiceClient[] {
  const out: jobs.JobServiceClient[] = [];
  const seen = new Set<string>();
  for (const r of deps.registry.list()) {
    const channel = deps.dialer.readyChannel(r.containerId);
    if (channel === undefined || seen.has(r.containerId)) continue;
    seen.add(r.containerId);
    out.push(clientOn(channel));
  }
  return out;
}

function watch(
  call: grpc.ServerWritableStream<jobs.WatchJobOutputRequest, jobs.WatchJobOutputResponse>,
  clientFor: (fullName: string) => jobs.JobServiceClient,
  maxStallMs: number,
  log: Logger,
  early: EarlyWatches | undefined,
  /** Once, when the first output bytes were written to the watcher's stream. */
  onFirstOutput: () => void,
): void {
  let upstream: grpc.ClientReadableStream<jobs.WatchJobOutputResponse>;
  let claimed: ClaimedWatch | undefined;
  try {
    const agent = agentOfJobName(call.request.name);
    claimed = early?.claim(call.request.name);
    upstream = claimed?.stream ?? clientFor(agent).watchJobOutput(call.request);
  } catch (err) {
    call.emit("error", refusal(err, log));
    return;
  }
  let ended = false;
  let stall: NodeJS.Timeout | undefined;
  // Debug only: when the watch arrived and its first data came from clawkerd and went on.
  let t0 = log.isLevelEnabled("debug") ? performance.now() : undefined;
  let isFirst = true;
  const finish = (fn: () => void): void => {
    if (ended) return;
    ended = true;
    clearTimeout(stall);
    fn();
  };
  call.once("cancelled", () => finish(() => upstream.cancel()));
  const onData = (m: jobs.WatchJobOutputResponse): void => {
    const firstAt = t0 !== undefined && m.data.length > 0 ? performance.now() : undefined;
    const hasRoom = ended || call.write(m);
    if (firstAt !== undefined) {
      logWatchTimeline(log, call.request.name, t0!, firstAt);
      t0 = undefined;
    }
    if (isFirst && m.data.length > 0 && !ended) {
      isFirst = false;
      onFirstOutput();
    }
    if (hasRoom) return;
    // The CLI's stream is full: stop reading from clawkerd (which keeps the output on disk) until
    // it drains, and cut the CLI off when it does not within the stall bound.
    upstream.pause();
    clearTimeout(stall);
    stall = setTimeout(() => {
      log.warn({ job: call.request.name, event: "watcher_cut_off" }, "job watcher too slow; cut off");
      finish(() => {
        upstream.cancel();
        call.emit(
          "error",
          JOB_ERRORS.status(
            "watcher_too_slow",
            `watcher did not read for ${maxStallMs} ms; watch again to resume from the output still kept`,
          ),
        );
      });
    }, maxStallMs);
    call.once("drain", () => {
      clearTimeout(stall);
      if (!ended) upstream.resume();
    });
  };
  upstream.on("data", onData);
  upstream.on("end", () => finish(() => call.end()));
  upstream.on("error", (err: grpc.ServiceError) => {
    if (err.code === grpc.status.CANCELLED && ended) return;
    finish(() => call.emit("error", relayed(err, log)));
  });
  // An early watch: what it received before this call came, then live (or its end) as above.
  if (claimed !== undefined) {
    for (const m of claimed.received) onData(m);
    if (claimed.hasEnded) finish(() => call.end());
  }
}

/** performance.now() `t` in ms since the Unix epoch (µs precision), for lines of other processes. */
function unixMs(t: number): number {
  return Math.round((performance.timeOrigin + t) * 1000) / 1000;
}

// Once per watch (the first data): the watch's own chain, beside the start's `job_timeline`.
function logWatchTimeline(log: Logger, job: string, t0: number, firstAt: number): void {
  const ms = (t: number): number => Math.round((t - t0) * 1000) / 1000;
  log.debug(
    {
      job,
      t0UnixMs: unixMs(t0),
      firstDataMs: ms(firstAt),
      relayedMs: ms(performance.now()),
      event: "job_watch_timeline",
    },
    "job watch timeline",
  );
}

function isServiceError(err: unknown): err is grpc.ServiceError {
  return err instanceof Error && typeof (err as Partial<grpc.ServiceError>).code === "number";
}

function refusal(err: unknown, log: Logger): grpc.StatusObject {
  if (err instanceof JobError) return JOB_ERRORS.statusOf(err);
  log.error({ err, event: "job_call_failed" }, "job call failed");
  return JOB_ERRORS.status("internal", "internal error");
}

// clawkerd's JobService answers go back with their code, text and reason (one table serves both);
// anything else (a transport failure, the peer pin's refusals, a status without our detail) means
// the agent did not answer: UNAVAILABLE.
function relayed(err: grpc.ServiceError, log: Logger): grpc.StatusObject {
  const detail = errorDetailOf(err);
  if (
    detail?.domain === CLAWKER_ERROR_DOMAIN &&
    Object.hasOwn(JOB_ERRORS.codes, detail.reason) &&
    JOB_ERRORS.codes[detail.reason as JobReason] === err.code
  ) {
    return JOB_ERRORS.status(detail.reason as JobReason, err.details);
  }
  log.warn(
    { code: err.code, err: err.details, event: "job_agent_unavailable" },
    "agent did not answer a job call",
  );
  return JOB_ERRORS.status("agent_unavailable", "the agent did not answer");
}
