// The real clawker-authserver process: config refusal (exit 2, nothing bound), start-up to
// /health/ready on the admin socket, state surviving a restart, redacted logs, SIGTERM exits 0,
// frees the port and removes the socket.
import assert from "node:assert/strict";
import { lstatSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";
import { join } from "node:path";
import { test } from "node:test";
import { waitFor } from "../../../test/harness/wait-for.js";
import { ADMIN, clientBody, makeAssertion, makeClientKey, TestHttp } from "./fixtures/oauth.js";
import { killAuthServer, spawnAuthServer, type AuthProcess } from "./fixtures/process.js";
import { makeWorkspace } from "./fixtures/server.js";

interface Listening {
  issuer: string;
  public: { host: string; port: number };
  admin: { socket: string };
  processUptimeMs: number;
}

async function listeningOf(p: AuthProcess): Promise<Listening> {
  const found = await waitFor(
    () =>
      p.child.exitCode !== null || (p.lines.find((l) => l["event"] === "listening") as Listening | undefined),
    { timeoutMs: 60_000, what: "the listening log line" },
  ).catch((err: unknown) => {
    throw new Error(`no listening line; stdout: ${p.stdout} stderr: ${p.stderr}`, { cause: err });
  });
  if (found === true) throw new Error(`exited ${p.child.exitCode}: ${p.stderr}${p.stdout}`);
  return found;
}

function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = createConnection({ host: "127.0.0.1", port });
    sock.once("connect", () => {
      sock.destroy();
      resolve(false);
    });
    sock.once("error", (err: NodeJS.ErrnoException) => resolve(err.code === "ECONNREFUSED"));
  });
}

test("a bad config exits 2 listing every problem, before binding anything", async (t) => {
  const { dir, base } = await makeWorkspace();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, "auth.json");
  writeFileSync(
    file,
    JSON.stringify({
      ...base,
      admin: { host: "127.0.0.1", port: 4445 },
      accessTokenTtlSeconds: -1,
      extra: 1,
    }),
  );
  const p = spawnAuthServer(["--config", file]);
  t.after(() => killAuthServer(p));
  const { code } = await p.exited;
  assert.equal(code, 2, p.stderr);
  assert.match(p.stderr, /admin\.host: the admin API listens only on a Unix socket/);
  assert.match(p.stderr, /admin\.port: the admin API listens only on a Unix socket/);
  assert.match(p.stderr, /accessTokenTtlSeconds/);
  assert.match(p.stderr, /extra/);
  assert.equal(
    p.lines.find((l) => l["event"] === "listening"),
    undefined,
  );
  assert.throws(() => statSync(join(dir, "auth.db")), { code: "ENOENT" }, "nothing was created");
  assert.throws(() => statSync(join(dir, "signing-key.jwk")), { code: "ENOENT" });

  const none = spawnAuthServer([]);
  t.after(() => killAuthServer(none));
  assert.equal((await none.exited).code, 2);
  assert.match(none.stderr, /--config/);
});

test("process: ready, tokens survive a restart, logs hold no secrets, SIGTERM exits 0 and frees the ports", async (t) => {
  const { dir, tls, base } = await makeWorkspace();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const http = new TestHttp(tls.caPem);
  t.after(() => http.close());
  const file = join(dir, "auth.json");
  writeFileSync(file, JSON.stringify({ ...base, logLevel: "debug" }));

  const first = spawnAuthServer(["--config", file]);
  t.after(() => killAuthServer(first));
  const l1 = await listeningOf(first);
  assert.equal(l1.admin.socket, join(dir, "admin.sock"));
  const admin = new TestHttp({ socketPath: l1.admin.socket });
  t.after(() => admin.close());
  const tokenUrl = `${l1.issuer}/oauth2/token`;
  assert.deepEqual((await admin.call(`${ADMIN}/health/ready`, "GET")).body, { status: "ok" });
  assert.equal(statSync(join(dir, "signing-key.jwk")).mode & 0o777, 0o600);
  // Its start-up timeline, in the daemon's shape: every step once, in order, all before listening.
  const steps = first.lines.filter((l) => l["event"] === "startup_step");
  assert.deepEqual(
    steps.map((s) => s["step"]),
    ["modules", "config", "tls", "signing_key", "store", "public_listener", "admin_socket", "provider"],
  );
  let previousEnd = 0;
  for (const s of steps) {
    const startMs = s["startMs"] as number;
    const ms = s["ms"] as number;
    assert.equal(s["outcome"], "ok");
    assert.ok(Number.isInteger(startMs) && Number.isInteger(ms) && ms >= 0, JSON.stringify(s));
    assert.ok(startMs >= previousEnd - 1, `${String(s["step"])} starts after the step before it ends`);
    previousEnd = startMs + ms;
  }
  // Logged before the listening line (its processUptimeMs is another clock than startMs's origin).
  const listeningAt = first.lines.findIndex((l) => l["event"] === "listening");
  const lastStepAt = first.lines.findLastIndex((l) => l["event"] === "startup_step");
  assert.ok(lastStepAt < listeningAt, "every step is logged before the listening line");

  const key = await makeClientKey();
  assert.equal(
    (await admin.call(`${ADMIN}/admin/clients`, "POST", { json: clientBody("clawker-cli", "admin", key) }))
      .status,
    201,
  );
  for (const f of ["auth.db", "auth.db-wal", "auth.db-shm"]) {
    assert.equal(statSync(join(dir, f)).mode & 0o777, 0o600, f);
  }
  const a = await makeAssertion({ clientId: "clawker-cli", key, aud: tokenUrl });
  const tok = await http.token(tokenUrl, a, "admin");
  assert.equal(tok.status, 200);
  const token = String(tok.body?.["access_token"]);
  assert.equal((await http.token(tokenUrl, a, "admin")).status, 401, "replay refused");

  first.child.kill("SIGTERM");
  const exit1 = await first.exited;
  assert.deepEqual(exit1, { code: 0, signal: null });
  assert.ok(await refused(l1.public.port), "public port still accepting after exit");
  assert.throws(() => lstatSync(l1.admin.socket), { code: "ENOENT" }, "the admin socket is removed");
  assert.ok(first.lines.some((l) => l["event"] === "stopped"));

  // Nothing secret reached the logs: not the token, the assertion, or the signing key.
  const signingKey = JSON.parse(readFileSync(join(dir, "signing-key.jwk"), "utf8")) as {
    d: string;
  };
  for (const secret of [token, a, signingKey.d]) {
    assert.ok(!first.stdout.includes(secret) && !first.stderr.includes(secret), "a secret was logged");
  }

  // Restart on the same database and ports: the token and the replay record survived.
  writeFileSync(
    file,
    JSON.stringify({
      ...base,
      logLevel: "info",
      public: { host: "127.0.0.1", port: l1.public.port },
    }),
  );
  const second = spawnAuthServer(["--config", file]);
  t.after(() => killAuthServer(second));
  await listeningOf(second);
  const info = await admin.introspect(ADMIN, token, "admin");
  assert.equal(info.body?.["active"], true);
  assert.equal((await http.token(tokenUrl, a, "admin")).status, 401, "replay refused after restart");
  second.child.kill("SIGTERM");
  assert.deepEqual(await second.exited, { code: 0, signal: null });
});
