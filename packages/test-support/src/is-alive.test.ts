import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { findOnPath } from "./find-on-path.js";
import { isAlive } from "./is-alive.js";
import { waitFor } from "./wait-for.js";

void test("isAlive: a running child is alive; once it exits unreaped (a zombie) it is not", async (t) => {
  // A child of a shell that ignores it: `sleep` exits, the shell never waits, so it stays a zombie
  // until the shell ends.
  const sh = spawn("sh", ["-c", "sleep 0.2 & echo $!; exec sleep 30"], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  t.after(() => void sh.kill("SIGKILL"));
  const pid = Number(
    await new Promise<string>((r) => sh.stdout.once("data", (c: Buffer) => r(c.toString()))),
  );
  assert.equal(isAlive(pid), true);
  await waitFor(() => /\) Z /.test(readFileSync(`/proc/${pid}/stat`, "utf8")), { what: "a zombie" });
  assert.equal(isAlive(pid), false);
  assert.equal(isAlive(process.pid), true);
  assert.equal(isAlive(2 ** 22 + 1), false);
});

void test("findOnPath: the first executable on PATH, never the current directory", () => {
  assert.equal(findOnPath("sh", { PATH: "/nonexistent:/bin" }), "/bin/sh");
  assert.equal(findOnPath("sh", { PATH: ":/nonexistent" }), undefined);
  assert.equal(findOnPath("no-such-command-here"), undefined);
});
