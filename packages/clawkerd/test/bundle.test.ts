// The single-file bundle the agent image runs: built with the package's `bundle` script, copied
// alone into an empty directory (no node_modules anywhere above it), and run with plain Node 24:
// it serves a Session over mTLS and runs a pipeline.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { makeTestAgent } from "./fixtures/bootstrap.js";
import { bundlePath, repoRoot, spawnClawkerd } from "./fixtures/clawkerd-process.js";
import { STDIN_WINDOW_BYTES } from "../src/session.js";
import { controlPlaneIdentity, outputOf, SessionClient, shell, stage } from "./fixtures/session-client.js";

test("the esbuild bundle runs alone and serves a Session", async (t) => {
  execFileSync("npm", ["run", "--silent", "bundle", "-w", "@clawker/clawkerd"], {
    cwd: repoRoot,
    stdio: "pipe",
  });
  const dir = await mkdtemp(join(tmpdir(), "clawkerd-bundle-"));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const alone = join(dir, "clawkerd.mjs");
  await copyFile(bundlePath, alone);

  const agent = await makeTestAgent();
  t.after(() => agent.close());
  const proc = spawnClawkerd(agent, { bundle: alone, env: { NODE_PATH: "" } });
  t.after(() => proc.kill());
  await proc.waitListening();
  const c = new SessionClient(proc.address, controlPlaneIdentity(agent.trust));
  t.after(() => c.close());
  assert.deepEqual(await c.hello(), {
    initialized: false,
    cmdRunning: false,
    flowControl: { stdinWindowBytes: STDIN_WINDOW_BYTES },
  });
  const rs = await c.run("p", shell([stage(["echo", "from the bundle"]), stage(["tr", "a-z", "A-Z"])]));
  assert.equal(outputOf(rs).toString(), "FROM THE BUNDLE\n");
  assert.deepEqual(rs.at(-1)?.payload, { $case: "done", value: { finalExitCode: 0 } });

  const refused = spawnClawkerd(
    { bootstrapDir: join(dir, "none"), stateDir: join(dir, "state") },
    { bundle: alone },
  );
  t.after(() => refused.kill());
  assert.equal((await refused.exited).code, 2);
});
