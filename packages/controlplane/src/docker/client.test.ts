// DOCKER_HOST parsing, error classification, and the client against a misbehaving engine: a
// local HTTP server on a Unix socket that answers what a broken or hostile engine could (error
// statuses, junk, wrong shapes, endless bodies). The real engine is in test/docker-client.test.ts.
import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test, type TestContext } from "node:test";
import {
  DEFAULT_DOCKER_SOCKET,
  DockerClient,
  MAX_BODY_BYTES,
  createDockerClient,
  parseDockerHost,
} from "./client.js";
import { DockerError, toDockerError } from "./errors.js";

test("DOCKER_HOST: unix:// and bare paths are accepted, other schemes refused", () => {
  assert.equal(parseDockerHost(undefined), DEFAULT_DOCKER_SOCKET);
  assert.equal(parseDockerHost(""), DEFAULT_DOCKER_SOCKET);
  assert.equal(parseDockerHost("unix:///run/user/0/docker.sock"), "/run/user/0/docker.sock");
  assert.equal(parseDockerHost("/tmp/d.sock"), "/tmp/d.sock");
  for (const bad of ["tcp://127.0.0.1:2375", "ssh://me@host", "unix://relative.sock", "docker.sock"]) {
    assert.throws(
      () => parseDockerHost(bad),
      (err: unknown) => err instanceof DockerError && err.reason === "invalid_host",
      bad,
    );
  }
});

test("a client on a missing socket fails as unreachable, not as an API error", async () => {
  const docker = createDockerClient({ host: "unix:///nonexistent/clawker-test.sock" });
  assert.equal(docker.socketPath, "/nonexistent/clawker-test.sock");
  await assert.rejects(docker.info(), (err: unknown) => {
    assert.ok(err instanceof DockerError);
    assert.equal(err.reason, "unreachable");
    assert.equal(err.operation, "info");
    assert.match(err.message, /ENOENT/);
    return true;
  });
});

test("failures are classified by shape", () => {
  const api = toDockerError(Object.assign(new Error("no such container"), { statusCode: 404 }), "x");
  assert.equal(api.reason, "api_error");
  assert.equal(api.statusCode, 404);
  assert.equal(
    toDockerError(Object.assign(new Error("refused"), { code: "ECONNREFUSED" }), "x").reason,
    "unreachable",
  );
  assert.equal(toDockerError(new Error("socket hang up"), "x").reason, "unreachable");
  assert.equal(toDockerError(new DOMException("t", "TimeoutError"), "x").reason, "timeout");
  const same = new DockerError("api_error", "y", "m");
  assert.equal(toDockerError(same, "x"), same);
});

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/** A misbehaving engine: `handler` answers every request; `urls` records what was asked. */
async function engine(t: TestContext, handler: Handler): Promise<{ client: DockerClient; urls: string[] }> {
  const dir = await mkdtemp(join(tmpdir(), "cpd-"));
  const socketPath = join(dir, "engine.sock");
  const urls: string[] = [];
  const server = http.createServer((req, res) => {
    urls.push(req.url ?? "");
    handler(req, res);
  });
  server.listen(socketPath);
  await once(server, "listening");
  t.after(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    await rm(dir, { recursive: true, force: true });
  });
  return { client: new DockerClient(socketPath), urls };
}

const json =
  (status: number, body: unknown): Handler =>
  (_req, res) => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(body));
  };

function rejectsWith(reason: string, operation: string, message?: RegExp) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof DockerError, String(err));
    assert.equal(err.reason, reason);
    assert.equal(err.operation, operation);
    if (message !== undefined) assert.match(err.message, message);
    return true;
  };
}

