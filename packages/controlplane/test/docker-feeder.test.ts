// EventsFeeder against the real Docker engine from the harness: reconcile of what exists (stopped
// containers included), live events, reconnects through a real Unix-socket relay that the test
// cuts and pauses, and an unreachable daemon reported as unknown.
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, connect, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test, type TestContext } from "node:test";
import type Docker from "dockerode";
import { pino } from "pino";
import { type ContainerEvent, LABELS, Topic, isAgentLabels } from "@clawker/overseer";
import { PrivateDocker } from "../../../test/harness/docker.js";
import { JsonLines, type JsonLine } from "@clawker/test-support";
import { busyboxImage } from "../../../test/harness/images.js";
import { command, requires, root, skipReason } from "../../../test/harness/preconditions.js";
import { waitFor } from "../../../test/harness/wait-for.js";
import { DockerClient, createDockerClient } from "../src/docker/client.js";
import type { NetworkEvent } from "../src/docker/event-parse.js";
import { EventsFeeder } from "../src/docker/events-feeder.js";

const log = pino({ level: "silent" });
const AGENT = { [LABELS.managed]: "true", [LABELS.purpose]: "agent" };

/** A real Unix-socket relay in front of dockerd that the test can cut or pause. */
class SocketRelay {
  readonly path: string;
  readonly #target: string;
  readonly #sockets = new Set<Socket>();
  #server: Server | undefined;

  constructor(path: string, target: string) {
    this.path = path;
    this.#target = target;
  }

  /** Accepts connections again and forwards them to dockerd. */
  async listen(): Promise<void> {
    const server = createServer((client) => {
      const upstream = connect(this.#target);
      for (const s of [client, upstream]) {
        this.#sockets.add(s);
        s.on("close", () => this.#sockets.delete(s));
        s.on("error", () => undefined);
      }
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => client.destroy());
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.path, () => resolve());
    });
    this.#server = server;
  }

