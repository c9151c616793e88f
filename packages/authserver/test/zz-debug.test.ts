import { test } from "node:test";
import { writeFileSync } from "node:fs";
import { execSync } from "node:child_process";
import { join } from "node:path";
import { waitFor } from "../../../test/harness/wait-for.js";
import { spawnAuthServer, killAuthServer } from "./fixtures/process.js";
import { makeWorkspace } from "./fixtures/server.js";
test("debug", async () => {
  const { dir, base } = await makeWorkspace();
  const file = join(dir, "auth.json");
  writeFileSync(file, JSON.stringify({ ...base, logLevel: "debug" }));
  const p = spawnAuthServer(["--config", file]);
  await waitFor(() => p.lines.length > 1, { timeoutMs: 15000 }).catch(() => {});
  console.log(
    "STDOUT",
    p.stdout.slice(0, 2000),
    "STDERR",
    p.stderr.slice(0, 3000),
    p.lines.length,
    p.child.exitCode,
  );
  console.log(
    execSync(
      `ps -o pid,stat,etime,time,args -p ${p.child.pid}; cat /proc/${p.child.pid}/wchan; echo; ls -l /proc/${p.child.pid}/fd | head`,
    ).toString(),
  );
  await killAuthServer(p);
});
