// The control plane's Docker client against the real engine (a private dockerd from the harness):
// every call the daemon makes, with the answers it relies on (the engine's clock, label filters,
// a missing container as 404, the events stream from `since`).
import assert from "node:assert/strict";
import { test } from "node:test";
import { LABELS } from "@clawker/proto";
import { DockerClient } from "../src/docker/client.js";
import { DockerError } from "../src/docker/errors.js";
import { sinceFromSystemTime, type DockerEventMessage } from "../src/docker/event-parse.js";
import { startPrivateDocker } from "../../../test/harness/docker.js";
import { busyboxImage } from "../../../test/harness/images.js";
import { command, requires, root } from "../../../test/harness/preconditions.js";
import { waitFor } from "../../../test/harness/wait-for.js";

void test("DockerClient on a real engine: info, filtered listings, inspects, 404s, events", async (t) => {
  if (!requires(t, root, command("dockerd"), command("nsenter"), command("ip"))) return;
  const daemon = await startPrivateDocker(t);
  const docker = daemon.docker;
  const image = await busyboxImage(docker);
  const client = new DockerClient(daemon.socketPath);

  const info = await client.info();
  const since = sinceFromSystemTime(info.SystemTime);
  assert.ok(since !== undefined, `SystemTime ${String(info.SystemTime)} has the engine's clock`);

  const stop = new AbortController();
  t.after(() => stop.abort());
  const stream = await client.events(
    { since, filters: { type: ["container"], event: ["create"] } },
    stop.signal,
  );
  stream.on("error", () => undefined);
  const lines: DockerEventMessage[] = [];
  let partial = "";
  stream.on("data", (chunk: Buffer) => {
    partial += chunk.toString("utf8");
    for (let nl = partial.indexOf("\n"); nl >= 0; nl = partial.indexOf("\n")) {
      lines.push(JSON.parse(partial.slice(0, nl)) as DockerEventMessage);
      partial = partial.slice(nl + 1);
    }
  });

  const labelled = await docker.createContainer({
    Image: image,
    Cmd: ["sleep", "60"],
    Labels: { [LABELS.managed]: "true", [LABELS.purpose]: "agent" },
    HostConfig: { NetworkMode: "none" },
  });
  const other = await docker.createContainer({
    Image: image,
    Cmd: ["sleep", "60"],
    HostConfig: { NetworkMode: "none" },
  });
  await labelled.start();

  const filters = { label: [`${LABELS.managed}=true`, `${LABELS.purpose}=agent`] };
  assert.deepEqual(
    (await client.listContainers({ filters })).map((c) => c.Id),
    [labelled.id],
    "running, labelled: exactly the agent",
  );
  assert.deepEqual((await client.listContainers({ filters: { ...filters, status: ["exited"] } })).length, 0);
  const all = (await client.listContainers({ all: true })).map((c) => c.Id).sort();
  assert.deepEqual(all, [labelled.id, other.id].sort(), "all: the created one too");

  const inspected = await client.inspectContainer(labelled.id);
  assert.equal(inspected.Id, labelled.id);
  assert.equal(inspected.State?.Running, true);
  assert.equal(inspected.Config?.Labels?.[LABELS.purpose], "agent");
  await assert.rejects(client.inspectContainer("0".repeat(64)), (err: unknown) => {
    assert.ok(err instanceof DockerError);
    assert.equal(err.reason, "api_error");
    assert.equal(err.statusCode, 404);
    assert.match(err.message, /No such container/i);
    return true;
  });

  const bridge = (await client.listNetworks({ filters: { name: ["bridge"] } })).find(
    (n) => n.Name === "bridge",
  );
  assert.ok(bridge !== undefined);
  assert.equal((await client.inspectNetwork(bridge.Id)).Id, bridge.Id);
  await assert.rejects(client.inspectNetwork("no-such-network"), (err: unknown) => {
    return err instanceof DockerError && err.statusCode === 404;
  });

  await waitFor(() => lines.filter((l) => l.Action === "create").length >= 2, { what: "two creates" });
  assert.deepEqual(
    lines
      .filter((l) => l.Action === "create")
      .map((l) => l.Actor?.ID)
      .sort(),
    [labelled.id, other.id].sort(),
    "both creates arrive on the stream, nothing else passes the filter",
  );
  assert.ok(lines.every((l) => l.Type === "container" && l.Action === "create"));
});