test("queries: all and filters go to the engine as Docker encodes them", async (t) => {
  const { client, urls } = await engine(t, (req, res) =>
    json(200, req.url?.startsWith("/networks/") === true ? { Id: "n" } : [])(req, res),
  );
  await client.listContainers({ all: true, filters: { label: ["a=b", "c=d"], status: ["running"] } });
  await client.listContainers({});
  await client.listNetworks({ filters: { label: ["x=y"] } });
  await client.inspectNetwork("net/../1");
  const first = new URL(urls[0]!, "http://engine");
  assert.equal(first.pathname, "/containers/json");
  assert.equal(first.searchParams.get("all"), "1");
  assert.deepEqual(JSON.parse(first.searchParams.get("filters")!), {
    label: ["a=b", "c=d"],
    status: ["running"],
  });
  assert.equal(urls[1], "/containers/json");
  assert.deepEqual(JSON.parse(new URL(urls[2]!, "http://engine").searchParams.get("filters")!), {
    label: ["x=y"],
  });
  // An id never escapes its path segment.
  assert.equal(urls[3], "/networks/net%2F..%2F1");
});

test("an engine error status is api_error with the status and the engine's message", async (t) => {
  const { client } = await engine(t, json(404, { message: "No such container: abc" }));
  await assert.rejects(client.inspectContainer("abc"), (err: unknown) => {
    rejectsWith("api_error", "inspectContainer", /HTTP 404: No such container: abc/)(err);
    assert.equal((err as DockerError).statusCode, 404);
    return true;
  });
  const noBody = await engine(t, (_req, res) => res.writeHead(500).end("<html>oops</html>"));
  await assert.rejects(noBody.client.info(), rejectsWith("api_error", "info", /HTTP 500$/));
});

test("answers that cannot be read are bad_response, never a listing", async (t) => {
  const junk = await engine(t, (_req, res) => res.writeHead(200).end("not json"));
  await assert.rejects(junk.client.info(), rejectsWith("bad_response", "info", /not JSON/));
  const object = await engine(t, json(200, { Id: "x" }));
  await assert.rejects(object.client.listContainers({}), rejectsWith("bad_response", "listContainers"));
  const noId = await engine(t, json(200, [{ Names: ["/a"] }]));
  await assert.rejects(noId.client.listNetworks({}), rejectsWith("bad_response", "listNetworks", /no Id/));
  const array = await engine(t, json(200, []));
  await assert.rejects(array.client.inspectContainer("a"), rejectsWith("bad_response", "inspectContainer"));
});

test("a body over the bound is refused without being held", async (t) => {
  const chunk = Buffer.alloc(1024 * 1024, 0x20);
  const { client } = await engine(t, (_req, res) => {
    res.writeHead(200);
    const write = (): void => {
      while (res.write(chunk));
      res.once("drain", write);
    };
    res.on("error", () => undefined);
    write();
  });
  await assert.rejects(client.info(), rejectsWith("bad_response", "info", new RegExp(`${MAX_BODY_BYTES}`)));
});

test("an aborted call rejects promptly; the events stream delivers lines and ends on abort", async (t) => {
  const { client } = await engine(t, (req, res) => {
    if (req.url?.startsWith("/info") === true) return; // never answers
    res.writeHead(200, { "content-type": "application/json" });
    res.write(`${JSON.stringify({ Type: "container", Action: "start" })}\n`);
  });
  const ac = new AbortController();
  const pending = client.info(ac.signal);
  setTimeout(() => ac.abort(), 20);
  await assert.rejects(pending, rejectsWith("unreachable", "info"));

  const stop = new AbortController();
  const stream = await client.events({ since: "1.000000000", filters: { type: ["container"] } }, stop.signal);
  const errors: unknown[] = [];
  stream.on("error", (err) => errors.push(err));
  const [first] = (await once(stream, "data")) as [Buffer];
  assert.deepEqual(JSON.parse(first.toString("utf8")), { Type: "container", Action: "start" });
  const closed = new Promise((resolve) => stream.once("close", resolve));
  stop.abort();
  await closed;
  assert.equal(stream.destroyed, true);
  assert.ok(errors.length <= 1, "at most one error, then nothing");
});

test("events: a refused subscription is api_error, not a stream", async (t) => {
  const { client } = await engine(t, json(400, { message: "invalid filter 'bogus'" }));
  await assert.rejects(
    client.events({ filters: { bogus: ["1"] } }),
    rejectsWith("api_error", "events", /invalid filter/),
  );
});
