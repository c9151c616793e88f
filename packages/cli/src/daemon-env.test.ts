// withDaemonTunables: what it adds to an environment and what it keeps; that this machine's glibc
// takes the value (its dynamic loader lists the tunables an environment sets); and that the
// systemd unit and the image start the daemon with the very same value.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { DAEMON_GLIBC_TUNABLES, withDaemonTunables } from "./daemon-env.js";

const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));

void test("adds the tunables, after any others, and keeps an operator's own tcache_count", () => {
  assert.equal(withDaemonTunables({ PATH: "/bin" })["GLIBC_TUNABLES"], DAEMON_GLIBC_TUNABLES);
  assert.equal(withDaemonTunables({ GLIBC_TUNABLES: "" })["GLIBC_TUNABLES"], DAEMON_GLIBC_TUNABLES);
  assert.equal(
    withDaemonTunables({ GLIBC_TUNABLES: "glibc.malloc.arena_max=2" })["GLIBC_TUNABLES"],
    `glibc.malloc.arena_max=2:${DAEMON_GLIBC_TUNABLES}`,
  );
  for (const own of ["glibc.malloc.tcache_count=7", "glibc.malloc.arena_max=2:glibc.malloc.tcache_count=0"]) {
    assert.equal(withDaemonTunables({ GLIBC_TUNABLES: own })["GLIBC_TUNABLES"], own, own);
  }
  // A tunable whose name merely ends the same is not the operator's tcache_count.
  assert.equal(
    withDaemonTunables({ GLIBC_TUNABLES: "x.glibc.malloc.tcache_count=1" })["GLIBC_TUNABLES"],
    `x.glibc.malloc.tcache_count=1:${DAEMON_GLIBC_TUNABLES}`,
  );
  const env = { PATH: "/bin", CLAWKER_CP_DATA_DIR: "/d" };
  const out = withDaemonTunables(env);
  assert.notEqual(out, env, "a new object");
  assert.deepEqual(env, { PATH: "/bin", CLAWKER_CP_DATA_DIR: "/d" }, "the given one is unchanged");
  assert.deepEqual(out, { ...env, GLIBC_TUNABLES: DAEMON_GLIBC_TUNABLES });
});

/** This machine's glibc dynamic loader (it lists the tunables in effect with --list-tunables). */
const LOADER = ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"].find((p) => existsSync(p));

void test(
  "this machine's glibc takes the value",
  { skip: LOADER === undefined && process.env["CI"] === undefined ? "no glibc loader here" : false },
  () => {
    assert.ok(LOADER !== undefined, "CI runs on glibc: its dynamic loader must be there");
    const list = (env: NodeJS.ProcessEnv): string =>
      execFileSync(LOADER, ["--list-tunables"], { env, encoding: "utf8" })
        .split("\n")
        .find((l) => l.startsWith("glibc.malloc.tcache_count:"))!;
    const [name, value] = DAEMON_GLIBC_TUNABLES.split("=") as [string, string];
    assert.equal(name, "glibc.malloc.tcache_count");
    assert.match(list(withDaemonTunables({})), new RegExp(`^${name}: 0x${Number(value).toString(16)} `));
    assert.doesNotMatch(
      list({}),
      new RegExp(`^${name}: 0x${Number(value).toString(16)} `),
      "not the default",
    );
  },
);

void test("the systemd unit and the image set the same tunables", () => {
  const unit = readFileSync(`${REPO_ROOT}docker/systemd/clawker-controlplane.service`, "utf8");
  assert.deepEqual(
    unit.split("\n").filter((l) => l.startsWith("Environment=GLIBC_TUNABLES=")),
    [`Environment=GLIBC_TUNABLES=${DAEMON_GLIBC_TUNABLES}`],
  );
  const dockerfile = readFileSync(`${REPO_ROOT}docker/controlplane/Dockerfile`, "utf8");
  assert.deepEqual(
    dockerfile.split("\n").filter((l) => /GLIBC_TUNABLES=/.test(l) && !l.startsWith("#")),
    [`    GLIBC_TUNABLES=${DAEMON_GLIBC_TUNABLES}`],
  );
});
