// An admin socket the CLI finds at a default location may be another control plane's (`up
// --container` as root binds /run/clawker/admin.sock): the CLI then sends it a token that control
// plane's auth server never issued, and the refusal must say where the call went, or it reads as
// the meant control plane refusing (a CI run of the compose test showed 30 s of token_inactive
// and nothing in the meant control plane's log). Two real daemons: A's socket is where the CLI
// looks first (`<data dir>/run/admin.sock`), B is the one the CLI's trust dir and token endpoint
// belong to. An address the user named (`--admin`, `$CLAWKER_CP_ADMIN_ADDR`) goes over TCP instead.
import assert from "node:assert/strict";
import { join } from "node:path";
import { test } from "node:test";
import { clawker } from "../harness/clawker-cli.js";
import { startControlPlane } from "../harness/controlplane.js";

test("a default-location admin socket that refuses our token is named; --admin reaches the meant control plane", async (t) => {
  const [a, b] = await Promise.all([startControlPlane(), startControlPlane()]);
  t.after(() => Promise.all([a.close(), b.close()]));
  const socketOfA = join(a.dataDir, "run", "admin.sock");
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    CLAWKER_CP_DATA_DIR: a.dataDir,
    CLAWKER_CP_TRUST_DIR: b.trustDir,
    CLAWKER_TOKEN_ENDPOINT: b.tokenEndpoint,
  };
  const note = "clawker: note: the call went to the admin socket";

  // No --admin: the socket in the data dir answers, so the call goes there, and A refuses B's token.
  const found = await clawker(["controlplane", "agents", "--format", "json", "--debug"], { env });
  assert.equal(found.code, 4, found.stderr);
  assert.ok(
    found.stderr.includes(
      `clawker: debug: admin calls via unix:${socketOfA}, tokens from ${b.tokenEndpoint}`,
    ),
    found.stderr,
  );
  assert.ok(found.stderr.includes(`${note} ${socketOfA} (found at a default location)`), found.stderr);
  assert.match(found.stderr, /clawker: error: ListAgents: token_inactive/);

  // The socket named explicitly is what the user asked for: the same refusal, without the note.
  const named = await clawker(["controlplane", "agents", "--admin-socket", socketOfA], { env });
  assert.equal(named.code, 4, named.stderr);
  assert.match(named.stderr, /token_inactive/);
  assert.ok(!named.stderr.includes(note), named.stderr);

  // --admin means TCP: B answers with its (empty) list.
  const tcp = await clawker(
    ["controlplane", "agents", "--admin", `127.0.0.1:${b.ports.admin}`, "--format", "json", "--debug"],
    { env },
  );
  assert.equal(tcp.code, 0, tcp.stderr);
  assert.deepEqual((JSON.parse(tcp.stdout) as { agents: unknown[] }).agents, []);
  assert.ok(tcp.stderr.includes(`admin calls via 127.0.0.1:${b.ports.admin}`), tcp.stderr);

  // So does $CLAWKER_CP_ADMIN_ADDR: an address the user named, not the socket found by default.
  const byEnv = await clawker(["controlplane", "agents", "--format", "json", "--debug"], {
    env: { ...env, CLAWKER_CP_ADMIN_ADDR: `127.0.0.1:${b.ports.admin}` },
  });
  assert.equal(byEnv.code, 0, byEnv.stderr);
  assert.deepEqual((JSON.parse(byEnv.stdout) as { agents: unknown[] }).agents, []);
  assert.ok(byEnv.stderr.includes(`admin calls via 127.0.0.1:${b.ports.admin}`), byEnv.stderr);
});
