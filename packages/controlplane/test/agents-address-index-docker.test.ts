// The address index on the real path: a private dockerd (harness), the real events feeder on the
// containers topic, and dockerInspector. A labelled busybox agent on an --internal network with an
// explicit subnet is indexed by its address once it starts and forgotten when it dies; a
// container started before the index follows the topic arrives through the reconcile.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Overseer } from "@clawker/overseer";
import { LABELS } from "@clawker/proto";
import pino from "pino";
import { ContainerAddressIndex, dockerInspector } from "../src/agents/address-index.js";
import { DockerClient } from "../src/docker/client.js";
import { EventsFeeder } from "../src/docker/events-feeder.js";
import { startPrivateDocker } from "../../../test/harness/docker.js";
import { busyboxImage } from "../../../test/harness/images.js";
import { command, requires, root } from "../../../test/harness/preconditions.js";
import { waitFor } from "../../../test/harness/wait-for.js";

const log = pino({ level: "silent" });
const SUBNET = "10.213.9.0/24";

void test("address index follows real Docker: start -> indexed by IP, die -> gone, reconcile fills it", async (t) => {
  if (!requires(t, root, command("dockerd"), command("nsenter"), command("ip"))) return;
  const daemon = await startPrivateDocker(t);
  const docker = daemon.docker;
  const image = await busyboxImage(docker);
  await docker.createNetwork({
    Name: "agents-index-net",
    Driver: "bridge",
    Internal: true,
    IPAM: { Config: [{ Subnet: SUBNET }] },
    Labels: { [LABELS.managed]: "true" },
  });
  const labels = (agent: string): Record<string, string> => ({
    [LABELS.managed]: "true",
    [LABELS.purpose]: "agent",
    [LABELS.agent]: agent,
    [LABELS.project]: "idx",
  });
  const create = (name: string, ip: string) =>
    docker.createContainer({
      name,
      Image: image,
      Cmd: ["sleep", "600"],
      Labels: labels(name),
      HostConfig: { NetworkMode: "agents-index-net", Init: true, CapDrop: ["NET_RAW"] },
      NetworkingConfig: { EndpointsConfig: { "agents-index-net": { IPAMConfig: { IPv4Address: ip } } } },
    });

  // One agent runs before anything follows Docker: the reconcile must bring it in.
  const early = await create("early", "10.213.9.10");
  await early.start();

  const overseer = new Overseer();
  t.after(() => overseer.close());
  let inspects = 0;
  const client = new DockerClient(daemon.socketPath);
  const inspect = dockerInspector(client);
  const index = new ContainerAddressIndex({
    log,
    containers: overseer.containers,
    inspect: (id) => {
      inspects++;
      return inspect(id);
    },
  });
  const ac = new AbortController();
  t.after(() => ac.abort());
  index.start(ac.signal);
  const feeder = new EventsFeeder({ docker: client, containers: overseer.containers, log });
  feeder.start(ac.signal);
  t.after(() => feeder.close());

  const found = await waitFor(
    () => {
      const r = index.lookup("10.213.9.10:40000");
      return r.kind === "found" ? r.record : undefined;
    },
    { timeoutMs: 15_000, what: "reconciled agent indexed" },
  );
  assert.equal(found.id, early.id);
  assert.equal(found.id.length, 64);
  assert.equal(found.labels[LABELS.agent], "early");

  const late = await create("late", "10.213.9.11");
  await late.start();
  await waitFor(() => index.lookup("10.213.9.11").kind === "found", {
    timeoutMs: 15_000,
    what: "started agent indexed",
  });
  const before = inspects;
  for (let i = 0; i < 100; i++) assert.equal(index.lookup("::ffff:10.213.9.11").kind, "found");
  assert.equal(inspects, before, "lookups make no Docker call");

  await late.kill();
  await waitFor(() => index.lookup("10.213.9.11").kind === "none", {
    timeoutMs: 15_000,
    what: "died agent forgotten",
  });
  await early.remove({ force: true });
  await waitFor(() => index.lookup("10.213.9.10").kind === "none", {
    timeoutMs: 15_000,
    what: "destroyed agent forgotten",
  });
  assert.equal(index.records().length, 0);
});
