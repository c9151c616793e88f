// clawkerd's node flags (CLAWKERD_NODE_FLAGS): node takes them, the agent image's Dockerfile
// carries exactly them, and under them clawkerd streams a command's output
// without a run of full collections (at node's defaults it ran about one per 10 MiB streamed).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { open, readFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { CLAWKERD_NODE_FLAGS } from "@clawker/proto";
import { makeTestAgent } from "./fixtures/bootstrap.js";
import { repoRoot, spawnClawkerd } from "./fixtures/clawkerd-process.js";
import { controlPlaneIdentity, SessionClient, shell, stage, terminal } from "./fixtures/session-client.js";

const execFileP = promisify(execFile);

test("node takes CLAWKERD_NODE_FLAGS: a young generation of two 1 MiB semi-spaces", async () => {
  const { stdout } = await execFileP(process.execPath, [
    ...CLAWKERD_NODE_FLAGS,
    "-p",
    "require('v8').getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size",
  ]);
  // At node's defaults on these hosts the new space reserves 8 MiB per semi-space from the start.
  assert.ok(Number(stdout) > 0 && Number(stdout) <= 2 << 20, `new space ${stdout.trim()} bytes`);
});

test("the agent image's ENTRYPOINT is node, CLAWKERD_NODE_FLAGS, clawkerd", async () => {
  const dockerfile = await readFile(join(repoRoot, "docker/agent/Dockerfile"), "utf8");
  const line = /^ENTRYPOINT (\[.*\])$/m.exec(dockerfile);
  assert.ok(line, "docker/agent/Dockerfile has an exec-form ENTRYPOINT");
  const want = ["node", ...CLAWKERD_NODE_FLAGS, "/opt/clawker/clawkerd.mjs"];
  // `clawker run` passes DEFAULT_AGENT_ENTRYPOINT; test/e2e/images.test.ts holds the built image to it.
  assert.deepEqual(JSON.parse(line[1]!), want);
});

test("tuneHeap(): V8 sizes the old generation's next limit with a growing factor of 3.5", async () => {
  const run = async (tune: boolean): Promise<string[]> => {
    const script = [
      `import { tuneHeap } from ${JSON.stringify(new URL("../src/heap-tuning.ts", import.meta.url).href)};`,
      tune ? "tuneHeap();" : "",
      "globalThis.gc(); globalThis.gc();",
    ].join("\n");
    const { stdout } = await execFileP(process.execPath, [
      "--expose-gc",
      "--trace-gc-verbose",
      "--import",
      "tsx",
      "--input-type=module",
      "-e",
      script,
    ]);
    return [...stdout.matchAll(/\[HeapController\] factor ([\d.]+)/g)].map((m) => m[1]!);
  };
  const tuned = await run(true);
  assert.ok(tuned.length > 0 && tuned.every((f) => f === "3.5"), `factors ${tuned.join(", ")}`);
  // V8's own choice for this small, idle heap is its maximum, 4.0: the flag is what sets 3.5.
  const plain = await run(false);
  assert.ok(
    plain.length > 0 && plain.every((f) => f !== "3.5"),
    `factors at node's defaults ${plain.join(", ")}`,
  );
});

test("with its settings clawkerd streams 64 MiB of output with at most two full collections", async (t) => {
  const agent = await makeTestAgent();
  t.after(() => agent.close());
  const proc = spawnClawkerd(agent, { nodeArgs: ["--trace-gc"] });
  t.after(() => proc.kill());
  await proc.waitListening();
  const mib = 64;
  const file = join(agent.dir, "out.bin");
  const fh = await open(file, "w");
  const block = randomBytes(1 << 20);
  for (let i = 0; i < mib; i++) await fh.write(block);
  await fh.close();
  const identity = controlPlaneIdentity(agent.trust);
  const fullCollections = async (id: string): Promise<number> => {
    const client = new SessionClient(proc.address, identity, {
      keepOutput: false,
      flowControlWindow: 4 << 20,
    });
    t.after(() => client.close());
    await client.hello();
    const from = proc.stdout.length;
    const rs = await client.run(id, shell([stage(["cat", file])]), 60_000);
    assert.equal(terminal(rs)?.payload?.$case, "done");
    assert.equal(client.outputBytes, mib << 20);
    return proc.stdout
      .slice(from)
      .split("\n")
      .filter((l) => l.includes("Mark-Compact")).length;
  };
  await fullCollections("warm-up");
  const seen = await fullCollections("measured");
  t.diagnostic(`full collections while streaming ${mib} MiB: ${seen}`);
  assert.ok(seen <= 2, `${seen} full collections while streaming ${mib} MiB`);
});
