// DOCKER_HOST parsing and error classification.
import assert from "node:assert/strict";
import { test } from "node:test";
import { DEFAULT_DOCKER_SOCKET, createDockerClient, parseDockerHost } from "./client.js";
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
  const err = await docker.ping().then(
    () => undefined,
    (e: unknown) => toDockerError(e, "ping"),
  );
  assert.ok(err instanceof DockerError);
  assert.equal(err.reason, "unreachable");
  assert.equal(err.operation, "ping");
});

test("dockerode failures are classified by shape", () => {
  const api = toDockerError(
    Object.assign(new Error("(HTTP code 404) no such container"), { statusCode: 404 }),
    "x",
  );
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
