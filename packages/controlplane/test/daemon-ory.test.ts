// The daemon in Ory mode, supervising FAKE Hydra, Kratos and Oathkeeper executables (the real
// binaries cannot be installed here; the fakes in test/fakes follow Hydra's HTTP API). The real
// token and introspection path is covered against the embedded server in daemon.test.ts.
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import { parse as parseYaml } from "yaml";
import { openAdminClient } from "@clawker/adminclient";
import { freePorts, helperPid, startControlPlane } from "../../../test/harness/controlplane.js";
import { isAlive } from "../../../test/harness/leftovers.js";
import { ORY_SCHEMA_DIR, orySchemas, requires } from "../../../test/harness/preconditions.js";

const repo = fileURLToPath(new URL("../../../", import.meta.url));

/** Writes an executable wrapper named like the real binary that runs the fake through tsx. */
function fakeBinary(dir: string, name: "hydra" | "kratos" | "oathkeeper"): string {
  const file = join(dir, name);
  writeFileSync(
    file,
    `#!/bin/sh\nexec "${process.execPath}" --import "${import.meta.resolve("tsx")}" --conditions=source "${join(repo, "test/fakes", `fake-${name}.ts`)}" "$@"\n`,
  );
  chmodSync(file, 0o755);
  return file;
}

test("Ory mode (FAKE Hydra/Kratos/Oathkeeper): configs written 0600 and schema-valid, helpers supervised, calls authorized via Hydra", async (t) => {
  // schemaDir makes the daemon check its generated configs against the upstream schemas at start.
  if (!requires(t, orySchemas)) return;
  const bin = mkdtempSync(join(tmpdir(), "clawker-fake-ory-"));
  t.after(() => rmSync(bin, { recursive: true, force: true }));
  const [kp, oa, op] = (await freePorts(3)) as [number, number, number];
  const cp = await startControlPlane({
    config: {
      auth: {
        mode: "ory",
        ory: {
          hydra: fakeBinary(bin, "hydra"),
          schemaDir: ORY_SCHEMA_DIR,
          kratos: fakeBinary(bin, "kratos"),
          oathkeeper: fakeBinary(bin, "oathkeeper"),
          kratosPublicPort: kp,
          oathkeeperApiPort: oa,
          oathkeeperProxyPort: op,
        },
      },
    },
  });
  t.after(() => cp.close());

  const started = cp.logs.filter((l) => l["msg"] === "helper started").map((l) => l["helper"]);
  assert.deepEqual(started, ["hydra", "kratos", "oathkeeper"]);
  const hydraYaml = join(cp.dataDir, "ory", "hydra.yaml");
  const hydra = parseYaml(readFileSync(hydraYaml, "utf8")) as { serve: { admin: { host: string } } };
  const hydraSocket = join(cp.dataDir, "ory", "hydra-admin.sock");
  assert.equal(hydra.serve.admin.host, `unix:${hydraSocket}`);
  assert.equal(cp.authAdminUrl, `http+unix://${encodeURIComponent(hydraSocket)}`);
  const { lstatSync, statSync } = await import("node:fs");
  assert.equal(statSync(hydraYaml).mode & 0o777, 0o600);
  assert.equal(statSync(join(cp.dataDir, "ory")).mode & 0o777, 0o700);
  for (const socket of [hydraSocket, join(cp.dataDir, "ory", "kratos-admin.sock")]) {
    assert.equal(lstatSync(socket).mode & 0o777, 0o600, socket);
  }
  assert.equal(statSync(join(cp.dataDir, "ory", "system.secret")).mode & 0o777, 0o600);

  const client = openAdminClient({
    trust: cp.trust!,
    target: `127.0.0.1:${cp.ports.admin}`,
    tokenEndpoint: cp.tokenEndpoint,
  });
  t.after(() => client.close());
  assert.deepEqual(await client.listAgents(), []);

  const pids = ["hydra", "kratos", "oathkeeper"].map((name) => helperPid(cp, name));
  assert.equal(await cp.close(), 0);
  for (const pid of pids) assert.equal(isAlive(pid), false);
  const stopped = cp.logs
    .filter((l) => l["component"] === "supervisor" && /stopp|exited/i.test(String(l["msg"])))
    .map((l) => l["helper"]);
  assert.deepEqual(
    stopped.filter((h, i) => stopped.indexOf(h) === i),
    ["oathkeeper", "kratos", "hydra"],
    "stopped in reverse start order",
  );
});

test("Ory mode with a missing binary fails start-up with the name and exits 1", async (t) => {
  const cp = await startControlPlane({
    config: { auth: { mode: "ory", ory: { hydra: "/nonexistent/hydra" } } },
    noWait: true,
  });
  t.after(() => cp.close());
  assert.equal(await cp.exited, 1);
  assert.match(JSON.stringify(cp.logs.find((l) => l["event"] === "drain")), /hydra/);
});
