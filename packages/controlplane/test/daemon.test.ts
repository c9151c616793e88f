// The daemon as a real process: start-up on embedded defaults, authorization over real mTLS with
// real tokens from the embedded auth server, and every way it stops.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { closeSync, constants, mkdtempSync, openSync, rmSync, writeSync } from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { openAdminClient, TokenSource } from "@clawker/adminclient";
import { AGENT_CLIENT } from "@clawker/proto";
import { helperPid, startControlPlane, type ControlPlane } from "../../../test/harness/controlplane.js";
import { isAlive } from "../../../test/harness/leftovers.js";
import { waitFor } from "../../../test/harness/wait-for.js";

const holdAuthserver = fileURLToPath(new URL("./fixtures/hold-authserver.js", import.meta.url));

function adminClientFor(cp: ControlPlane) {
  return openAdminClient({
    trust: cp.trust!,
    target: `127.0.0.1:${cp.ports.admin}`,
    tokenEndpoint: cp.tokenEndpoint,
  });
}

describe("clawker-cp on embedded defaults", () => {
  test("serves authorized calls, refuses bad ones, and stops cleanly on SIGTERM", async (t) => {
    const cp = await startControlPlane();
    t.after(() => cp.close());
    const health: unknown = await (await fetch(cp.healthUrl)).json();
    assert.deepEqual(health, { status: "healthy" });

    const client = adminClientFor(cp);
    t.after(() => client.close());
    const skew = await client.clockSkew();
    assert.ok(Math.abs(skew.skewMs) < 1000, `clock skew ${skew.skewMs} ms on one machine`);
    assert.deepEqual(await client.listAgents(), []);

    // An agent-scope token is refused on the admin listener.
    const agentTokens = new TokenSource({
      ca: cp.trust!.ca.certPem,
      signingKey: cp.trust!.signingKey.privateJwk,
      tokenEndpoint: cp.tokenEndpoint,
      clientId: AGENT_CLIENT.clientId,
      scope: AGENT_CLIENT.scope,
    });
    t.after(() => agentTokens.close());
    const agentToken = await agentTokens.token();
    const { dial } = await import("@clawker/adminclient");
    const raw = dial({
      target: `127.0.0.1:${cp.ports.admin}`,
      tls: { ca: cp.trust!.ca.certPem, cert: cp.trust!.cli.certPem, key: cp.trust!.cli.keyPem },
    });
    t.after(() => raw.close());
    const { Metadata, status } = await import("@grpc/grpc-js");
    const callWith = (authorization: string | undefined) =>
      new Promise<number>((resolve) => {
        const md = new Metadata();
        if (authorization !== undefined) md.set("authorization", authorization);
        raw.listAgents({}, md, (err) => resolve(err === null ? status.OK : err.code));
      });
    assert.equal(await callWith(`Bearer ${agentToken}`), status.PERMISSION_DENIED);
    assert.equal(await callWith(undefined), status.UNAUTHENTICATED);
    assert.equal(await callWith("Bearer not-a-real-token"), status.UNAUTHENTICATED);

    const authserver = helperPid(cp, "authserver");
    assert.equal(await cp.close(), 0, "SIGTERM exits 0");
    assert.equal(isAlive(authserver), false, "the auth server is stopped with the daemon");
    const order = cp.logs
      .filter((l) => l["event"] === "drain" || l["event"] === "stopped")
      .map((l) => l["event"]);
    assert.deepEqual(order, ["drain", "stopped"]);
  });

  test("the start-up timeline is in the normal log: one startup_step per step, then ready", async (t) => {
    const cp = await startControlPlane();
    t.after(() => cp.close());
    const steps = cp.logs.filter((l) => l["event"] === "startup_step");
    const ready = cp.logs.find((l) => l["event"] === "ready" && l["addresses"] !== undefined);
    assert.ok(ready !== undefined, "a ready record");
    const totalMs = ready["totalMs"] as number;
    assert.ok(Number.isInteger(totalMs) && totalMs > 0, `ready.totalMs ${totalMs}`);
    // Every step once (the two branches log in whichever order they finish).
    assert.deepEqual(
      steps.map((s) => s["step"]).sort(),
      [
        "modules",
        "config",
        "reap_leftovers",
        "trust",
        "registry",
        "auth_configs",
        "spawn_authserver",
        "daemon_modules",
        "agent_listener",
        "admin_listener",
        "admin_socket",
        "metrics_token",
        "healthz",
        "healthy_authserver",
        "register_clients",
        "ebpf",
        "audit",
        "firewall",
        "egress_triage",
      ].sort(),
    );
    for (const s of steps) {
      const startMs = s["startMs"] as number;
      const ms = s["ms"] as number;
      assert.equal(s["outcome"], "ok");
      assert.ok(Number.isInteger(startMs) && startMs >= 0, `${String(s["step"])}.startMs ${startMs}`);
      assert.ok(Number.isInteger(ms) && ms >= 0, `${String(s["step"])}.ms ${ms}`);
      // Every step ended before ready (slack for three independent roundings).
      assert.ok(startMs + ms <= totalMs + 2, `${String(s["step"])} ends after ready`);
    }
    // The listeners are bound while the auth server boots: after it was forked, before it answered.
    const step = (name: string) => steps.find((s) => s["step"] === name)!;
    const startOf = (name: string) => step(name)["startMs"] as number;
    const endOf = (name: string) => startOf(name) + (step(name)["ms"] as number);
    // The auth server, the critical path, is forked before the daemon's own modules load.
    assert.ok(startOf("daemon_modules") >= endOf("spawn_authserver") - 1, "modules after the spawn");
    assert.ok(startOf("agent_listener") >= endOf("spawn_authserver") - 1, "listeners after the spawn");
    assert.ok(startOf("agent_listener") <= endOf("healthy_authserver"), "listeners before it is healthy");
    // The start-up's garbage goes back once ready, not after a quiet stretch (memory-relief.ts).
    const relief = await waitFor(
      () => cp.logs.find((l) => l["event"] === "memory_relief" && l["trigger"] === "startup"),
      { timeoutMs: 30_000, what: "the start-up collection" },
    );
    assert.ok((relief["rssAfterMiB"] as number) < (relief["rssBeforeMiB"] as number), "it gave memory back");
  });

  test("the daemon's own steps, eBPF, audit log and firewall included, run while the auth server boots", async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "clawker-hold-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const fifo = join(dir, "release");
    execFileSync("mkfifo", ["-m", "600", fifo]);
    const cp = await startControlPlane({
      noWait: true,
      env: { NODE_OPTIONS: `--import ${holdAuthserver}`, CLAWKER_TEST_HOLD_FIFO: fifo },
    });
    t.after(() => cp.close());
    const done = (step: string) => cp.logs.some((l) => l["event"] === "startup_step" && l["step"] === step);
    // The auth server is held before its modules load, so it cannot answer; the rest finishes anyway.
    await waitFor(() => ["healthz", "ebpf", "audit", "firewall", "egress_triage"].every(done), {
      timeoutMs: 20_000,
      what: "the daemon's own start-up steps while the auth server is held",
    });
    assert.equal(done("healthy_authserver"), false, "the held auth server was not seen healthy");
    assert.equal(done("register_clients"), false);
    assert.ok(!cp.logs.some((l) => l["event"] === "ready"), "not ready without the auth server");
    assert.equal((await fetch(cp.healthUrl)).status, 503);
    // Released, it boots, and the daemon gets ready with nothing left but the clients to register.
    await waitFor(
      () => {
        try {
          const fd = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
          writeSync(fd, "go");
          closeSync(fd);
          return true;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === "ENXIO") return false; // not reading yet
          throw err;
        }
      },
      { timeoutMs: 20_000, what: "the auth server waiting on the FIFO" },
    );
    await waitFor(async () => (await fetch(cp.healthUrl).catch(() => undefined))?.status === 200, {
      timeoutMs: 60_000,
      what: "/healthz 200 after the release",
    });
  });

  test("a helper killed after ready drains the daemon with exit 1", async (t) => {
    const cp = await startControlPlane();
    t.after(() => cp.close());
    process.kill(helperPid(cp, "authserver"), "SIGKILL");
    assert.equal(await cp.exited, 1);
    const drain = cp.logs.find((l) => l["event"] === "drain");
    assert.equal(drain?.["cause"], "helper_crash");
    assert.equal(drain?.["name"], "authserver");
  });

  test("introspection down fails closed while the daemon keeps serving", async (t) => {
    const cp = await startControlPlane();
    t.after(() => cp.close());
    const tokens = new TokenSource({
      ca: cp.trust!.ca.certPem,
      signingKey: cp.trust!.signingKey.privateJwk,
      tokenEndpoint: cp.tokenEndpoint,
    });
    t.after(() => tokens.close());
    // A valid admin token the daemon has never seen, so its introspection cache cannot answer.
    const token = await tokens.token();
    const { dial } = await import("@clawker/adminclient");
    const { Metadata, status } = await import("@grpc/grpc-js");
    const raw = dial({
      target: `127.0.0.1:${cp.ports.admin}`,
      tls: { ca: cp.trust!.ca.certPem, cert: cp.trust!.cli.certPem, key: cp.trust!.cli.keyPem },
    });
    t.after(() => raw.close());
    const listAgents = () =>
      new Promise<number>((resolve) => {
        const md = new Metadata();
        md.set("authorization", `Bearer ${token}`);
        raw.listAgents({}, md, (err) => resolve(err === null ? status.OK : err.code));
      });
    const systemTime = () =>
      new Promise<number>((resolve) =>
        raw.getSystemTime({}, (err) => resolve(err === null ? status.OK : err.code)),
      );

    // SIGSTOP freezes the auth server: introspection times out, the supervisor sees no exit.
    const pid = helperPid(cp, "authserver");
    process.kill(pid, "SIGSTOP");
    t.after(() => {
      if (isAlive(pid)) process.kill(pid, "SIGCONT");
    });
    assert.equal(await listAgents(), status.UNAUTHENTICATED, "fails closed");
    assert.equal(await systemTime(), status.OK, "the daemon keeps serving");
    const health = await waitFor(
      async () => {
        const body = (await (await fetch(cp.healthUrl)).json()) as { status: string; failed_probe?: string };
        return body.status === "unhealthy" ? body : undefined;
      },
      { timeoutMs: 10_000, what: "/healthz to report the frozen auth server" },
    );
    assert.equal(health.failed_probe, "authserver");

    process.kill(pid, "SIGCONT");
    assert.equal(await listAgents(), status.OK, "a failed introspection was not cached");
    assert.equal(cp.proc.exitCode, null);
  });
});

