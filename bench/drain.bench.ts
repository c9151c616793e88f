// Drain to zero: from the last agent container's `docker stop` to the AgentWatcher's drain
// callback, grace already passed, production options otherwise (30 s poll, threshold 2, 100 ms
// event debounce, 300 ms confirmation). Real dockerd, real events feeder, real overseer topic.
import { performance } from "node:perf_hooks";
import { pino } from "pino";
import { type ContainerEvent, type DrainEvent, LABELS, Topic } from "@clawker/overseer";
import { AgentWatcher } from "../packages/controlplane/src/agents/watcher.js";
import { countRunningAgentContainers } from "../packages/controlplane/src/docker/agent-count.js";
import { DockerClient } from "../packages/controlplane/src/docker/client.js";
import { EventsFeeder } from "../packages/controlplane/src/docker/events-feeder.js";
import { PrivateDocker } from "../test/harness/docker.js";
import { busyboxImage } from "../test/harness/images.js";
import { command, root } from "../test/harness/preconditions.js";
import { waitFor } from "../test/harness/wait-for.js";
import { repeat, summarise, type Benchmark } from "./lib.js";

const silent = pino({ level: "silent" });
const GRACE_MS = 300;

interface Sample {
  /** `docker stop` resolved -> drain callback. */
  readonly afterStop: number;
  /** `docker stop` called -> drain callback. */
  readonly fromStopCall: number;
}

async function once(daemon: PrivateDocker, image: string): Promise<Sample> {
  const docker = daemon.docker;
  const agent = await docker.createContainer({
    Image: image,
    Cmd: ["sleep", "600"],
    Labels: { [LABELS.managed]: "true", [LABELS.purpose]: "agent", [LABELS.agent]: "bench" },
    HostConfig: { Init: true, NetworkMode: "none" },
  });
  await agent.start();
  const stop = new AbortController();
  const containers = new Topic<ContainerEvent>({ name: "containers" });
  const drain = new Topic<DrainEvent>({ name: "drain" });
  const client = new DockerClient(daemon.socketPath);
  const feeder = new EventsFeeder({ docker: client, containers, log: silent });
  let drainedAt: number | undefined;
  let counted = 0;
  drain.subscribe((e) => void (e.type === "drain.count" && counted++));
  const watcher = new AgentWatcher(
    {
      countAgents: (signal) => countRunningAgentContainers(client, { signal }),
      onDrain: () => void (drainedAt = performance.now()),
      log: silent,
      containers,
      drain,
    },
    { gracePeriod: GRACE_MS },
  );
  try {
    feeder.start(stop.signal);
    const started = performance.now();
    const run = watcher.run(stop.signal);
    await waitFor(() => feeder.isConnected && counted >= 1 && performance.now() - started > GRACE_MS + 100, {
      what: "reconciled, counted, grace passed",
    });
    const called = performance.now();
    await agent.stop({ t: 10 });
    const stopped = performance.now();
    if ((await run) !== "drained" || drainedAt === undefined) throw new Error("the watcher did not drain");
    return { afterStop: drainedAt - stopped, fromStopCall: drainedAt - called };
  } finally {
    stop.abort();
    await watcher.close();
    await feeder.close();
    await containers.close();
    await drain.close();
    await agent.remove({ force: true });
  }
}

const bench: Benchmark = {
  name: "drain",
  skip: () => root.check() ?? command("dockerd").check() ?? command("nsenter").check(),
  async run(ctx) {
    const daemon = new PrivateDocker();
    try {
      await daemon.start();
      const image = await busyboxImage(daemon.docker);
      const samples = await repeat(ctx, () => once(daemon, image));
      return [
        summarise(
          "last agent's docker stop (returned) -> drain callback",
          "ms",
          samples.map((s) => s.afterStop),
          "lower",
          "<= 2000 ms",
        ),
        summarise(
          "last agent's docker stop (called) -> drain callback",
          "ms",
          samples.map((s) => s.fromStopCall),
          "lower",
        ),
      ];
    } finally {
      await daemon.close();
    }
  },
};

export default bench;
