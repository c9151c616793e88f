// The install tree's bundles (scripts/install-tree.ts), built from this checkout: what the build
// changes about third-party code (one copy of mime-types, JSON modules as JSON.parse) is in the
// auth server's bundle, and a control plane run from the tree still starts and issues tokens
// through that bundle (oidc-provider on koa, whose responses take their types from mime-types).
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { CLI_CLIENT } from "@clawker/proto";
import { TokenSource } from "@clawker/adminclient";
import { buildInstallTree } from "../../scripts/install-tree.js";
import { startControlPlane } from "../harness/controlplane.js";

void test("install tree: the auth server's bundle has one mime-types and parses JSON modules, and it serves tokens", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "clawker-tree-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  await buildInstallTree(dir);
  const bundle = readFileSync(join(dir, "packages/authserver/dist/main.js"), "utf8");
  // esbuild names each bundled CommonJS module by its path: accepts' own pinned copy is gone.
  assert.equal(bundle.match(/"node_modules\/mime-types\/index\.js"/g)?.length, 1);
  assert.equal(bundle.match(/node_modules\/mime-types\/index\.js"/g)?.length, 1, "no nested mime-types");
  assert.equal(bundle.match(/mime-db\/db\.json"/g)?.length, 1, "one mime-db table");
  assert.ok(
    /"node_modules\/mime-db\/db\.json"\(\w+,\s*(\w+)\)\{\1\.exports=JSON\.parse\(["'`]\{/.test(bundle),
    "mime-db's table is JSON.parse of its text",
  );

  const cp = await startControlPlane({ entry: join(dir, "packages/controlplane/dist/main.js") });
  t.after(() => cp.close());
  const tokens = new TokenSource({
    ca: cp.trust!.ca.certPem,
    signingKey: cp.trust!.signingKey.privateJwk,
    tokenEndpoint: cp.tokenEndpoint,
    clientId: CLI_CLIENT.clientId,
    scope: CLI_CLIENT.scope,
  });
  t.after(() => tokens.close());
  assert.match(await tokens.token(), /^[A-Za-z0-9_-]{20,}$/);
});