describe("clawker-cp refuses to start on bad input, binding nothing", () => {
  test("a malformed config lists every problem and exits 1", async (t) => {
    const cp = await startControlPlane({
      rawConfig: JSON.stringify({ listen: { admin: { port: "x" } }, auth: { mode: "hydra" }, nope: true }),
      noWait: true,
    });
    t.after(() => cp.close());
    assert.equal(await cp.exited, 1);
    for (const needle of ["listen.admin.port", "auth.mode", "nope"])
      assert.match(cp.stderr(), new RegExp(needle));
    assert.equal(cp.logs.filter((l) => l["event"] === "listener_serving").length, 0);
  });

  test("missing trust material names each missing file and exits 1", async (t) => {
    const cp = await startControlPlane({ trustDir: "/nonexistent/clawker-trust", noWait: true });
    t.after(() => cp.close());
    assert.equal(await cp.exited, 1);
    const failure = cp.logs.find((l) => l["event"] === "drain");
    assert.equal(failure?.["cause"], "startup_failed");
    assert.match(JSON.stringify(failure), /ca\.crt: missing/);
    assert.equal(cp.logs.filter((l) => l["event"] === "listener_serving").length, 0);
  });

  test("a port already taken is a clear start-up failure with no helper left behind", async (t) => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", r));
    t.after(() => blocker.close());
    const port = (blocker.address() as AddressInfo).port;
    const cp = await startControlPlane({ config: { listen: { health: { port } } }, noWait: true });
    t.after(() => cp.close());
    assert.equal(await cp.exited, 1);
    assert.match(JSON.stringify(cp.logs), /EADDRINUSE|address already in use|in use/i);
    // The auth server boots while the listeners bind, so it may have been spawned: it is stopped.
    for (const l of cp.logs.filter((l) => l["msg"] === "helper started"))
      assert.equal(isAlive(l["pid"] as number), false, `helper ${String(l["helper"])} left running`);
  });
});