  /** Destroys every open connection (the events stream among them); new ones still work. */
  cut(): void {
    for (const s of this.#sockets) s.destroy();
  }

  /** Stops accepting (the socket file goes away) and cuts what is open: the daemon is unreachable. */
  async pause(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    this.cut();
    if (server !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

interface Rig {
  readonly daemon: PrivateDocker;
  readonly image: string;
}

function record<T>(topic: Topic<T>): T[] {
  const seen: T[] = [];
  topic.subscribe((e) => void seen.push(e), { capacity: 65_536 });
  return seen;
}

type ContainerState = "created" | "running" | "exited";

/** What the containers topic told a subscriber, folded from the events it collected. */
interface Observed {
  readonly status: "unknown" | "connected" | "disconnected";
  /** Managed containers by id, each in its last reported state. */
  readonly states: ReadonlyMap<string, ContainerState>;
  /** Running agent containers; null while Docker is unreachable or not yet reconciled. */
  readonly runningAgents: number | null;
}

/**
 * Folds collected container events in publish order. A reconcile's id list is the truth: every
 * other container is gone, as is a destroyed one, and a late (replayed) event about it is ignored.
 */
function observe(events: readonly ContainerEvent[]): Observed {
  let status: Observed["status"] = "unknown";
  let isReconciled = false;
  const states = new Map<string, ContainerState>();
  const agents = new Set<string>();
  const gone = new Set<string>();
  for (const e of events) {
    switch (e.type) {
      case "docker.connected":
      case "docker.disconnected":
        status = e.type === "docker.connected" ? "connected" : "disconnected";
        isReconciled = false;
        break;
      case "docker.reconciled": {
        const alive = new Set(e.containerIds);
        for (const id of [...states.keys()]) {
          if (alive.has(id)) continue;
          states.delete(id);
          gone.add(id);
        }
        isReconciled = true;
        break;
      }
      case "container.destroyed":
        states.delete(e.id);
        gone.add(e.id);
        break;
      default:
        // Docker never reuses an id: an event about a gone container is a late replay.
        if (gone.has(e.id)) break;
        if (isAgentLabels(e.labels)) agents.add(e.id);
        states.set(
          e.id,
          e.type === "container.started"
            ? "running"
            : e.type === "container.died"
              ? "exited"
              : (states.get(e.id) ?? "created"),
        );
    }
  }
  let running = 0;
  for (const [id, state] of states) if (state === "running" && agents.has(id)) running++;
  return { status, states, runningAgents: status === "connected" && isReconciled ? running : null };
}

async function agent(
  docker: Docker,
  image: string,
  name: string,
  cmd = ["sleep", "600"],
): Promise<Docker.Container> {
  return docker.createContainer({
    name,
    Image: image,
    Cmd: cmd,
    Labels: { ...AGENT, [LABELS.agent]: name },
    HostConfig: { Init: true, NetworkMode: "none" },
  });
}

function startFeeder(
  t: TestContext,
  docker: DockerClient,
  backoff = { initialMs: 20, maxMs: 200, healthyAfterMs: 100 },
  logger = log,
): {
  feeder: EventsFeeder;
  containers: Topic<ContainerEvent>;
  events: ContainerEvent[];
  networkEvents: NetworkEvent[];
} {
  const containers = new Topic<ContainerEvent>({ name: "containers", capacity: 65_536 });
  const events = record(containers);
  const stop = new AbortController();
  const feeder = new EventsFeeder({ docker, containers, log: logger, backoff });
  const networkEvents = record(feeder.networks);
  feeder.start(stop.signal);
  t.after(async () => {
    stop.abort();
    await feeder.close();
    await containers.close();
  });
  return { feeder, containers, events, networkEvents };
}

const ofId = (events: ContainerEvent[], id: string): string[] =>
  events.flatMap((e) => ("id" in e && e.id === id ? [`${e.type}/${e.source}`] : []));

test("an unreachable daemon is docker.disconnected and the agent count unknown, never zero", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "cpf-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const docker = createDockerClient({ host: `unix://${join(dir, "no-docker.sock")}` });
  const { feeder, events } = startFeeder(t, docker);
  await waitFor(() => events.some((e) => e.type === "docker.disconnected"), { what: "docker.disconnected" });
  assert.equal(feeder.isConnected, false);
  assert.equal(events.filter((e) => e.type === "docker.connected").length, 0);
  const disconnected = events.find((e) => e.type === "docker.disconnected");
  assert.match(disconnected?.type === "docker.disconnected" ? disconnected.error : "", /unreachable|ENOENT/);
  assert.equal(observe(events).status, "disconnected");
  assert.equal(observe(events).runningAgents, null);
  // Retries do not repeat the event: one transition, one event.
  await waitFor(() => feeder.attempts >= 3, { what: "three attempts" });
  assert.equal(feeder.reconciles, 0);
  assert.equal(events.filter((e) => e.type === "docker.disconnected").length, 1);
  await feeder.close();
  await feeder.close();
});

test("reconnect attempts back off: doubling from initialMs, capped at maxMs", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "cpf-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const docker = createDockerClient({ host: `unix://${join(dir, "no-docker.sock")}` });
  // The schedule is what the feeder logs right before each sleep, stamped by the feeder itself:
  // a test that polled for attempts would see them late under load and measure gaps too short.
  const sink = new JsonLines();
  const logger = pino({ level: "warn", timestamp: () => `,"at":${performance.now()}` }, sink);
  startFeeder(t, docker, { initialMs: 20, maxMs: 80, healthyAfterMs: 1_000 }, logger);
  const retries = (): JsonLine[] => sink.lines.filter((l) => l["event"] === "docker_connect_failed");
  await waitFor(() => retries().length >= 7, { what: "seven failed attempts" });
  const lost = retries().slice(0, 7);
  assert.deepEqual(
    lost.map((l) => l["retryMs"]),
    [20, 40, 80, 80, 80, 80, 80],
    "doubling from 20 ms, capped at 80",
  );
  assert.deepEqual(
    lost.map((l) => l["failures"]),
    [1, 2, 3, 4, 5, 6, 7],
  );
  // Each attempt came after the announced delay: a timer never fires early (libuv's cached loop
  // time allows 1 ms), however late a loaded machine runs it.
  const gaps = lost.slice(1).map((l, i) => (l["at"] as number) - (lost[i]!["at"] as number));
  t.diagnostic(`gaps between attempts: ${gaps.map((g) => g.toFixed(0)).join(", ")} ms`);
  for (const [i, gap] of gaps.entries()) {
    const waited = lost[i]!["retryMs"] as number;
    assert.ok(gap >= waited - 2, `attempt ${i + 2} came ${gap} ms after a ${waited} ms wait`);
  }
});

describe(
  "EventsFeeder on a real dockerd",
  { skip: skipReason(root, command("dockerd")), timeout: 180_000 },
  () => {
    const rig: { current?: Rig } = {};
    const daemon = new PrivateDocker();

    async function setup(t: TestContext): Promise<Rig> {
      if (!requires(t, root, command("dockerd"))) throw new Error("unreachable");
      if (rig.current === undefined) {
        await daemon.start();
        rig.current = { daemon, image: await busyboxImage(daemon.docker) };
      }
      t.after(async () => {
        const all = await daemon.docker.listContainers({ all: true });
        await Promise.all(all.map((c) => daemon.docker.getContainer(c.Id).remove({ force: true })));
        const nets = await daemon.docker.listNetworks({ filters: { label: [`${LABELS.managed}=true`] } });
        await Promise.all(nets.map((n) => daemon.docker.getNetwork(n.Id).remove()));
      });
      return rig.current;
    }

    after(async () => {
      if (rig.current !== undefined) await daemon.close();
    });

    test("reconciles existing containers (stopped ones too), then reports live events", async (t) => {
      const { daemon, image } = await setup(t);
      const docker = daemon.docker;
      // Before the feeder starts: running, exited (code 3), never started, and an unmanaged one.
      const running = await agent(docker, image, "running");
      await running.start();
      const exited = await agent(docker, image, "exited", ["sh", "-c", "exit 3"]);
      await exited.start();
      await exited.wait();
      const created = await agent(docker, image, "created");
      const unmanaged = await docker.createContainer({
        Image: image,
        Cmd: ["sleep", "600"],
        HostConfig: { NetworkMode: "none" },
      });
      await unmanaged.start();
      const net = await docker.createNetwork({
        Name: "clawker-feeder-test",
        Internal: true,
        Labels: { [LABELS.managed]: "true" },
        IPAM: { Config: [{ Subnet: "10.213.7.0/24" }] },
      });

      const { feeder, events, networkEvents } = startFeeder(t, new DockerClient(daemon.socketPath));
      await waitFor(() => events.some((e) => e.type === "docker.reconciled"), { what: "docker.reconciled" });
      assert.equal(feeder.isConnected, true);
      assert.equal(events[0]?.type, "docker.connected");
      const reconciled = events.find((e) => e.type === "docker.reconciled");
      assert.deepEqual(
        new Set(reconciled?.type === "docker.reconciled" ? reconciled.containerIds : []),
        new Set([running.id, exited.id, created.id]),
      );
      assert.deepEqual(ofId(events, running.id), [
        "container.created/reconcile",
        "container.started/reconcile",
      ]);
      assert.deepEqual(ofId(events, exited.id), ["container.created/reconcile", "container.died/reconcile"]);
      const died = events.find((e) => e.type === "container.died" && e.id === exited.id);
      assert.equal(died?.type === "container.died" ? died.exitCode : "none", 3);
      assert.deepEqual(ofId(events, created.id), ["container.created/reconcile"]);
      assert.deepEqual(ofId(events, unmanaged.id), []);
      assert.ok(
        networkEvents.some(
          (e) => e.type === "network.created" && e.id === net.id && e.source === "reconcile",
        ),
      );
      assert.equal(observe(events).runningAgents, 1);
      assert.deepEqual(
        observe(events).states,
        new Map([
          [running.id, "running"],
          [exited.id, "exited"],
          [created.id, "created"],
        ]),
      );

      // Live: create, connect, start, die, destroy, in order, from the stream.
      const live = await docker.createContainer({
        Image: image,
        Cmd: ["sleep", "600"],
        Labels: { ...AGENT, [LABELS.agent]: "live" },
        HostConfig: { Init: true, NetworkMode: "clawker-feeder-test" },
      });
      await live.start();
      await waitFor(() => observe(events).runningAgents === 2, { what: "two running agents" });
      await live.stop({ t: 2 });
      await live.remove();
      await waitFor(() => ofId(events, live.id).length >= 4, { what: "live events" });
      assert.deepEqual(ofId(events, live.id), [
        "container.created/event",
        "container.started/event",
        "container.died/event",
        "container.destroyed/event",
      ]);
      await waitFor(
        () => networkEvents.some((e) => e.type === "network.disconnected" && e.containerId === live.id),
        { what: "network disconnect" },
      );
      assert.ok(networkEvents.some((e) => e.type === "network.connected" && e.containerId === live.id));
      assert.equal(observe(events).runningAgents, 1);
      assert.equal(observe(events).states.has(live.id), false);
      await net.remove();
      await waitFor(() => networkEvents.some((e) => e.type === "network.destroyed" && e.id === net.id), {
        what: "network destroyed",
      });
      // The unmanaged container never shows up.
      assert.deepEqual(ofId(events, unmanaged.id), []);
      await feeder.close();
      assert.equal(feeder.networks.isClosed, true);
    });

    test("since is taken on the daemon's clock before subscribing: the window's events are replayed", async (t) => {
      const { daemon, image } = await setup(t);
      const docker = daemon.docker;
      const victim = await agent(docker, image, "dies-in-the-window");
      await victim.start();
      // A real client whose first events() stops the container first: the die then happens
      // after `since` was taken but before the subscription exists.
      let isFirst = true;
      class Hooked extends DockerClient {
        override async events(
          ...args: Parameters<DockerClient["events"]>
        ): ReturnType<DockerClient["events"]> {
          if (isFirst) {
            isFirst = false;
            await victim.stop({ t: 5 });
          }
          return super.events(...args);
        }
      }
      const { feeder, events } = startFeeder(t, new Hooked(daemon.socketPath));
      await waitFor(() => feeder.reconciles === 1, { what: "the reconcile" });
      await waitFor(() => ofId(events, victim.id).includes("container.died/event"), {
        what: "the replayed die",
      });
      // The listing saw it exited too; the replay comes after and agrees.
      const seq = ofId(events, victim.id);
      assert.deepEqual(seq.slice(0, 2), ["container.created/reconcile", "container.died/reconcile"]);
      assert.ok(seq.indexOf("container.died/event") > 1, seq.join(" "));
    });

    test("no event is lost across reconnects: cut streams and a paused daemon during churn", async (t) => {
      const { daemon, image } = await setup(t);
      const docker = daemon.docker;
      const dir = await mkdtemp(join(tmpdir(), "cpr-"));
      t.after(() => rm(dir, { recursive: true, force: true }));
      const relay = new SocketRelay(join(dir, "relay.sock"), daemon.socketPath);
      await relay.listen();
      t.after(() => relay.pause());
      const viaRelay = new DockerClient(relay.path);

      const keep = await agent(docker, image, "keep");
      await keep.start();
      const stopMe = await agent(docker, image, "stop-me");
      await stopMe.start();
      const removeMe = await agent(docker, image, "remove-me");
      const { feeder, events } = startFeeder(t, viaRelay);
      await waitFor(() => feeder.reconciles === 1, { what: "first reconcile" });

      // Deterministic part: changes while the daemon is unreachable appear after the reconnect.
      await relay.pause();
      await waitFor(() => observe(events).status === "disconnected", { what: "disconnected" });
      assert.equal(observe(events).runningAgents, null);
      await stopMe.stop({ t: 2 });
      await removeMe.remove();
      const born = await agent(docker, image, "born-while-away");
      await born.start();
      await relay.listen();
      await waitFor(() => feeder.reconciles === 2, { what: "second reconcile" });
      await waitFor(() => observe(events).runningAgents === 2, { what: "keep + born running" });
      const view = observe(events);
      assert.equal(view.states.get(keep.id), "running");
      assert.equal(view.states.get(stopMe.id), "exited");
      assert.equal(view.states.has(removeMe.id), false);
      assert.equal(view.states.get(born.id), "running");

      // Churn: containers come and go while the relay keeps cutting the stream.
      let isChurning = true;
      const churn = (async () => {
        try {
          for (let i = 0; i < 15; i++) {
            const c = await agent(docker, image, `churn-${i}`);
            await c.start();
            if (i % 3 === 0) continue; // some stay running
            await c.kill();
            // kill returns once the signal is sent: its die event must come before the marker's.
            await c.wait();
            if (i % 3 === 1) await c.remove({ force: true });
          }
        } finally {
          isChurning = false;
        }
      })();
      let cuts = 0;
      while (isChurning) {
        // Cut each new connection once, 100 ms into it.
        const before = feeder.reconciles;
        await new Promise((r) => setTimeout(r, 100));
        relay.cut();
        cuts++;
        await waitFor(() => feeder.reconciles > before && feeder.isConnected, {
          what: "reconnected",
          intervalMs: 5,
        });
      }
      await churn;
      // A marker after the churn: once the feeder reports it, everything before it was processed.
      const marker = await agent(docker, image, "marker");
      await waitFor(() => feeder.isConnected && observe(events).states.has(marker.id), {
        what: "the marker",
        timeoutMs: 20_000,
      });
      assert.ok(feeder.reconciles >= 2 + cuts, `${feeder.reconciles} reconciles after ${cuts} cuts`);
      const truth = await docker.listContainers({
        all: true,
        filters: { label: [`${LABELS.managed}=true`] },
      });
      const expected = Object.fromEntries(truth.map((c) => [c.Id, c.State]));
      const seen = observe(events);
      assert.deepEqual(Object.fromEntries(seen.states), expected);
      assert.equal(seen.runningAgents, truth.filter((c) => c.State === "running").length);
      // Closed means closed: no reconnect loop, no more events, even when the stream is cut again.
      // A live control feeder on the same relay, whose first retry waits as long as the closed
      // one's longest backoff (maxMs), proves by reconnecting that a live feeder would be back now.
      const control = startFeeder(t, viaRelay, { initialMs: 200, maxMs: 200, healthyAfterMs: 100 });
      await waitFor(() => control.feeder.reconciles === 1, { what: "the control's first reconcile" });
      await feeder.close();
      const attempts = feeder.attempts;
      const published = events.length;
      relay.cut();
      await waitFor(() => control.feeder.reconciles === 2, { what: "the control feeder's reconnect" });
      assert.equal(feeder.attempts, attempts);
      assert.equal(events.length, published);
      assert.equal(feeder.networks.isClosed, true);
      t.diagnostic(
        `${cuts} cuts, ${feeder.reconciles} reconciles, ${events.length} events, ${truth.length} containers at the end`,
      );
    });
  },
);
