// AgentWatcher wired as in the daemon: countAgents lists the real engine's running agent
// containers, and the real events feeder publishes on a real overseer topic. Poll intervals are
// production-sized (30 s), so a drain well before the next poll can only come from events.
import assert from "node:assert/strict";
import { after, describe, test, type TestContext } from "node:test";
import type Docker from "dockerode";
import { pino } from "pino";
import { type ContainerEvent, type DrainEvent, LABELS, Topic } from "@clawker/overseer";
import { PrivateDocker } from "../../../test/harness/docker.js";
import { busyboxImage } from "../../../test/harness/images.js";
import { command, requires, root, skipReason } from "../../../test/harness/preconditions.js";
import { waitFor } from "../../../test/harness/wait-for.js";
import { AgentWatcher, type AgentWatcherOptions, type WatcherOutcome } from "../src/agents/watcher.js";
import { countRunningAgentContainers } from "../src/docker/agent-count.js";
import { DockerClient } from "../src/docker/client.js";
import { EventsFeeder } from "../src/docker/events-feeder.js";

const log = pino({ level: "silent" });
const POLL = 30_000;

interface Rig {
  readonly docker: Docker;
  /** The control plane's own client on the same engine. */
  readonly client: DockerClient;
  readonly image: string;
}

interface Watched {
  readonly watcher: AgentWatcher;
  readonly run: Promise<WatcherOutcome>;
  readonly startedAt: number;
  readonly counts: DrainEvent[];
  drainedAt: number | undefined;
}

async function startAgent(rig: Rig, name: string, purpose = "agent"): Promise<Docker.Container> {
  const c = await rig.docker.createContainer({
    name,
    Image: rig.image,
    Cmd: ["sleep", "600"],
    Labels: { [LABELS.managed]: "true", [LABELS.purpose]: purpose, [LABELS.agent]: name },
    HostConfig: { Init: true, NetworkMode: "none" },
  });
  await c.start();
  return c;
}

/** The daemon's wiring in miniature: topic, feeder, watcher (started after the feeder). */
function watch(t: TestContext, rig: Rig, options: AgentWatcherOptions): Watched {
  const stop = new AbortController();
  const containers = new Topic<ContainerEvent>({ name: "containers" });
  const drain = new Topic<DrainEvent>({ name: "drain" });
  const feeder = new EventsFeeder({ docker: rig.client, containers, log });
  const watched = { counts: [] as DrainEvent[], drainedAt: undefined as number | undefined } as Watched;
  drain.subscribe((e) => void watched.counts.push(e));
  const watcher = new AgentWatcher(
    {
      countAgents: (signal) => countRunningAgentContainers(rig.client, { signal }),
      onDrain: () => {
        watched.drainedAt = performance.now();
      },
      log,
      containers,
      drain,
    },
    options,
  );
  feeder.start(stop.signal);
  Object.assign(watched, { watcher, startedAt: performance.now(), run: watcher.run(stop.signal) });
  t.after(async () => {
    stop.abort();
    await watcher.close();
    await feeder.close();
    await containers.close();
    await drain.close();
  });
  return watched;
}

const countsOf = (w: Watched): number[] =>
  w.counts.flatMap((e) => (e.type === "drain.count" ? [e.agents] : []));

describe(
  "AgentWatcher on a real dockerd",
  { skip: skipReason(root, command("dockerd")), timeout: 180_000 },
  () => {
    const daemon = new PrivateDocker();
    let rig: Rig | undefined;

    async function setup(t: TestContext): Promise<Rig> {
      if (!requires(t, root, command("dockerd"))) throw new Error("unreachable");
      if (rig === undefined) {
        await daemon.start();
        rig = {
          docker: daemon.docker,
          client: new DockerClient(daemon.socketPath),
          image: await busyboxImage(daemon.docker),
        };
      }
      t.after(async () => {
        const all = await daemon.docker.listContainers({ all: true });
        await Promise.all(all.map((c) => daemon.docker.getContainer(c.Id).remove({ force: true })));
      });
      return rig;
    }

    after(async () => {
      if (rig !== undefined) await daemon.close();
    });

    test("does not drain while an agent runs; drains soon after the last one stops", async (t) => {
      const r = await setup(t);
      const a = await startAgent(r, "agent-a");
      const b = await startAgent(r, "agent-b");
      // A running non-agent managed container does not keep the daemon alive.
      await startAgent(r, "not-an-agent", "controlplane");
      const grace = 500;
      const w = watch(t, r, { pollInterval: POLL, gracePeriod: grace });
      await waitFor(() => performance.now() - w.startedAt > grace + 200, { what: "the grace to pass" });

      await a.stop({ t: 5 });
      // The stop triggers counts; they see agent-b.
      await waitFor(() => countsOf(w).includes(1), { what: "a count of 1" });
      assert.equal(w.drainedAt, undefined);

      await b.stop({ t: 5 });
      const stoppedAt = performance.now();
      assert.equal(await w.run, "drained");
      const ms = (w.drainedAt ?? Infinity) - stoppedAt;
      t.diagnostic(`drain ${ms.toFixed(0)} ms after the last agent's stop returned`);
      // Long before the next poll: the events path did it, with its confirming counts of zero.
      assert.ok(ms < POLL / 2, `drained ${ms} ms after the stop`);
      assert.deepEqual(countsOf(w).slice(-2), [0, 0]);
    });

    test("an agent stopping during the grace period drains only once the grace has passed", async (t) => {
      const r = await setup(t);
      const a = await startAgent(r, "agent-grace");
      const grace = 3_000;
      const w = watch(t, r, { pollInterval: POLL, gracePeriod: grace });
      await waitFor(() => countsOf(w).includes(1), { what: "the first count" });
      await a.stop({ t: 5 });
      // The event's zero counts arrive inside the grace and cannot drain...
      await waitFor(() => countsOf(w).filter((n) => n === 0).length >= 2, { what: "two zero counts" });
      const inGrace = performance.now() - w.startedAt < grace;
      assert.equal(await w.run, "drained");
      const after = (w.drainedAt ?? 0) - w.startedAt;
      t.diagnostic(`zero counts inside the grace: ${inGrace}; drained ${after.toFixed(0)} ms after run()`);
      assert.ok(after >= grace, `drained ${after} ms after run(), grace ${grace} ms`);
      // ...the count at the grace's end does, not the 30 s poll.
      assert.ok(after < POLL, `drained ${after} ms after run()`);
    });
  },
);
